//! deepseek4's attention sub-block on the device: the backend's matmuls and norms, its
//! `compressor_pool`, and the kernels of `crate::deepseek4`, over the cache of
//! `crate::deepseek4::Deepseek4Cache`. Per layer and chunk of T tokens at `pos0`:
//!
//! ```text
//! q_lora = rms_norm(x q_a) ;  q = rope(rms_norm(q_lora q_b) per head)     (T, heads * hd)
//! k = qat(rope(rms_norm(x kv)))                                            (T, hd)
//! raw = [window | k]  (window: the last sliding_window - 1 keys)           (W - 1 + T, hd)
//! compressor(s): projections of [carried tokens | x] -> compressor_pool over the complete
//!                blocks -> rope at each block's start -> qat -> appended rows; carry the rest
//! indexer (ratio 4, when a token sees more rows than top-k): qat(rope(q_lora q_b)),
//!                scores, top-k picks
//! (qat: the low-precision simulation when the cache has it on, else nothing)
//! out = rope^-1(attend(q, raw, compressed rows, picks, sinks))
//! window = the last W - 1 rows of raw ; y = output_b(grouped output_a(out))
//! ```
//!
//! Copies between the persistent buffers and the chunk's go through the open encoder, so a
//! chunk never passes through host memory.

use moetile::model::deepseek4::{AttentionWeights, CompressedKeys, Compression, CompressorWeights};
use moetile::model::{Backend, PoolParams, PoolWeights};
use moetile_codegen::ActType;

use super::{WgpuBackend, shape};
use crate::attention::KvCache;
use crate::buffers::GpuMatrix;
use crate::deepseek4::{
    self as kernels, AttendKeys, CompressedRows, CompressorCache, IndexInputs, Picks, RopeAt,
    Rounding,
};
use crate::layout::ExpertTensor;
use crate::ops;

/// How a chunk's rows sit in the rotation tables.
#[derive(Debug, Clone, Copy)]
struct Rotation<'a> {
    angles: &'a wgpu::Buffer,
    n_rot: usize,
}

impl WgpuBackend {
    /// Records `rows` rows of `src` from row `src_row` into `dst` from row `dst_row` (both of
    /// the same width, f32).
    fn copy_rows(
        &mut self,
        src: &GpuMatrix,
        src_row: usize,
        dst: &GpuMatrix,
        dst_row: usize,
        rows: usize,
    ) {
        debug_assert_eq!(src.cols, dst.cols);
        let row_bytes = (src.cols * 4) as u64;
        if rows == 0 || row_bytes == 0 {
            return;
        }
        self.recorder().encoder().copy_buffer_to_buffer(
            &src.buffer,
            src_row as u64 * row_bytes,
            &dst.buffer,
            dst_row as u64 * row_bytes,
            rows as u64 * row_bytes,
        );
    }

    /// Records `ds4_rope` on `x`.
    fn rotate(&mut self, x: &GpuMatrix, r: Rotation<'_>, at: RopeAt) -> moetile::Result<()> {
        let at = RopeAt {
            n_rot: r.n_rot,
            ..at
        };
        self.record("ds4_rope", |rec| kernels::rope(rec, r.angles, x, at))
    }

    /// Records `ds4_qat` on the `head_dim`-wide heads of `x` when `rounding` is given.
    fn round(
        &mut self,
        x: &GpuMatrix,
        head_dim: usize,
        rounding: Option<Rounding>,
    ) -> moetile::Result<()> {
        match rounding {
            Some(r) => self.record("ds4_qat", |rec| kernels::qat(rec, x, head_dim, r)),
            None => Ok(()),
        }
    }

    /// Feeds the chunk `x` (the attention input, at the position where `c` stopped) to a
    /// compressor: its projections after the carried ones, a row per block they complete
    /// (pooled, normed, rotated to the block's first position, appended to `c.rows`), and
    /// the tokens later rows read carried on. Finished rows go through `rounding` when given.
    fn compress(
        &mut self,
        x: &GpuMatrix,
        w: &CompressorWeights<ExpertTensor>,
        c: &mut CompressorCache,
        (rotation, rounding): (Rotation<'_>, Option<Rounding>),
        rms_eps: f32,
    ) -> moetile::Result<()> {
        let ratio = c.ratio;
        let proj = [self.matmul(x, &w.kv)?, self.matmul(x, &w.gate)?];
        if proj.iter().any(|p| p.cols != c.carry[0].cols) {
            return Err(shape(
                "deepseek4 compressor",
                format!(
                    "{} gives rows of {}, the cache's compressor carries {}",
                    w.kv.name, proj[0].cols, c.carry[0].cols
                ),
            ));
        }
        // The carried tokens' projections, then the chunk's: from a block start.
        let n_all = c.n_carry + x.rows;
        let mut projected = Vec::with_capacity(2);
        for (p, carried) in proj.iter().zip(&c.carry) {
            let m = self
                .buffers()
                .matrix(n_all, p.cols, ActType::F32, "compressor tokens")?;
            self.copy_rows(carried, 0, &m, 0, c.n_carry);
            self.copy_rows(p, 0, &m, c.n_carry, x.rows);
            projected.push(m);
        }
        let blocks = n_all / ratio;
        let new_rows = blocks - usize::from(c.has_previous);
        if new_rows > 0 {
            if c.n_rows + new_rows > c.rows.rows {
                return Err(moetile::Error::ContextFull {
                    n_ctx: c.rows.rows * ratio,
                    needed: (c.n_rows + new_rows) * ratio,
                });
            }
            // The pooling reads the complete blocks (the buffers keep all n_all rows).
            for m in &mut projected {
                m.rows = blocks * ratio;
            }
            let pool = PoolWeights {
                ape: &w.ape,
                norm: &w.norm,
            };
            let p = PoolParams {
                ratio,
                overlap: c.overlap,
                previous: c.has_previous,
                rms_eps,
            };
            let rows = self.compressor_pool(&projected[0], &projected[1], pool, &p)?;
            let at = RopeAt {
                pos0: c.n_rows * ratio,
                step: ratio,
                head_dim: rows.cols,
                n_rot: rotation.n_rot,
                inverse: false,
            };
            self.rotate(&rows, rotation, at)?;
            self.round(&rows, rows.cols, rounding)?;
            self.copy_rows(&rows, 0, &c.rows, c.n_rows, new_rows);
            c.n_rows += new_rows;
        }
        // With overlap the last complete block stays as the next row's previous block.
        let keep_from = match c.overlap {
            true => blocks.saturating_sub(1) * ratio,
            false => blocks * ratio,
        };
        for (m, carried) in projected.iter().zip(&c.carry) {
            self.copy_rows(m, keep_from, carried, 0, n_all - keep_from);
        }
        c.n_carry = n_all - keep_from;
        c.has_previous = c.overlap && blocks > 0;
        Ok(())
    }

    /// `Backend::deepseek4_attention` (see the module docs).
    pub(super) fn deepseek4_attention_on_device(
        &mut self,
        x: &GpuMatrix,
        w: &AttentionWeights<ExpertTensor>,
        kv: &mut KvCache,
        il: usize,
        pos0: usize,
    ) -> moetile::Result<GpuMatrix> {
        let cache = kv
            .deepseek4
            .as_deref_mut()
            .ok_or_else(not_deepseek4_cache)?;
        let (t, end) = (x.rows, pos0 + x.rows);
        if end > cache.n_ctx {
            return Err(moetile::Error::ContextFull {
                n_ctx: cache.n_ctx,
                needed: end,
            });
        }
        cache.seek(il, pos0)?;
        let cfg = &cache.cfg;
        let (hd, n_rot, eps) = (cfg.head_dim, cfg.n_rot, cfg.rms_eps as f32);
        let (window, groups, top_k) = (cfg.sliding_window, cfg.output_groups, cfg.indexer_top_k);
        let index_dim = cfg.indexer_head_dim;
        let (key_rounding, index_rounding) = match cache.qat_sim {
            true => (Some(Rounding::KeyFp8 { n_rot }), Some(Rounding::IndexerFp4)),
            false => (None, None),
        };
        let compressed = cfg.compression[il] != Compression::None;
        if x.cols != cfg.d_model || w.kv.dense_rows() != hd {
            return Err(shape(
                "deepseek4_attention",
                format!(
                    "x ({}, {}), {} of {} rows: expected D = {} and keys of {hd}",
                    x.rows,
                    x.cols,
                    w.kv.name,
                    w.kv.dense_rows(),
                    cfg.d_model
                ),
            ));
        }
        let compressed_angles = cache.compressed.covering(self.buffers(), end)?.clone();
        let angles = match compressed {
            true => compressed_angles.clone(),
            false => cache.plain.covering(self.buffers(), end)?.clone(),
        };
        let rotation = Rotation {
            angles: &angles,
            n_rot,
        };
        let compressed_rotation = Rotation {
            angles: &compressed_angles,
            n_rot,
        };
        let at_tokens = |head_dim| RopeAt {
            pos0,
            step: 1,
            head_dim,
            n_rot,
            inverse: false,
        };

        let q_lora = self.matmul(x, &w.q_a)?;
        let q_lora = self.rms_norm(&q_lora, &w.q_a_norm, eps)?;
        let q = self.matmul(&q_lora, &w.q_b)?;
        let q = self.rms_norm(&q, &cache.ones, eps)?;
        self.rotate(&q, rotation, at_tokens(hd))?;
        let k = self.matmul(x, &w.kv)?;
        let k = self.rms_norm(&k, &w.kv_norm, eps)?;
        self.rotate(&k, rotation, at_tokens(hd))?;
        self.round(&k, hd, key_rounding)?;

        let layer = &mut cache.layers[il];
        let before = layer.window.rows;
        let raw = self.output(before + t, hd, "deepseek4 raw keys")?;
        self.copy_rows(&layer.window, 0, &raw, 0, before);
        self.copy_rows(&k, 0, &raw, before, t);

        let mut picked = None;
        match &w.compressed {
            CompressedKeys::None => {}
            CompressedKeys::Ratio128 { compressor } => {
                let c = layer
                    .compressed
                    .as_mut()
                    .expect("a ratio-128 layer's cache");
                self.compress(x, compressor, c, (compressed_rotation, key_rounding), eps)?;
            }
            CompressedKeys::Ratio4 {
                compressor,
                indexer,
            } => {
                let c = layer.compressed.as_mut().expect("a ratio-4 layer's cache");
                self.compress(x, compressor, c, (compressed_rotation, key_rounding), eps)?;
                let index = layer.index.as_mut().expect("a ratio-4 layer's indexer");
                let index_rows = (compressed_rotation, index_rounding);
                self.compress(x, &indexer.compressor, index, index_rows, eps)?;
                // A token seeing no more rows than top-k keeps them all: no picks needed.
                if index.n_rows > top_k {
                    let q_index = self.matmul(&q_lora, &indexer.q_b)?;
                    let at = at_tokens(index_dim);
                    self.rotate(&q_index, compressed_rotation, at)?;
                    self.round(&q_index, index_dim, index_rounding)?;
                    let weights = self.matmul(x, &indexer.proj)?;
                    let scores = self.output(t, index.n_rows, "indexer scores")?;
                    let picks = self.output(t, top_k, "indexer picks")?;
                    let inputs = IndexInputs {
                        q: &q_index,
                        weights: &weights,
                        keys: CompressedRows {
                            rows: &index.rows,
                            n_rows: index.n_rows,
                            ratio: index.ratio,
                        },
                        pos0,
                        top_k,
                    };
                    self.record("ds4_index", |rec| {
                        kernels::index_pick(rec, inputs, &scores, &picks.buffer)
                    })?;
                    picked = Some(picks);
                }
            }
        }

        let out = self.output(t, q.cols, "deepseek4 attention")?;
        let keys = AttendKeys {
            raw: &raw,
            raw_before: before,
            window,
            compressed: layer.compressed.as_ref().map(|c| CompressedRows {
                rows: &c.rows,
                n_rows: c.n_rows,
                ratio: c.ratio,
            }),
            picked: picked.as_ref().map(|p| Picks {
                buffer: &p.buffer,
                top_k,
            }),
            sinks: ops::vector("deepseek4 sinks", &w.sinks)?,
        };
        self.record("ds4_attend", |rec| {
            kernels::attend(rec, &q, pos0, keys, &out)
        })?;
        let back = RopeAt {
            inverse: true,
            ..at_tokens(hd)
        };
        self.rotate(&out, rotation, back)?;
        self.copy_rows(&raw, t, &layer.window, 0, before);
        layer.pos = end;

        let low_rank = self.grouped_matmul(&out, &w.output_a, groups)?;
        self.matmul(&low_rank, &w.output_b)
    }

    /// `Backend::deepseek4_attention_batch`: row i of `x` copied into a matrix of its own,
    /// its attention recorded against `kvs[i]` at `positions[i]`, its output copied into row i
    /// of the result, all within the open encoder, so no row passes through host memory.
    /// Every row's cache is checked before any row is recorded, so a refused batch leaves
    /// every cache as it was.
    pub(super) fn deepseek4_attention_rows(
        &mut self,
        x: &GpuMatrix,
        w: &AttentionWeights<ExpertTensor>,
        kvs: &mut [&mut KvCache],
        positions: &[usize],
        il: usize,
    ) -> moetile::Result<GpuMatrix> {
        for (kv, &pos0) in kvs.iter().zip(positions) {
            let cache = kv.deepseek4.as_deref().ok_or_else(not_deepseek4_cache)?;
            cache.check_continues(il, pos0)?;
        }
        let out = self.output(x.rows, w.output_b.dense_rows(), "deepseek4 attention")?;
        for (row, (kv, &pos0)) in kvs.iter_mut().zip(positions).enumerate() {
            let one = self.output(1, x.cols, "deepseek4 attention row")?;
            self.copy_rows(x, row, &one, 0, 1);
            let y = self.deepseek4_attention_on_device(&one, w, kv, il, pos0)?;
            self.copy_rows(&y, 0, &out, row, 1);
        }
        Ok(out)
    }
}

/// The refusal of deepseek4's attention on another model's cache.
fn not_deepseek4_cache() -> moetile::Error {
    shape(
        "deepseek4_attention",
        "the cache is not deepseek4's; make it with Backend::deepseek4_cache".into(),
    )
}
