//! The whole-model reference of DeepSeek V4 Flash (`deepseek4`), computed in f64 as llama.cpp
//! and the original engine (antirez/ds4) define it, for the logits of every position of a
//! prompt fed in chunks of any size.
//!
//! It is a model of its own here, not the runtime's graph over the CPU backend's ops, so that
//! graph has an independent check: plain functions over f64 activations on the runtime's
//! weight structs ([`moetile::model::deepseek4`], loaded through the CPU backend's upload, which
//! dequantizes exactly to f32), widened in every product; its attention is also the CPU
//! backend's `deepseek4_attention`. What it leaves
//! out changes nothing in exact arithmetic: llama.cpp's F16 rounding of the KV and compressed
//! caches (a storage choice; set its cache to F32 and flash attention off to compare), and,
//! with the simulation off, the Hadamard rotation of the indexer's queries and keys
//! (orthogonal, so no score moves).
//!
//! The model was trained with its keys in FP8 and its indexer in FP4; the original engine
//! simulates that and llama.cpp does not. [`Deepseek4Options::qat_sim`] (on by default)
//! chooses; [`qat`] says exactly what is rounded where.
//!
//! Per token, per layer:
//! ```text
//! X (4 streams of D) -> hyper::pre -> attn_norm -> attention -> hyper::post -> X
//!                    -> hyper::pre -> ffn_norm  -> moe + shared expert -> hyper::post -> X
//! logits = output · output_norm(hyper::head(X))
//! ```
//! `attention` sees the raw sliding window and, in compressed layers, the rows of
//! `compressor` (ratio 128: all visible rows; ratio 4: those the lightning indexer picks).
//! Only attention looks at other positions; what it needs of them is a [`Deepseek4State`].
//!
//! ```no_run
//! use moetile::gguf::GgufFile;
//! use moetile_cpu::deepseek4::{Deepseek4Options, Deepseek4Reference};
//!
//! let file = GgufFile::open("deepseek4-tiny-f32.gguf".as_ref())?;
//! let model = Deepseek4Reference::load(&file, Deepseek4Options::default())?;
//! let logits = model.logits(&[1, 2, 3])?; // (3, n_vocab), row-major
//! assert_eq!(logits.len(), 3 * model.config().n_vocab);
//! // The same logits, prefilled then decoded one token at a time:
//! let mut state = model.new_state();
//! let mut chunked = model.forward(&mut state, &[1, 2])?;
//! chunked.extend(model.forward(&mut state, &[3])?);
//! assert_eq!(chunked, logits);
//! # Ok::<(), moetile::Error>(())
//! ```

pub(crate) mod attention;
pub(crate) mod compressor;
pub(crate) mod hyper;
mod math;
mod moe;
pub mod qat;
pub mod rope;

pub use moetile::model::deepseek4::{Compression, Deepseek4Config};

use moetile::gguf::GgufFile;
use moetile::model::deepseek4::{
    self as arch, AttentionWeights, CompressedKeys, Deepseek4Weights, HyperTensors,
};
use moetile::{Error, Result};

use attention::{AttentionState, Numerics};
use math::{matvec, rms_norm};

use crate::{CpuBackend, CpuWeight};

/// How the reference computes, where the file does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deepseek4Options {
    /// Simulate the low precision the model was trained with, as the original engine does:
    /// attention keys through FP8 E4M3, indexer queries and keys through a Hadamard rotation
    /// and FP4 E2M1 ([`qat`]). On by default; off computes llama.cpp's graph exactly, which
    /// the fixtures' goldens hold.
    pub qat_sim: bool,
}

impl Default for Deepseek4Options {
    fn default() -> Self {
        Deepseek4Options { qat_sim: true }
    }
}

/// What a sequence has left for the positions after it: per layer, what its attention reads of
/// earlier positions (the raw window's last keys, the compressed rows and indexer keys so far,
/// the compressors' unfinished blocks). Nothing else crosses positions: hyper-connections,
/// norms and experts act on one token at a time. Made by [`Deepseek4Reference::new_state`],
/// for that model only.
#[derive(Debug, Clone, PartialEq)]
pub struct Deepseek4State {
    /// Positions fed so far: where the next token goes.
    n_past: usize,
    layers: Vec<AttentionState>,
    /// Per layer, the routed experts of the last non-empty [`Deepseek4Reference::forward`]'s
    /// tokens, (T, K) row-major: kept for one call only, so a long sequence does not grow it
    /// (and two states of one sequence fed in different chunks compare unequal by it).
    routed: Vec<Vec<usize>>,
    /// The config and options of the model that made the state, to refuse another's.
    owner: (Deepseek4Config, Deepseek4Options),
}

impl Deepseek4State {
    /// Positions fed so far.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Forgets every position: the state of a new sequence.
    pub fn reset(&mut self) {
        self.n_past = 0;
        self.layers.fill_with(AttentionState::default);
        self.routed.fill_with(Vec::new);
    }

    /// The routed experts that layer `layer` chose for each token of the last non-empty
    /// [`Deepseek4Reference::forward`] call, (T, K) row-major in the router's order (in a
    /// hash-routed layer, the order of its `ffn_gate_tid2eid` row); `None` past the last
    /// layer. Lets a test check a choice that the logits only show indirectly.
    pub fn routed_experts(&self, layer: usize) -> Option<&[usize]> {
        self.routed.get(layer).map(Vec::as_slice)
    }

    /// How many compressed rows visible to a query the indexer of layer `layer` left out,
    /// summed over every position fed so far (0 in a layer without an indexer, or while no
    /// query sees more rows than the top-k); `None` past the last layer. The logits cannot
    /// tell a top-k that dropped rows from one that never had to.
    pub fn indexer_dropped(&self, layer: usize) -> Option<usize> {
        self.layers.get(layer).map(|l| l.indexer_dropped)
    }
}

/// The CPU backend's deepseek4 cache ([`moetile::model::Backend::deepseek4_cache`]): per
/// layer, the reference's attention state and how many positions it holds (the forward pass
/// feeds the layers one after the other, each the same positions).
#[derive(Debug, Clone)]
pub(crate) struct Deepseek4Cache {
    cfg: Deepseek4Config,
    numerics: Numerics,
    n_ctx: usize,
    /// Per layer: positions fed so far, and what its attention keeps of them.
    layers: Vec<(usize, AttentionState)>,
}

impl Deepseek4Cache {
    /// An empty cache of `cfg` for `n_ctx` positions, computing as `qat_sim` says.
    pub(crate) fn new(cfg: &Deepseek4Config, n_ctx: usize, qat_sim: bool) -> Result<Self> {
        check_options(cfg, Deepseek4Options { qat_sim })?;
        Ok(Deepseek4Cache {
            cfg: cfg.clone(),
            numerics: Numerics::new(cfg, qat_sim),
            n_ctx,
            layers: vec![(0, AttentionState::default()); cfg.n_layers],
        })
    }

    /// The reference's attention of layer `il` for `x` (its normed input, (T, D)) at
    /// positions `pos0..`: `pos0` is where the layer's sequence stopped, or 0 to start a new
    /// one (the state cannot go back to a position between).
    pub(crate) fn attention(
        &mut self,
        w: &AttentionWeights<CpuWeight>,
        x: &[Vec<f64>],
        il: usize,
        pos0: usize,
    ) -> Result<Vec<Vec<f64>>> {
        let cfg = &self.cfg;
        let op = |detail: String| Error::Shape {
            op: "deepseek4_attention".into(),
            detail,
        };
        let compression = cfg.compression.get(il).copied();
        let fits = matches!(
            (&w.compressed, compression),
            (CompressedKeys::None, Some(Compression::None))
                | (CompressedKeys::Ratio4 { .. }, Some(Compression::Ratio4))
                | (CompressedKeys::Ratio128 { .. }, Some(Compression::Ratio128))
        );
        if !fits
            || w.q_a.dims != [cfg.d_model, cfg.q_lora_rank]
            || w.kv.dims != [cfg.d_model, cfg.head_dim]
        {
            return Err(op(format!(
                "layer {il}'s weights ({}, {:?}) are not those of the cache's model (layer \
                 {il} of {}, compression {compression:?}, D {})",
                w.q_a.name, w.q_a.dims, cfg.n_layers, cfg.d_model
            )));
        }
        if let Some(bad) = x.iter().find(|row| row.len() != cfg.d_model) {
            return Err(op(format!(
                "input rows of {} values, D is {}",
                bad.len(),
                cfg.d_model
            )));
        }
        let (n_past, state) = &mut self.layers[il];
        if pos0 == 0 {
            *n_past = 0;
            *state = AttentionState::default();
        } else if pos0 != *n_past {
            return Err(Error::InvalidSetting {
                name: format!("deepseek4 layer {il} position"),
                value: pos0.to_string(),
                expected: format!(
                    "{} (where the sequence stopped) or 0 (a new sequence): the compressed \
                     cache cannot go back",
                    *n_past
                ),
            });
        }
        let needed = pos0 + x.len();
        if needed > self.n_ctx {
            return Err(Error::ContextFull {
                n_ctx: self.n_ctx,
                needed,
            });
        }
        let out = attention::attention(w, state, x, pos0, il, cfg, &self.numerics);
        *n_past = needed;
        Ok(out)
    }
}

/// A deepseek4 model loaded for the reference forward pass.
pub struct Deepseek4Reference {
    config: Deepseek4Config,
    options: Deepseek4Options,
    /// As the runtime's loader reads them, dequantized by the CPU backend's upload.
    weights: Deepseek4Weights<CpuWeight>,
    /// The rotations and roundings of attention.
    numerics: Numerics,
}

/// Refuses `options` that `cfg` cannot be computed with: the simulation rotates indexer
/// heads by a Hadamard transform and rounds them in FP4 blocks, so it needs heads a power of
/// two at least a block wide.
pub(crate) fn check_options(cfg: &Deepseek4Config, options: Deepseek4Options) -> Result<()> {
    let has_indexer = cfg.compression.contains(&Compression::Ratio4);
    let dim = cfg.indexer_head_dim;
    if options.qat_sim && has_indexer && !(dim.is_power_of_two() && dim >= qat::FP4_BLOCK) {
        return Err(Error::InvalidModel(format!(
            "{}.attention.indexer.key_length = {dim}: the low-precision simulation rotates \
             indexer heads by a Hadamard transform and rounds them in FP4 blocks of {}, so \
             it needs a power of two of at least {}; load with qat_sim off",
            arch::ARCH,
            qat::FP4_BLOCK,
            qat::FP4_BLOCK
        )));
    }
    Ok(())
}

impl Deepseek4Reference {
    /// Reads the config and every weight the logits use from `file` (an error names the key
    /// or tensor at fault), to compute as `options` say; with the simulation on, indexer heads
    /// must be a power of two of at least 32 wide. Tensors the architecture never reads
    /// (`*.scale`, `*.input_scale`, `exp_probs_b_vl`, multi-token-prediction blocks) are
    /// ignored.
    pub fn load(file: &GgufFile, options: Deepseek4Options) -> Result<Deepseek4Reference> {
        let cfg = Deepseek4Config::from_gguf(file)?;
        check_options(&cfg, options)?;
        let weights = arch::load_weights(file, &cfg, &mut CpuBackend::new(), &mut |_| ())?;
        Ok(Deepseek4Reference {
            weights,
            numerics: Numerics::new(&cfg, options.qat_sim),
            config: cfg,
            options,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &Deepseek4Config {
        &self.config
    }

    /// The state of a sequence with no position yet.
    pub fn new_state(&self) -> Deepseek4State {
        Deepseek4State {
            n_past: 0,
            layers: vec![AttentionState::default(); self.config.n_layers],
            routed: vec![Vec::new(); self.config.n_layers],
            owner: (self.config.clone(), self.options),
        }
    }

    /// The logits of every position of `tokens` as one sequence from position 0 (a
    /// [`forward`](Self::forward) from a new state), row-major (T, n_vocab).
    pub fn logits(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.forward(&mut self.new_state(), tokens)
    }

    /// The logits of `tokens` placed after the `state.n_past()` positions `state` holds,
    /// row-major (T, n_vocab), rounded to f32 only at the end; `state` then holds them too.
    /// However a sequence is cut into calls, each position's logits are the same bits.
    pub fn forward(&self, state: &mut Deepseek4State, tokens: &[u32]) -> Result<Vec<f32>> {
        let cfg = &self.config;
        if let Some((i, id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= cfg.n_vocab)
        {
            return Err(Error::InvalidSetting {
                name: format!("token #{i}"),
                value: id.to_string(),
                expected: format!("a token id below the vocabulary size {}", cfg.n_vocab),
            });
        }
        if state.owner != (self.config.clone(), self.options) {
            return Err(Error::InvalidSetting {
                name: "deepseek4 state".into(),
                value: format!("a state of another model or options ({:?})", state.owner.1),
                expected: "a state made by this model's new_state".into(),
            });
        }
        if tokens.is_empty() {
            // Nothing to do; returning here also keeps the last call's routed experts.
            return Ok(Vec::new());
        }
        let pos = state.n_past;
        let tokens: Vec<usize> = tokens.iter().map(|&id| id as usize).collect();
        let mut streams: Vec<Vec<f64>> = tokens
            .iter()
            .map(|&id| hyper::expand(self.weights.embed.row(0, id)))
            .collect();
        for (((il, layer), layer_state), routed) in self
            .weights
            .layers
            .iter()
            .enumerate()
            .zip(&mut state.layers)
            .zip(&mut state.routed)
        {
            let mixes: Vec<hyper::Mix> = streams
                .iter()
                .map(|x| self.pre(x, &layer.hc_attn))
                .collect();
            let input: Vec<Vec<f64>> = mixes
                .iter()
                .map(|m| rms_norm(&m.input, Some(&layer.attn_norm.values), cfg.rms_eps))
                .collect();
            let out = attention::attention(
                &layer.attention,
                layer_state,
                &input,
                pos,
                il,
                cfg,
                &self.numerics,
            );
            streams = streams
                .iter()
                .zip(&mixes)
                .zip(&out)
                .map(|((x, m), f)| hyper::post(f, x, &m.coefs))
                .collect();
            routed.clear();
            streams = streams
                .iter()
                .zip(&tokens)
                .map(|(x, &token)| {
                    let mix = self.pre(x, &layer.hc_ffn);
                    let norm = Some(layer.ffn_norm.values.as_slice());
                    let input = rms_norm(&mix.input, norm, cfg.rms_eps);
                    let (out, experts) = moe::moe(layer, &input, token, il, cfg);
                    routed.extend(experts);
                    hyper::post(&out, x, &mix.coefs)
                })
                .collect();
        }
        state.n_past += tokens.len();
        Ok(streams
            .iter()
            .flat_map(|x| {
                let w = &self.weights;
                let y = hyper::head(x, (&w.hc_head).into(), cfg.rms_eps, cfg.hc_eps);
                matvec(
                    &w.output,
                    0,
                    &rms_norm(&y, Some(&w.output_norm.values), cfg.rms_eps),
                )
            })
            .map(|v| v as f32)
            .collect())
    }

    /// [`hyper::pre`] with the config's epsilons and Sinkhorn iterations.
    fn pre(&self, streams: &[f64], w: &HyperTensors<CpuWeight>) -> hyper::Mix {
        let cfg = &self.config;
        hyper::pre(
            streams,
            w.into(),
            cfg.rms_eps,
            cfg.hc_eps,
            cfg.hc_sinkhorn_iterations,
        )
    }
}

#[cfg(test)]
mod tests {
    use moetile::model::{Backend, HC_MIXES, HC_STREAMS, HyperParams};

    use super::*;
    use crate::CpuBackend;

    fn widen(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&v| v as f64).collect()
    }

    fn narrow(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&v| v as f32).collect()
    }

    /// The reference model of the llama.cpp tiny fixture.
    fn tiny_fixture() -> Deepseek4Reference {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models/deepseek4-tiny-f32.gguf");
        let file = GgufFile::open(&path).unwrap();
        Deepseek4Reference::load(&file, Deepseek4Options::default()).unwrap()
    }

    /// The hyper-connection parameters of `cfg`, as the ops take them.
    fn hyper_params(cfg: &Deepseek4Config) -> HyperParams {
        HyperParams {
            rms_eps: cfg.rms_eps as f32,
            eps: cfg.hc_eps as f32,
            sinkhorn_iterations: cfg.hc_sinkhorn_iterations,
        }
    }

    /// Deterministic inputs of varied size and sign.
    fn varied(i: usize) -> f32 {
        ((i * 7919 % 1009) as f32 / 250.0 - 2.0) * (1 + i % 3) as f32
    }

    /// `CpuBackend::hc_pre` and `hc_post` are the model's own steps: on the tiny fixture's
    /// weights and config, they give the model's results bit for bit once those are rounded
    /// to f32.
    #[test]
    fn cpu_hyper_ops_are_the_reference_steps() {
        let model = tiny_fixture();
        let cfg = model.config();
        let (d, il, rows) = (cfg.d_model, 1, 3);
        let hc = &model.weights.layers[il].hc_ffn;
        assert_eq!(hc.func.dims, [HC_STREAMS * d, HC_MIXES]);
        let w = hc.view();
        let p = hyper_params(cfg);
        // Values of varied size in every stream, and a sub-block output.
        let streams: Vec<f32> = (0..rows * HC_STREAMS * d).map(varied).collect();
        let f: Vec<f32> = (0..rows * d).map(|i| varied(i + 17) / 3.0).collect();

        let mut cpu = CpuBackend::new();
        let x = cpu.act_from_host(rows, HC_STREAMS * d, &streams).unwrap();
        let out = cpu.act_from_host(rows, d, &f).unwrap();
        let (input, mix) = cpu.hc_pre(&x, w, &p).unwrap();
        let mut y = x.clone();
        cpu.hc_post(&mut y, &out, &mix).unwrap();
        for r in 0..rows {
            let xs = widen(x.row(r));
            let m = model.pre(&xs, hc);
            assert_eq!(input.row(r), narrow(&m.input), "input of token {r}");
            assert_eq!(mix.row(r), narrow(&m.coefs.values()), "mix of token {r}");
            // The op reads the mixing values as stored (f32); the model keeps them in f64.
            let values = std::array::from_fn(|i| mix.row(r)[i] as f64);
            let coefs = hyper::Coefs::from_values(&values);
            let new = hyper::post(&widen(out.row(r)), &xs, &coefs);
            assert_eq!(y.row(r), narrow(&new), "streams of token {r}");
        }
    }

    /// `CpuBackend::hc_head` and `grouped_matmul` are the model's own steps (the output
    /// head's stream mix, the grouped low-rank output of attention): on the tiny fixture's
    /// weights (`attn_output_a` as the `[cols, rows]` matrix the op takes) they give the
    /// model's results bit for bit once those are rounded to f32.
    #[test]
    fn cpu_head_and_grouped_output_are_the_reference_steps() {
        let model = tiny_fixture();
        let cfg = model.config();
        let (d, il, rows) = (cfg.d_model, 2, 3);
        let hc = &model.weights.hc_head;
        assert_eq!(hc.func.dims, [HC_STREAMS * d, HC_STREAMS]);
        let w = hc.view();
        let p = hyper_params(cfg);
        let streams: Vec<f32> = (0..rows * HC_STREAMS * d).map(varied).collect();
        let q_width = cfg.n_heads * cfg.head_dim;
        let heads: Vec<f32> = (0..rows * q_width).map(|i| varied(i + 5) / 2.0).collect();
        let (groups, out_rows) = (cfg.output_groups, cfg.output_groups * cfg.output_rank);
        let output_a = &model.weights.layers[il].attention.output_a;
        assert_eq!(output_a.dims, [q_width / groups, out_rows]);

        let mut cpu = CpuBackend::new();
        let x = cpu.act_from_host(rows, HC_STREAMS * d, &streams).unwrap();
        let head = cpu.hc_head(&x, w, &p).unwrap();
        let o = cpu.act_from_host(rows, q_width, &heads).unwrap();
        let low_rank = cpu.grouped_matmul(&o, output_a, groups).unwrap();
        for r in 0..rows {
            let want = hyper::head(&widen(x.row(r)), hc.into(), cfg.rms_eps, cfg.hc_eps);
            assert_eq!(head.row(r), narrow(&want), "head of token {r}");
            let want = attention::grouped_matvec(output_a, groups, &widen(o.row(r)));
            assert_eq!(
                low_rank.row(r),
                narrow(&want),
                "grouped output of token {r}"
            );
        }
        // Shapes that do not fit are refused, naming the op.
        let odd = cpu
            .act_from_host(1, q_width + 4, &vec![1.0; q_width + 4])
            .unwrap();
        let err = cpu.grouped_matmul(&odd, output_a, groups).unwrap_err();
        assert!(err.to_string().contains("grouped_matmul"), "{err}");
        let err = cpu.grouped_matmul(&o, output_a, 0).unwrap_err();
        assert!(err.to_string().contains("grouped_matmul"), "{err}");
        let odd = cpu.act_from_host(1, 3 * d, &vec![1.0; 3 * d]).unwrap();
        let err = cpu.hc_head(&odd, w, &p).unwrap_err();
        assert!(err.to_string().contains("hc_head"), "{err}");
    }

    /// `CpuBackend::compressor_pool` is the model's pooling step (`compressor::pooled_row`
    /// over the tokens' projections, the ape bias added by `Projected::new` as the model's
    /// compressor adds it): on the tiny fixture's ape and norm weights of a ratio-4 layer
    /// (overlapping, from a sequence's start and from a later chunk) and a ratio-128 one, it
    /// gives those rows bit for bit once rounded to f32.
    #[test]
    fn cpu_compressor_pool_is_the_reference_step() {
        use moetile::model::{PoolParams, PoolWeights};

        let model = tiny_fixture();
        let cfg = model.config();
        let mut cpu = CpuBackend::new();
        for (il, previous, tokens) in [(2, false, 12), (2, true, 12), (3, false, 256)] {
            let compression = cfg.compression[il];
            let (ratio, overlap) = (compression.ratio(), compression == Compression::Ratio4);
            let width = cfg.head_dim;
            let cols = if overlap { 2 * width } else { width };
            let (CompressedKeys::Ratio4 { compressor, .. }
            | CompressedKeys::Ratio128 { compressor }) =
                &model.weights.layers[il].attention.compressed
            else {
                panic!("layer {il} has no compressor");
            };
            let (ape, norm) = (&compressor.ape, &compressor.norm);
            assert_eq!(ape.dims, [cols, ratio]);
            let kv: Vec<f32> = (0..tokens * cols).map(varied).collect();
            let score: Vec<f32> = (0..tokens * cols).map(|i| varied(i + 11) / 2.0).collect();
            let p = PoolParams {
                ratio,
                overlap,
                previous,
                rms_eps: cfg.rms_eps as f32,
            };
            let kv = cpu.act_from_host(tokens, cols, &kv).unwrap();
            let score = cpu.act_from_host(tokens, cols, &score).unwrap();
            let w = PoolWeights { ape, norm };
            let rows = cpu.compressor_pool(&kv, &score, w, &p).unwrap();
            let projected: Vec<compressor::Projected> = (0..tokens)
                .map(|i| {
                    let ape = ape.row(0, i % ratio);
                    compressor::Projected::new(widen(kv.row(i)), widen(score.row(i)), ape)
                })
                .collect();
            let blocks: Vec<_> = projected.chunks(ratio).collect();
            let skip = usize::from(previous);
            assert_eq!(rows.rows, blocks.len() - skip);
            for (r, b) in (skip..blocks.len()).enumerate() {
                let before = if overlap && b > 0 { blocks[b - 1] } else { &[] };
                let want = compressor::pooled_row(before, blocks[b], &norm.values, cfg.rms_eps);
                assert_eq!(rows.row(r), narrow(&want), "layer {il} row {r}");
            }
        }
    }
}
