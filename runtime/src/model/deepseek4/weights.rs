//! deepseek4's tensors resolved once into typed structs and uploaded to a backend, every shape
//! checked against [`Deepseek4Config`] first so a malformed file fails at load with the
//! tensor's name. The CPU reference loads its weights through the same code.

use crate::gguf::GgufFile;
use crate::model::weights::Loader;
use crate::model::{Backend, GateUp, HC_MIXES, HC_STREAMS, HyperWeights, LoadProgress, WeightData};
use crate::quant::GgmlType;
use crate::{Error, Result};

use super::config::{Compression, Deepseek4Config};

/// An mHC hyper-connection's tensors (`{prefix}_fn`, `_scale`, `_base`).
#[derive(Debug)]
pub struct HyperTensors<W> {
    /// `[HC_STREAMS * D, mixes]`.
    pub func: W,
    /// f32 `[3]` (a sub-block's pre, post and comb factors) or `[1]` (the head's).
    pub scale: W,
    /// f32 `[mixes]`.
    pub base: W,
}

impl<W> HyperTensors<W> {
    /// The tensors as the hyper-connection ops take them.
    pub fn view(&self) -> HyperWeights<'_, W> {
        HyperWeights {
            func: &self.func,
            scale: &self.scale,
            base: &self.base,
        }
    }
}

/// A compressor's tensors (`{prefix}kv`, `gate`, `ape`, `norm`): rows of `width` values from
/// blocks of `ratio` tokens; `coff` is 2 for ratio 4 (the previous and the current block are
/// pooled through separate column halves), else 1.
#[derive(Debug)]
pub struct CompressorWeights<W> {
    /// `[D, coff * width]`: the values.
    pub kv: W,
    /// `[D, coff * width]`: the gate scores.
    pub gate: W,
    /// f32 `[coff * width, ratio]`: a score bias per place in the block.
    pub ape: W,
    /// f32 `[width]`: the pooled row's RMS norm weight.
    pub norm: W,
}

/// The lightning indexer of a ratio-4 layer (`blk.N.indexer.*`, `blk.N.indexer_compressor_*`).
#[derive(Debug)]
pub struct IndexerWeights<W> {
    /// `[q_lora_rank, indexer_heads * indexer_head_dim]`: queries from the normed q_a output.
    pub q_b: W,
    /// `[D, indexer_heads]`: each head's weight in a row's score.
    pub proj: W,
    /// The indexer's own ratio-4 compressor, rows `indexer_head_dim` wide.
    pub compressor: CompressorWeights<W>,
}

/// The compressed keys of a layer, by its [`Compression`].
#[derive(Debug)]
pub enum CompressedKeys<W> {
    /// The raw window only.
    None,
    /// Rows of 4 tokens, each query's picked by the indexer.
    Ratio4 {
        /// Rows `head_dim` wide.
        compressor: CompressorWeights<W>,
        /// Picks the rows a query attends.
        indexer: Box<IndexerWeights<W>>,
    },
    /// Rows of 128 tokens, all visible ones attended.
    Ratio128 {
        /// Rows `head_dim` wide.
        compressor: CompressorWeights<W>,
    },
}

/// One layer's attention tensors, after its input norm.
#[derive(Debug)]
pub struct AttentionWeights<W> {
    /// `[D, q_lora_rank]`: the low-rank query, then its RMS norm `q_a_norm` (f32).
    pub q_a: W,
    /// f32 `[q_lora_rank]`.
    pub q_a_norm: W,
    /// `[q_lora_rank, heads * head_dim]`.
    pub q_b: W,
    /// `[D, head_dim]`: the one key/value head, then its RMS norm `kv_norm` (f32).
    pub kv: W,
    /// f32 `[head_dim]`.
    pub kv_norm: W,
    /// f32 `[heads]`: a logit per head that only enlarges the softmax denominator.
    pub sinks: W,
    /// `[heads * head_dim / groups, groups * rank]`: the grouped low-rank output (a file may
    /// store its rows split over two dims; it is loaded as this matrix).
    pub output_a: W,
    /// `[groups * rank, D]`.
    pub output_b: W,
    /// The layer's compressed keys.
    pub compressed: CompressedKeys<W>,
}

/// How a layer chooses its routed experts.
#[derive(Debug)]
pub enum ExpertChoice<W> {
    /// The top K of the gates plus `exp_probs_b` (f32 `[E]`).
    Biased(W),
    /// `ffn_gate_tid2eid`: K expert ids per token id, (V, K) row-major, checked below E.
    Hashed(Vec<u32>),
}

/// One transformer block.
#[derive(Debug)]
pub struct LayerWeights<W> {
    /// The attention sub-block's hyper-connection.
    pub hc_attn: HyperTensors<W>,
    /// f32 `[D]`: the attention input's norm.
    pub attn_norm: W,
    /// Attention.
    pub attention: AttentionWeights<W>,
    /// The FFN sub-block's hyper-connection.
    pub hc_ffn: HyperTensors<W>,
    /// f32 `[D]`: the FFN input's norm.
    pub ffn_norm: W,
    /// `[D, E]`: router logits.
    pub router: W,
    /// How the router picks.
    pub choice: ExpertChoice<W>,
    /// `[D, F, E]` each.
    pub gate_up: GateUp<W>,
    /// `[F, D, E]`.
    pub down: W,
    /// The shared expert's gate and up, `[D, Fs, 1]` each: a routed layer of one expert,
    /// which the MoE ops run with its own clamp.
    pub shared_gate_up: GateUp<W>,
    /// `[Fs, D, 1]`.
    pub shared_down: W,
}

/// Every weight the logits of a deepseek4 model read.
#[derive(Debug)]
pub struct Deepseek4Weights<W> {
    /// `[D, V]`.
    pub embed: W,
    /// Blocks (multi-token-prediction blocks excluded).
    pub layers: Vec<LayerWeights<W>>,
    /// The output head's stream mix (`output_hc_*`).
    pub hc_head: HyperTensors<W>,
    /// f32 `[D]`.
    pub output_norm: W,
    /// `[D, V]`.
    pub output: W,
}

impl<B: Backend> Loader<'_, B> {
    fn hyper(&mut self, prefix: &str, d: usize, mixes: usize) -> Result<HyperTensors<B::Weight>> {
        let scales = if mixes == HC_STREAMS { 1 } else { 3 };
        Ok(HyperTensors {
            func: self.get(&format!("{prefix}_fn.weight"), &[HC_STREAMS * d, mixes])?,
            scale: self.get(&format!("{prefix}_scale.weight"), &[scales])?,
            base: self.get(&format!("{prefix}_base.weight"), &[mixes])?,
        })
    }

    fn compressor(
        &mut self,
        prefix: &str,
        d: usize,
        width: usize,
        compression: Compression,
    ) -> Result<CompressorWeights<B::Weight>> {
        let cols = compression.coff() * width;
        Ok(CompressorWeights {
            kv: self.get(&format!("{prefix}kv.weight"), &[d, cols])?,
            gate: self.get(&format!("{prefix}gate.weight"), &[d, cols])?,
            ape: self.get_f32(&format!("{prefix}ape.weight"), &[cols, compression.ratio()])?,
            norm: self.get(&format!("{prefix}norm.weight"), &[width])?,
        })
    }

    /// A matrix of `rows` rows of `cols` that a file may store with its rows split over more
    /// dims (`[cols, r1, r2]`, `r1 * r2 = rows`, as llama.cpp's test files store
    /// `attn_output_a`; llama.cpp loads it reshaped): the same bytes, uploaded as `[cols, rows]`.
    fn reshaped(&mut self, name: &str, cols: usize, rows: usize) -> Result<B::Weight> {
        let info = self.info(name)?;
        if info.dims.first() != Some(&cols) || info.n_elements() != cols * rows {
            return Err(Error::InvalidModel(format!(
                "tensor {name} has dims {:?}, the config implies [{cols}, {rows}]",
                info.dims
            )));
        }
        let data = self.data(name, &info.dims)?;
        self.upload(WeightData {
            dims: &[cols, rows],
            ..data
        })
    }

    /// Layer `p`'s shared expert (`ffn_{gate,up,down}_shexp`, `[D, Fs]`, `[D, Fs]`, `[Fs, D]`)
    /// uploaded as a routed layer of one expert, which the MoE ops run.
    fn shared_expert(
        &mut self,
        p: &str,
        d: usize,
        fs: usize,
    ) -> Result<(GateUp<B::Weight>, B::Weight)> {
        let names = ["gate", "up", "down"].map(|n| format!("{p}ffn_{n}_shexp.weight"));
        let gate = self.data(&names[0], &[d, fs])?;
        let up = self.data(&names[1], &[d, fs])?;
        let down = self.data(&names[2], &[fs, d])?;
        let experts = [d, fs, 1];
        let gate_up = self.backend.upload_gate_up(
            WeightData {
                dims: &experts,
                ..gate
            },
            WeightData {
                dims: &experts,
                ..up
            },
        )?;
        self.uploaded(gate.bytes.len() + up.bytes.len());
        let down = self.upload(WeightData {
            dims: &[fs, d, 1],
            ..down
        })?;
        Ok((gate_up, down))
    }

    /// The I32 table `name` of `vocab` rows of `k` expert ids, each below `n_experts`.
    fn expert_table(
        &mut self,
        name: &str,
        k: usize,
        vocab: usize,
        n_experts: usize,
    ) -> Result<Vec<u32>> {
        let data = self.data(name, &[k, vocab])?;
        if data.ty != GgmlType::I32 {
            return Err(Error::InvalidModel(format!(
                "tensor {name} is {}; expert ids are I32",
                data.ty.name()
            )));
        }
        let ids = data
            .bytes
            .chunks_exact(4)
            .map(|b| {
                let id = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                u32::try_from(id)
                    .ok()
                    .filter(|&id| (id as usize) < n_experts)
                    .ok_or_else(|| {
                        Error::InvalidModel(format!(
                            "tensor {name} holds id {id}, outside 0..{n_experts}"
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        self.uploaded(data.bytes.len());
        Ok(ids)
    }

    /// Layer `il`'s attention tensors.
    fn deepseek4_attention(
        &mut self,
        cfg: &Deepseek4Config,
        il: usize,
    ) -> Result<AttentionWeights<B::Weight>> {
        let name = |n: &str| format!("blk.{il}.{n}");
        let (d, hd, rank) = (cfg.d_model, cfg.head_dim, cfg.q_lora_rank);
        let q_width = cfg.n_heads * hd;
        let out_rows = cfg.output_groups * cfg.output_rank;
        let compression = cfg.compression[il];
        let prefix = name("attn_compressor_");
        let compressed = match compression {
            Compression::None => CompressedKeys::None,
            Compression::Ratio4 => CompressedKeys::Ratio4 {
                compressor: self.compressor(&prefix, d, hd, compression)?,
                indexer: Box::new(IndexerWeights {
                    q_b: self.get(
                        &name("indexer.attn_q_b.weight"),
                        &[rank, cfg.indexer_heads * cfg.indexer_head_dim],
                    )?,
                    proj: self.get(&name("indexer.proj.weight"), &[d, cfg.indexer_heads])?,
                    compressor: self.compressor(
                        &name("indexer_compressor_"),
                        d,
                        cfg.indexer_head_dim,
                        Compression::Ratio4,
                    )?,
                }),
            },
            Compression::Ratio128 => CompressedKeys::Ratio128 {
                compressor: self.compressor(&prefix, d, hd, compression)?,
            },
        };
        Ok(AttentionWeights {
            q_a: self.get(&name("attn_q_a.weight"), &[d, rank])?,
            q_a_norm: self.get(&name("attn_q_a_norm.weight"), &[rank])?,
            q_b: self.get(&name("attn_q_b.weight"), &[rank, q_width])?,
            kv: self.get(&name("attn_kv.weight"), &[d, hd])?,
            kv_norm: self.get(&name("attn_kv_a_norm.weight"), &[hd])?,
            sinks: self.get(&name("attn_sinks.weight"), &[cfg.n_heads])?,
            output_a: self.reshaped(
                &name("attn_output_a.weight"),
                q_width / cfg.output_groups,
                out_rows,
            )?,
            output_b: self.get(&name("attn_output_b.weight"), &[out_rows, d])?,
            compressed,
        })
    }

    fn deepseek4_layer(
        &mut self,
        cfg: &Deepseek4Config,
        il: usize,
    ) -> Result<LayerWeights<B::Weight>> {
        let p = format!("blk.{il}.");
        let name = |n: &str| format!("{p}{n}");
        let (d, f, fs, e) = (cfg.d_model, cfg.expert_ff, cfg.shared_ff, cfg.n_experts);
        let choice = if il < cfg.hash_layers {
            ExpertChoice::Hashed(self.expert_table(
                &name("ffn_gate_tid2eid.weight"),
                cfg.n_experts_used,
                cfg.n_vocab,
                e,
            )?)
        } else {
            ExpertChoice::Biased(self.get(&name("exp_probs_b.bias"), &[e])?)
        };
        let (shared_gate_up, shared_down) = self.shared_expert(&p, d, fs)?;
        Ok(LayerWeights {
            hc_attn: self.hyper(&name("hc_attn"), d, HC_MIXES)?,
            attn_norm: self.get(&name("attn_norm.weight"), &[d])?,
            attention: self.deepseek4_attention(cfg, il)?,
            hc_ffn: self.hyper(&name("hc_ffn"), d, HC_MIXES)?,
            ffn_norm: self.get(&name("ffn_norm.weight"), &[d])?,
            router: self.get(&name("ffn_gate_inp.weight"), &[d, e])?,
            choice,
            gate_up: self.gate_up(&p, &[d, f, e])?,
            down: self.get(&name("ffn_down_exps.weight"), &[f, d, e])?,
            shared_gate_up,
            shared_down,
        })
    }
}

/// Uploads every weight the logits of `cfg` read from `file` to `backend`, reporting progress
/// per tensor. Tensors the architecture never reads (`*.scale`, `*.input_scale`,
/// `exp_probs_b_vl`, multi-token-prediction blocks) are left in the file.
pub fn load_weights<B: Backend>(
    file: &GgufFile,
    cfg: &Deepseek4Config,
    backend: &mut B,
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<Deepseek4Weights<B::Weight>> {
    let mut l = Loader::new(file, backend, progress);
    let (d, vocab) = (cfg.d_model, cfg.n_vocab);
    let embed = l.get("token_embd.weight", &[d, vocab])?;
    let layers = (0..cfg.n_layers)
        .map(|il| l.deepseek4_layer(cfg, il))
        .collect::<Result<Vec<_>>>()?;
    Ok(Deepseek4Weights {
        embed,
        layers,
        hc_head: l.hyper("output_hc", d, HC_STREAMS)?,
        output_norm: l.get("output_norm.weight", &[d])?,
        output: l.get("output.weight", &[d, vocab])?,
    })
}
