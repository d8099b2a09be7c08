//! Grouped-query attention over a KV cache on the device.
//!
//! ```text
//! kv_store:     k, v (T, n_kv_heads * head_dim) -> cache rows pos0 .. pos0 + T   (f16 or f32)
//! attn_prefill: q (T, n_heads * head_dim), cache rows 0 ..= pos0 + t -> (T, n_heads * head_dim)
//! attn_decode:  the same, one query per workgroup, for batches of a few tokens
//! ```
//! The cache stores f16 by default, two values per `u32` (`pack2x16float`, no `SHADER_F16`
//! needed): half the memory, and keys/values rounded to 2^-11 relative, which moves attention
//! outputs by about 1e-3 relative. F32 is the exact option for tests and verification.

use moetile::model::AttentionParams;
use moetile_codegen::params::{AttnParams, KvParams};
use moetile_codegen::{ActType, HEAD_DIMS, KernelKey};

use crate::context::{GpuMatrix, WgpuContext};
use crate::encoder::Encoder;
use crate::error::{Result, WgpuError};
use crate::timer::{Timer, begin_pass};

/// Batches of at most this many tokens attend with the decode kernel.
pub const ATTN_DECODE_MAX_TOKENS: usize = 4;

/// Which attention kernel a batch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// Flash attention over query tiles (`attn_prefill`).
    Prefill,
    /// One query per workgroup (`attn_decode`).
    Decode,
}

impl AttentionKernel {
    /// Decode for batches of at most [`ATTN_DECODE_MAX_TOKENS`], prefill otherwise.
    pub fn for_batch(n_tokens: usize) -> AttentionKernel {
        if n_tokens <= ATTN_DECODE_MAX_TOKENS {
            AttentionKernel::Decode
        } else {
            AttentionKernel::Prefill
        }
    }
}

/// Keys and values of every layer: per layer two buffers of `n_ctx` rows of
/// `n_kv_heads * head_dim` values.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<[wgpu::Buffer; 2]>,
    /// Positions per layer.
    pub n_ctx: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Storage type.
    pub ty: ActType,
}

impl KvCache {
    /// Values per position (`n_kv_heads * head_dim`).
    pub fn kv_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Layers.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Every buffer, keys then values per layer (for embedders and test poisoning).
    pub fn buffers(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        self.layers.iter().flatten()
    }
}

fn shape(op: &str, detail: String) -> WgpuError {
    WgpuError::Shape {
        op: op.to_string(),
        detail,
    }
}

impl WgpuContext {
    /// An empty cache of `n_layers` layers of `n_ctx` positions, stored as `ty`. Refuses head
    /// widths without kernels and layers larger than a storage binding.
    pub fn kv_cache(
        &self,
        n_layers: usize,
        n_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
        ty: ActType,
    ) -> Result<KvCache> {
        if !HEAD_DIMS.contains(&(head_dim as u32)) {
            return Err(WgpuError::UnsupportedHeadDim {
                head_dim,
                supported: &HEAD_DIMS,
            });
        }
        let bytes = (n_ctx * n_kv_heads * head_dim * ty.bytes()) as u64;
        self.check_size(
            &format!("one layer's KV cache ({n_ctx} positions, {ty:?})"),
            bytes,
        )?;
        let layers = self.scoped("allocating the KV cache", || {
            Ok((0..n_layers)
                .map(|il| {
                    ["k", "v"].map(|which| {
                        self.device().create_buffer(&wgpu::BufferDescriptor {
                            label: Some(&format!("kv cache {which} {il}")),
                            size: bytes.max(4),
                            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                            mapped_at_creation: false,
                        })
                    })
                })
                .collect())
        })?;
        Ok(KvCache {
            layers,
            n_ctx,
            n_kv_heads,
            head_dim,
            ty,
        })
    }

    /// Encodes: store `k`, `v` at positions `pos0..pos0 + T` of `layer`, then attend `q`
    /// causally over positions `0..=pos0 + t` with `kernel` into `out (T, n_heads * head_dim)`.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_attention(
        &self,
        enc: &mut Encoder,
        q: &GpuMatrix,
        k: &GpuMatrix,
        v: &GpuMatrix,
        cache: &KvCache,
        layer: usize,
        pos0: usize,
        p: &AttentionParams,
        kernel: AttentionKernel,
        out: &GpuMatrix,
        mut timer: Option<&mut Timer>,
    ) -> Result<()> {
        let hd = cache.head_dim;
        let kv_width = cache.kv_width();
        let n_tokens = q.rows;
        let ok = p.head_dim == hd
            && p.n_kv_heads == cache.n_kv_heads
            && p.n_kv_heads > 0
            && p.n_heads.is_multiple_of(p.n_kv_heads)
            && q.cols == p.n_heads * hd
            && (k.rows, k.cols) == (n_tokens, kv_width)
            && (v.rows, v.cols) == (n_tokens, kv_width)
            && (out.rows, out.cols) == (n_tokens, q.cols)
            && [q, k, v, out].iter().all(|m| m.ty == ActType::F32)
            && layer < cache.layers.len()
            && n_tokens > 0;
        if !ok {
            return Err(shape(
                "attention",
                format!(
                    "q ({}, {}), k ({}, {}), v ({}, {}), out ({}, {}), layer {layer} of a cache \
                     of {} layers x {} kv heads x {hd}, {p:?}",
                    q.rows,
                    q.cols,
                    k.rows,
                    k.cols,
                    v.rows,
                    v.cols,
                    out.rows,
                    out.cols,
                    cache.layers.len(),
                    cache.n_kv_heads
                ),
            ));
        }
        if pos0 + n_tokens > cache.n_ctx {
            return Err(shape(
                "attention",
                format!(
                    "positions {pos0}..{} past the cache's {}",
                    pos0 + n_tokens,
                    cache.n_ctx
                ),
            ));
        }
        let [k_cache, v_cache] = &cache.layers[layer];

        let store = KernelKey::KvStore { kv: cache.ty };
        let params = enc.params(&KvParams {
            n_tokens: n_tokens as u32,
            pos0: pos0 as u32,
            kv_width: kv_width as u32,
            _pad0: 0,
        });
        let (x, y) = self.linear_grid(
            &store.to_string(),
            n_tokens * kv_width / 2,
            store.workgroup_size(),
        )?;
        let store_kernel = self.kernels.get(self.device(), &store)?;
        let store_bind = store_kernel.bind(
            self.device(),
            &[
                ("params", params.binding()),
                ("k", k.buffer.as_entire_binding()),
                ("v", v.buffer.as_entire_binding()),
                ("k_cache", k_cache.as_entire_binding()),
                ("v_cache", v_cache.as_entire_binding()),
            ],
        )?;

        let (key, grid) = match kernel {
            AttentionKernel::Prefill => {
                let key = KernelKey::AttnPrefill {
                    head_dim: hd as u32,
                    kv: cache.ty,
                };
                let q_tile = key
                    .query_tile()
                    .expect("prefill attention has a query tile");
                (key, (n_tokens.div_ceil(q_tile as usize), p.n_heads))
            }
            AttentionKernel::Decode => (
                KernelKey::AttnDecode {
                    head_dim: hd as u32,
                    kv: cache.ty,
                },
                (p.n_heads, n_tokens),
            ),
        };
        let limit = self.profile().max_workgroups_per_dim as usize;
        if grid.0.max(grid.1) > limit {
            return Err(WgpuError::GridTooLarge {
                op: key.to_string(),
                groups: grid.0.max(grid.1) as u64,
                limit: limit as u32,
            });
        }
        let params = enc.params(&AttnParams {
            n_tokens: n_tokens as u32,
            pos0: pos0 as u32,
            n_heads: p.n_heads as u32,
            n_kv_heads: p.n_kv_heads as u32,
            scale: p.scale,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        });
        let attn_kernel = self.kernels.get(self.device(), &key)?;
        let attn_bind = attn_kernel.bind(
            self.device(),
            &[
                ("params", params.binding()),
                ("q", q.buffer.as_entire_binding()),
                ("k_cache", k_cache.as_entire_binding()),
                ("v_cache", v_cache.as_entire_binding()),
                ("out", out.buffer.as_entire_binding()),
            ],
        )?;

        let mut pass = begin_pass(enc, &store.to_string(), timer.as_deref_mut());
        pass.set_pipeline(store_kernel.pipeline("main"));
        pass.set_bind_group(0, &store_bind, &[]);
        pass.dispatch_workgroups(x, y, 1);
        drop(pass);
        let mut pass = begin_pass(enc, &key.to_string(), timer);
        pass.set_pipeline(attn_kernel.pipeline("main"));
        pass.set_bind_group(0, &attn_bind, &[]);
        pass.dispatch_workgroups(grid.0 as u32, grid.1 as u32, 1);
        Ok(())
    }
}
