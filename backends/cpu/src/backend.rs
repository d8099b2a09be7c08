//! [`CpuBackend`]: the trait plumbing (shapes, checks, storage) around the reference ops.

use moetile::model::deepseek4::{AttentionWeights as Deepseek4Attention, Deepseek4Config};
use moetile::model::gptoss::{GptOssAttentionParams, Yarn};
use moetile::model::qwen35moe::{DeltaNetWeights, Mixer, Qwen35MoeConfig};
use moetile::model::{
    AttentionParams, Backend, DeltaNetParams, ExpertBiases, ExpertWeights, GateUp, HC_MIXES,
    HC_STREAMS, HyperParams, HyperWeights, MoeParams, PoolParams, PoolWeights, PreNorm,
    RouterParams, Selection, WeightData, hashed_ids,
};
use moetile::quant;

use crate::attention::{self, Span};
use crate::deepseek4::Deepseek4Cache;
use crate::deepseek4::attention::grouped_matvec;
use crate::deepseek4::compressor::{self, Projected};
use crate::deepseek4::hyper::{self, Coefs, HcView};
use crate::delta_net::{self, DeltaNetState};
use crate::ops;

/// A row-major f32 matrix: the CPU backend's activation.
#[derive(Debug, Clone, PartialEq)]
pub struct Mat {
    /// Number of rows (tokens).
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
    /// `rows * cols` values.
    pub data: Vec<f32>,
}

impl Mat {
    /// A zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Mat {
        Mat {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Row `r`, mutable.
    pub fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// A weight dequantized to f32 at upload (exactly, by [`moetile::quant::dequantize`]), so every
/// op sees the same values whatever the storage type. Memory is 4 bytes a weight: fine for the
/// test models and small real models the reference is used on.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuWeight {
    /// Tensor name.
    pub name: String,
    /// Storage type in the GGUF.
    pub ty: quant::GgmlType,
    /// GGML order `[cols, rows, experts]`.
    pub dims: Vec<usize>,
    /// Dequantized values, expert-major, then row-major.
    pub values: Vec<f32>,
}

impl CpuWeight {
    /// Row length (input width).
    pub fn cols(&self) -> usize {
        self.dims[0]
    }

    /// Output rows per expert.
    pub fn rows(&self) -> usize {
        self.dims.get(1).copied().unwrap_or(1)
    }

    /// Experts (1 for a plain matrix).
    pub fn experts(&self) -> usize {
        self.dims.get(2).copied().unwrap_or(1)
    }

    /// Row `r` of expert `e`.
    pub fn row(&self, e: usize, r: usize) -> &[f32] {
        let start = (e * self.rows() + r) * self.cols();
        &self.values[start..start + self.cols()]
    }
}

/// Experts of the gate/up tensors (of the gate when separate).
fn gate_up_experts(gate_up: &GateUp<CpuWeight>) -> usize {
    match gate_up {
        GateUp::Separate { gate, .. } => gate.experts(),
        GateUp::Interleaved(w) => w.experts(),
    }
}

/// The dims of the gate/up tensors, for errors.
fn describe_gate_up(gate_up: &GateUp<CpuWeight>) -> String {
    match gate_up {
        GateUp::Separate { gate, up } => format!("{:?} and {:?}", gate.dims, up.dims),
        GateUp::Interleaved(w) => format!("{:?} interleaved", w.dims),
    }
}

/// Per-layer f32 keys and values, `[position][kv_head * head_dim]`; or, made by
/// [`Backend::deepseek4_cache`], deepseek4's per-layer attention state instead; made by
/// [`Backend::qwen35moe_cache`], keys and values of the attention layers (none for the others)
/// and the DeltaNet layers' state.
#[derive(Debug, Clone)]
pub struct CpuKvCache {
    pub(crate) k: Vec<Vec<f32>>,
    pub(crate) v: Vec<Vec<f32>>,
    n_ctx: usize,
    deepseek4: Option<Box<Deepseek4Cache>>,
    delta_net: Option<Box<DeltaNetState>>,
}

/// K expert ids and weights per token, row-major (T, K).
#[derive(Debug, Clone, PartialEq)]
pub struct CpuRouting {
    /// Experts each token is routed to.
    pub k: usize,
    /// Experts in the layer.
    pub n_experts: usize,
    /// (T, K) expert ids.
    pub ids: Vec<u32>,
    /// (T, K) route weights.
    pub weights: Vec<f32>,
}

/// The reference backend. Stateless: all data lives in the values it hands out.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

impl CpuBackend {
    /// A new backend.
    pub fn new() -> Self {
        CpuBackend
    }

    /// The routed experts' output `(T, D)` from `x` normed by `norm`, with `biases` when
    /// given: [`Backend::moe_out`] and [`Backend::moe_biased`]'s work, every shape checked.
    fn experts_out(
        &mut self,
        x: &Mat,
        norm: Option<PreNorm<'_, CpuWeight>>,
        routing: &CpuRouting,
        experts: ExpertWeights<'_, CpuWeight>,
        biases: Option<&ExpertBiases<CpuWeight>>,
        p: &MoeParams,
    ) -> moetile::Result<Mat> {
        let h = self.normed(x, norm)?;
        let ExpertWeights { gate_up, down } = experts;
        let shape = ops::gate_up_shape(gate_up);
        let (d, e) = (h.cols, down.experts());
        ensure(
            shape.is_some_and(|(cols, f)| {
                cols == d
                    && down.dims == [f, d, e]
                    && biases.is_none_or(|b| {
                        b.gate.dims == [f, e] && b.up.dims == [f, e] && b.down.dims == [d, e]
                    })
            }) && gate_up_experts(gate_up) == e
                && routing.n_experts == e
                && routing.ids.len() == h.rows * routing.k,
            "moe",
            || {
                format!(
                    "x ({}, {d}), gate/up {}, down {:?}, biases {:?}, routing T*K = {}, E = {}",
                    h.rows,
                    describe_gate_up(gate_up),
                    down.dims,
                    biases.map(|b| [&b.gate.dims, &b.up.dims, &b.down.dims]),
                    routing.ids.len(),
                    routing.n_experts
                )
            },
        )?;
        Ok(ops::moe(
            &h,
            &routing.ids,
            &routing.weights,
            routing.k,
            gate_up,
            down,
            biases,
            p.activation,
        ))
    }

    /// `rms_norm(x) * norm`, or a copy of x.
    fn normed(&mut self, x: &Mat, norm: Option<PreNorm<'_, CpuWeight>>) -> moetile::Result<Mat> {
        match norm {
            Some(n) => self.rms_norm(x, n.weight, n.eps),
            None => Ok(x.clone()),
        }
    }
}

fn shape_error(op: &str, detail: String) -> moetile::Error {
    moetile::Error::Shape {
        op: op.to_string(),
        detail,
    }
}

fn ensure(ok: bool, op: &str, detail: impl FnOnce() -> String) -> moetile::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(shape_error(op, detail()))
    }
}

fn same_shape(op: &str, a: &Mat, b: &Mat) -> moetile::Result<()> {
    ensure(a.rows == b.rows && a.cols == b.cols, op, || {
        format!("({}, {}) vs ({}, {})", a.rows, a.cols, b.rows, b.cols)
    })
}

fn vector<'a>(op: &str, w: &'a CpuWeight, len: usize) -> moetile::Result<&'a [f32]> {
    ensure(w.values.len() == len, op, || {
        format!(
            "{} has {} values, the rows have {len}",
            w.name,
            w.values.len()
        )
    })?;
    Ok(&w.values)
}

/// What both attention ops do before attending: q, k and v cut out of `qkv`, q and k normed
/// per head by `qk_norm` (when given) and rotated (RoPE extended by `yarn`) as positions
/// `pos0..`, k and v stored there in `layer`'s cache; returns q.
#[allow(clippy::too_many_arguments)]
fn rotate_and_store(
    qkv: &Mat,
    qk_norm: Option<[&CpuWeight; 2]>,
    kv: &mut CpuKvCache,
    layer: usize,
    pos0: usize,
    p: &AttentionParams,
    yarn: &Yarn,
) -> moetile::Result<Mat> {
    let (hd, kv_width) = (p.head_dim, p.n_kv_heads * p.head_dim);
    let q_width = p.n_heads * hd;
    ensure(
        p.n_kv_heads > 0
            && p.n_heads.is_multiple_of(p.n_kv_heads)
            && qkv.cols == q_width + 2 * kv_width
            && p.rope.n_dims <= hd
            && p.rope.n_dims.is_multiple_of(2)
            // (a qwen35moe cache holds no keys for its DeltaNet layers)
            && layer < kv.k.len()
            && kv.k[layer].len() == kv.n_ctx * kv_width,
        "attention",
        || format!("qkv {:?}, {p:?}", (qkv.rows, qkv.cols)),
    )?;
    let end = pos0 + qkv.rows;
    if end > kv.n_ctx {
        return Err(moetile::Error::ContextFull {
            n_ctx: kv.n_ctx,
            needed: end,
        });
    }
    let columns = |from: usize, width: usize| Mat {
        rows: qkv.rows,
        cols: width,
        data: (0..qkv.rows)
            .flat_map(|t| qkv.row(t)[from..from + width].iter().copied())
            .collect(),
    };
    let (mut q, mut k) = (columns(0, q_width), columns(q_width, kv_width));
    let v = columns(q_width + kv_width, kv_width);
    if let Some([wq, wk]) = qk_norm {
        let (wq, wk) = (vector("q norm", wq, hd)?, vector("k norm", wk, hd)?);
        q = ops::rms_norm(&q, wq, p.norm_eps);
        k = ops::rms_norm(&k, wk, p.norm_eps);
    }
    ops::rope_yarn(&mut q, hd, pos0, &p.rope, yarn);
    ops::rope_yarn(&mut k, hd, pos0, &p.rope, yarn);
    kv.k[layer][pos0 * kv_width..end * kv_width].copy_from_slice(&k.data);
    kv.v[layer][pos0 * kv_width..end * kv_width].copy_from_slice(&v.data);
    Ok(q)
}

/// f32 values as f64.
fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| v as f64).collect()
}

/// f64 values rounded into `out`.
fn narrow_into(out: &mut [f32], v: &[f64]) {
    out.iter_mut().zip(v).for_each(|(o, &v)| *o = v as f32);
}

impl Backend for CpuBackend {
    type Act = Mat;
    type Weight = CpuWeight;
    type KvCache = CpuKvCache;
    type Routing = CpuRouting;

    fn describe(&self) -> String {
        "CPU reference (f32 storage, f64 accumulation)".to_string()
    }

    /// The default `attention_batch` only copies within host memory here, and every other op
    /// is a loop over rows: one pass for several sequences costs what a pass each does, less
    /// the per-pass work, and computes the very same values.
    fn batches_sequences(&self) -> bool {
        true
    }

    fn shape(&self, x: &Mat) -> (usize, usize) {
        (x.rows, x.cols)
    }

    fn act_from_host(&mut self, rows: usize, cols: usize, data: &[f32]) -> moetile::Result<Mat> {
        ensure(data.len() == rows * cols, "act_from_host", || {
            format!("{} values for ({rows}, {cols})", data.len())
        })?;
        Ok(Mat {
            rows,
            cols,
            data: data.to_vec(),
        })
    }

    fn read(&mut self, x: &Mat) -> moetile::Result<Vec<f32>> {
        Ok(x.data.clone())
    }

    fn upload(&mut self, w: WeightData<'_>) -> moetile::Result<CpuWeight> {
        let n: usize = w.dims.iter().product();
        ensure(!w.dims.is_empty() && w.dims.len() <= 3, "upload", || {
            format!("{}: {} dims", w.name, w.dims.len())
        })?;
        let mut values = vec![0f32; n];
        quant::dequantize(w.ty, w.bytes, &mut values)?;
        Ok(CpuWeight {
            name: w.name.to_string(),
            ty: w.ty,
            dims: w.dims.to_vec(),
            values,
        })
    }

    fn kv_cache(
        &mut self,
        n_layers: usize,
        n_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> moetile::Result<CpuKvCache> {
        let layer = vec![0f32; n_ctx * n_kv_heads * head_dim];
        Ok(CpuKvCache {
            k: vec![layer.clone(); n_layers],
            v: vec![layer; n_layers],
            n_ctx,
            deepseek4: None,
            delta_net: None,
        })
    }

    fn runs_delta_net(&self) -> bool {
        true
    }

    fn qwen35moe_cache(
        &mut self,
        cfg: &Qwen35MoeConfig,
        n_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> moetile::Result<CpuKvCache> {
        let kv = |m: &Mixer| match m {
            Mixer::Attention => vec![0f32; n_ctx * n_kv_heads * head_dim],
            Mixer::DeltaNet => Vec::new(),
        };
        Ok(CpuKvCache {
            k: cfg.mixers.iter().map(kv).collect(),
            v: cfg.mixers.iter().map(kv).collect(),
            n_ctx,
            deepseek4: None,
            delta_net: Some(Box::new(DeltaNetState::new(cfg))),
        })
    }

    fn delta_net(
        &mut self,
        proj: &Mat,
        w: &DeltaNetWeights<CpuWeight>,
        kv: &mut CpuKvCache,
        layer: usize,
        pos0: usize,
        p: &DeltaNetParams,
    ) -> moetile::Result<Mat> {
        let d = &p.shape;
        ensure(
            proj.cols == d.conv_channels() + d.value_width() + 2 * d.n_v_heads,
            "delta_net",
            || format!("projection ({}, {}) for {d:?}", proj.rows, proj.cols),
        )?;
        let end = pos0 + proj.rows;
        if end > kv.n_ctx {
            return Err(moetile::Error::ContextFull {
                n_ctx: kv.n_ctx,
                needed: end,
            });
        }
        let state = kv.delta_net.as_deref_mut().ok_or_else(|| {
            shape_error(
                "delta_net",
                "the cache is not qwen35moe's; make it with Backend::qwen35moe_cache".into(),
            )
        })?;
        let weights = delta_net::weights(&w.conv, &w.dt_bias, &w.a, &w.norm, d)?;
        delta_net::delta_net(proj, &weights, state, layer, pos0, p)
    }

    fn runs_deepseek4(&self) -> bool {
        true
    }

    fn deepseek4_cache(
        &mut self,
        cfg: &Deepseek4Config,
        n_ctx: usize,
        qat_sim: bool,
    ) -> moetile::Result<CpuKvCache> {
        Ok(CpuKvCache {
            k: Vec::new(),
            v: Vec::new(),
            n_ctx,
            deepseek4: Some(Box::new(Deepseek4Cache::new(cfg, n_ctx, qat_sim)?)),
            delta_net: None,
        })
    }

    fn deepseek4_attention(
        &mut self,
        x: &Mat,
        w: &Deepseek4Attention<CpuWeight>,
        kv: &mut CpuKvCache,
        layer: usize,
        pos0: usize,
    ) -> moetile::Result<Mat> {
        let cache = kv.deepseek4.as_deref_mut().ok_or_else(|| {
            shape_error(
                "deepseek4_attention",
                "the cache is not deepseek4's; make it with Backend::deepseek4_cache".into(),
            )
        })?;
        let rows: Vec<Vec<f64>> = (0..x.rows)
            .map(|r| x.row(r).iter().map(|&v| v as f64).collect())
            .collect();
        let out = cache.attention(w, &rows, layer, pos0)?;
        let cols = out.first().map_or(x.cols, Vec::len);
        Ok(Mat {
            rows: out.len(),
            cols,
            data: out.iter().flatten().map(|&v| v as f32).collect(),
        })
    }

    fn embed(&mut self, table: &CpuWeight, tokens: &[u32]) -> moetile::Result<Mat> {
        let mut out = Mat::zeros(tokens.len(), table.cols());
        for (t, &id) in tokens.iter().enumerate() {
            ensure((id as usize) < table.rows(), "embed", || {
                format!("token {id} is outside the vocabulary of {}", table.rows())
            })?;
            out.row_mut(t).copy_from_slice(table.row(0, id as usize));
        }
        Ok(out)
    }

    fn rms_norm(&mut self, x: &Mat, w: &CpuWeight, eps: f32) -> moetile::Result<Mat> {
        ensure(x.cols.is_multiple_of(w.values.len()), "rms_norm", || {
            format!(
                "row of {} is not whole groups of {} ({})",
                x.cols,
                w.values.len(),
                w.name
            )
        })?;
        Ok(ops::rms_norm(x, &w.values, eps))
    }

    fn matmul(&mut self, x: &Mat, w: &CpuWeight) -> moetile::Result<Mat> {
        ensure(x.cols == w.cols() && w.experts() == 1, "matmul", || {
            format!("x has {} columns, {} is {:?}", x.cols, w.name, w.dims)
        })?;
        Ok(ops::matmul(x, w, 0))
    }

    fn project(
        &mut self,
        x: &Mat,
        norm: Option<PreNorm<'_, CpuWeight>>,
        ws: &[CpuWeight],
    ) -> moetile::Result<Mat> {
        let h = self.normed(x, norm)?;
        let parts = ws
            .iter()
            .map(|w| self.matmul(&h, w))
            .collect::<moetile::Result<Vec<_>>>()?;
        let cols = parts.iter().map(|m| m.cols).sum();
        let mut out = Mat::zeros(x.rows, cols);
        for t in 0..x.rows {
            let mut at = 0;
            for m in &parts {
                out.row_mut(t)[at..at + m.cols].copy_from_slice(m.row(t));
                at += m.cols;
            }
        }
        Ok(out)
    }

    fn add_bias(&mut self, x: &mut Mat, b: &CpuWeight) -> moetile::Result<()> {
        let b = vector("add_bias", b, x.cols)?;
        for row in x.data.chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(v, bi)| *v += bi);
        }
        Ok(())
    }

    fn attention(
        &mut self,
        qkv: &Mat,
        qk_norm: Option<[&CpuWeight; 2]>,
        kv: &mut CpuKvCache,
        layer: usize,
        pos0: usize,
        p: &AttentionParams,
    ) -> moetile::Result<Mat> {
        let q = rotate_and_store(qkv, qk_norm, kv, layer, pos0, p, &Yarn::NONE)?;
        Ok(attention::attend(&q, kv, layer, pos0, p, Span::default()))
    }

    fn add(&mut self, x: &mut Mat, y: &Mat) -> moetile::Result<()> {
        same_shape("add", x, y)?;
        x.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn swiglu(&mut self, gate: &Mat, up: &Mat) -> moetile::Result<Mat> {
        same_shape("swiglu", gate, up)?;
        let act = moetile::model::ExpertActivation::SwiGlu;
        let data = (gate.data.iter().zip(&up.data))
            .map(|(&g, &u)| ops::expert_activation(act, g as f64, u as f64) as f32)
            .collect();
        Ok(Mat {
            rows: gate.rows,
            cols: gate.cols,
            data,
        })
    }

    fn mul_sigmoid(&mut self, x: &mut Mat, g: &Mat) -> moetile::Result<()> {
        ensure(
            g.rows == x.rows && (g.cols == 1 || g.cols == x.cols),
            "mul_sigmoid",
            || {
                format!(
                    "gate ({}, {}) for x ({}, {})",
                    g.rows, g.cols, x.rows, x.cols
                )
            },
        )?;
        for (t, row) in x.data.chunks_exact_mut(x.cols).enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                let s = 1.0 / (1.0 + (-(g.row(t)[c.min(g.cols - 1)] as f64)).exp());
                *v = (*v as f64 * s) as f32;
            }
        }
        Ok(())
    }

    fn last_row(&mut self, x: &Mat) -> moetile::Result<Mat> {
        ensure(x.rows > 0, "last_row", || "empty activation".to_string())?;
        Ok(Mat {
            rows: 1,
            cols: x.cols,
            data: x.row(x.rows - 1).to_vec(),
        })
    }

    /// Per token, `deepseek4::hyper::pre`: the reference model's own step, on the streams widened to
    /// f64, its results rounded to f32.
    fn hc_pre(
        &mut self,
        streams: &Mat,
        w: HyperWeights<'_, CpuWeight>,
        p: &HyperParams,
    ) -> moetile::Result<(Mat, Mat)> {
        let d = streams.cols / HC_STREAMS;
        ensure(
            d > 0
                && streams.cols == HC_STREAMS * d
                && w.func.dims == [streams.cols, HC_MIXES]
                && p.sinkhorn_iterations > 0,
            "hc_pre",
            || {
                format!(
                    "streams ({}, {}), {} {:?} (expected [{}, {HC_MIXES}]), {} Sinkhorn passes",
                    streams.rows,
                    streams.cols,
                    w.func.name,
                    w.func.dims,
                    streams.cols,
                    p.sinkhorn_iterations
                )
            },
        )?;
        let view = HcView {
            func: w.func,
            scale: vector("hc_pre", w.scale, 3)?,
            base: vector("hc_pre", w.base, HC_MIXES)?,
        };
        let (mut input, mut mix) = (
            Mat::zeros(streams.rows, d),
            Mat::zeros(streams.rows, HC_MIXES),
        );
        for t in 0..streams.rows {
            let x = widen(streams.row(t));
            let m = hyper::pre(
                &x,
                view,
                p.rms_eps as f64,
                p.eps as f64,
                p.sinkhorn_iterations,
            );
            narrow_into(input.row_mut(t), &m.input);
            narrow_into(mix.row_mut(t), &m.coefs.values());
        }
        Ok((input, mix))
    }

    /// Per token, `deepseek4::hyper::expand`: the reference model's own step.
    fn hc_expand(&mut self, x: &Mat) -> moetile::Result<Mat> {
        let mut streams = Mat::zeros(x.rows, HC_STREAMS * x.cols);
        for t in 0..x.rows {
            narrow_into(streams.row_mut(t), &hyper::expand(x.row(t)));
        }
        Ok(streams)
    }

    /// Per token, `deepseek4::hyper::post` (the reference model's step) on the values widened to f64.
    fn hc_post(&mut self, streams: &mut Mat, out: &Mat, mix: &Mat) -> moetile::Result<()> {
        ensure(
            streams.cols == HC_STREAMS * out.cols
                && streams.rows == out.rows
                && (mix.rows, mix.cols) == (out.rows, HC_MIXES),
            "hc_post",
            || {
                format!(
                    "streams ({}, {}), output ({}, {}), mixing values ({}, {})",
                    streams.rows, streams.cols, out.rows, out.cols, mix.rows, mix.cols
                )
            },
        )?;
        for t in 0..out.rows {
            let values: [f64; HC_MIXES] = std::array::from_fn(|i| mix.row(t)[i] as f64);
            let new = hyper::post(
                &widen(out.row(t)),
                &widen(streams.row(t)),
                &Coefs::from_values(&values),
            );
            narrow_into(streams.row_mut(t), &new);
        }
        Ok(())
    }

    /// Per token, `deepseek4::hyper::head`: the reference model's own step, on the streams
    /// widened to f64, its result rounded to f32.
    fn hc_head(
        &mut self,
        streams: &Mat,
        w: HyperWeights<'_, CpuWeight>,
        p: &HyperParams,
    ) -> moetile::Result<Mat> {
        let d = streams.cols / HC_STREAMS;
        ensure(
            d > 0 && streams.cols == HC_STREAMS * d && w.func.dims == [streams.cols, HC_STREAMS],
            "hc_head",
            || {
                format!(
                    "streams ({}, {}), {} {:?} (expected [{}, {HC_STREAMS}])",
                    streams.rows, streams.cols, w.func.name, w.func.dims, streams.cols
                )
            },
        )?;
        let view = HcView {
            func: w.func,
            scale: vector("hc_head", w.scale, 1)?,
            base: vector("hc_head", w.base, HC_STREAMS)?,
        };
        let mut out = Mat::zeros(streams.rows, d);
        for t in 0..streams.rows {
            let y = hyper::head(&widen(streams.row(t)), view, p.rms_eps as f64, p.eps as f64);
            narrow_into(out.row_mut(t), &y);
        }
        Ok(out)
    }

    /// Per token, `deepseek4::attention::grouped_matvec`: the reference model's own step, on
    /// the row widened to f64, its result rounded to f32.
    fn grouped_matmul(&mut self, x: &Mat, w: &CpuWeight, groups: usize) -> moetile::Result<Mat> {
        ensure(
            groups > 0
                && w.experts() == 1
                && w.rows().is_multiple_of(groups)
                && x.cols == groups * w.cols(),
            "grouped_matmul",
            || {
                format!(
                    "x ({}, {}), {} {:?} in {groups} groups (expected [cols, rows] with rows a \
                     multiple of the groups, x groups x cols wide)",
                    x.rows, x.cols, w.name, w.dims
                )
            },
        )?;
        let mut out = Mat::zeros(x.rows, w.rows());
        for t in 0..x.rows {
            narrow_into(out.row_mut(t), &grouped_matvec(w, groups, &widen(x.row(t))));
        }
        Ok(out)
    }

    /// Per row, `deepseek4::compressor::pooled_row` (the reference model's step) on the projections
    /// widened to f64 (`Projected::new` adds the ape bias as the model does), rounded to f32.
    fn compressor_pool(
        &mut self,
        kv: &Mat,
        score: &Mat,
        w: PoolWeights<'_, CpuWeight>,
        p: &PoolParams,
    ) -> moetile::Result<Mat> {
        let coff = if p.overlap { 2 } else { 1 };
        let width = kv.cols / coff;
        let skip = usize::from(p.previous);
        let blocks = kv.rows.checked_div(p.ratio).unwrap_or(0);
        ensure(
            p.ratio > 0
                && width > 0
                && kv.cols == coff * width
                && (kv.rows, kv.cols) == (score.rows, score.cols)
                && kv.rows.is_multiple_of(p.ratio)
                && blocks > skip
                && (p.overlap || !p.previous)
                && w.ape.dims == [kv.cols, p.ratio],
            "compressor_pool",
            || {
                format!(
                    "kv ({}, {}), score ({}, {}), {} {:?}, ratio {}, overlap {}, previous {}: \
                     expected whole blocks (more than the previous one), equal shapes, \
                     ape [{}, ratio], a previous block only with overlap",
                    kv.rows,
                    kv.cols,
                    score.rows,
                    score.cols,
                    w.ape.name,
                    w.ape.dims,
                    p.ratio,
                    p.overlap,
                    p.previous,
                    kv.cols
                )
            },
        )?;
        let norm = vector("compressor_pool", w.norm, width)?;
        let tokens: Vec<Projected> = (0..kv.rows)
            .map(|t| {
                let ape = w.ape.row(0, t % p.ratio);
                Projected::new(widen(kv.row(t)), widen(score.row(t)), ape)
            })
            .collect();
        let blocks: Vec<&[Projected]> = tokens.chunks_exact(p.ratio).collect();
        let mut out = Mat::zeros(blocks.len() - skip, width);
        for (r, b) in (skip..blocks.len()).enumerate() {
            let previous = match b {
                0 => &[][..],
                _ if p.overlap => blocks[b - 1],
                _ => &[],
            };
            let row = compressor::pooled_row(previous, blocks[b], norm, p.rms_eps as f64);
            narrow_into(out.row_mut(r), &row);
        }
        Ok(out)
    }

    fn route(
        &mut self,
        logits: &Mat,
        selection: Selection<'_, CpuWeight>,
        p: &RouterParams,
    ) -> moetile::Result<CpuRouting> {
        let (k, n_experts) = (p.n_experts_used, logits.cols);
        ensure(k >= 1 && k <= n_experts, "route", || {
            format!("K = {k} of E = {n_experts}")
        })?;
        let given;
        let choice = match selection {
            Selection::TopK => ops::Choice::Top(None),
            Selection::Biased(bias) => ops::Choice::Top(Some(vector("route", bias, n_experts)?)),
            Selection::Hashed { table, tokens } => {
                ensure(tokens.len() == logits.rows, "route", || {
                    format!(
                        "{} token ids for {} rows of logits",
                        tokens.len(),
                        logits.rows
                    )
                })?;
                given = hashed_ids(table, tokens, n_experts, k)?;
                ops::Choice::Given(&given)
            }
        };
        let (ids, weights) = ops::route(logits, choice, p);
        Ok(CpuRouting {
            k: p.n_experts_used,
            n_experts: logits.cols,
            ids,
            weights,
        })
    }

    fn routing_from_host(
        &mut self,
        n_experts: usize,
        k: usize,
        ids: &[u32],
        weights: &[f32],
    ) -> moetile::Result<CpuRouting> {
        ensure(
            k > 0 && ids.len().is_multiple_of(k) && ids.len() == weights.len(),
            "routing_from_host",
            || format!("{} ids, {} weights, K = {k}", ids.len(), weights.len()),
        )?;
        if let Some(&bad) = ids.iter().find(|&&e| e as usize >= n_experts) {
            return Err(shape_error(
                "routing_from_host",
                format!("expert {bad} of {n_experts}"),
            ));
        }
        Ok(CpuRouting {
            k,
            n_experts,
            ids: ids.to_vec(),
            weights: weights.to_vec(),
        })
    }

    fn read_routing(&mut self, r: &CpuRouting) -> moetile::Result<(Vec<u32>, Vec<f32>)> {
        Ok((r.ids.clone(), r.weights.clone()))
    }

    fn moe(
        &mut self,
        x: &mut Mat,
        norm: Option<PreNorm<'_, CpuWeight>>,
        routing: &CpuRouting,
        experts: ExpertWeights<'_, CpuWeight>,
        p: &MoeParams,
    ) -> moetile::Result<()> {
        let y = self.moe_out(x, norm, routing, experts, p)?;
        self.add(x, &y)
    }

    fn moe_out(
        &mut self,
        x: &Mat,
        norm: Option<PreNorm<'_, CpuWeight>>,
        routing: &CpuRouting,
        experts: ExpertWeights<'_, CpuWeight>,
        p: &MoeParams,
    ) -> moetile::Result<Mat> {
        self.experts_out(x, norm, routing, experts, None, p)
    }

    fn runs_gptoss(&self) -> bool {
        true
    }

    fn gptoss_attention(
        &mut self,
        qkv: &Mat,
        sinks: &CpuWeight,
        kv: &mut CpuKvCache,
        layer: usize,
        pos0: usize,
        p: &GptOssAttentionParams,
    ) -> moetile::Result<Mat> {
        let sinks = vector("gptoss_attention sinks", sinks, p.attn.n_heads)?;
        let q = rotate_and_store(qkv, None, kv, layer, pos0, &p.attn, &p.yarn)?;
        let span = Span {
            window: p.window,
            sinks: Some(sinks),
        };
        Ok(attention::attend(&q, kv, layer, pos0, &p.attn, span))
    }

    fn moe_biased(
        &mut self,
        x: &mut Mat,
        norm: Option<PreNorm<'_, CpuWeight>>,
        routing: &CpuRouting,
        experts: ExpertWeights<'_, CpuWeight>,
        biases: &ExpertBiases<CpuWeight>,
        p: &MoeParams,
    ) -> moetile::Result<()> {
        let y = self.experts_out(x, norm, routing, experts, Some(biases), p)?;
        self.add(x, &y)
    }
}
