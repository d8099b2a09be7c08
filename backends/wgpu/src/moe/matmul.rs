//! The grouped matmul (`mm_id`, over an [`ExpertMap`]) and mat-vec (`mv_id`, over a
//! [`Routing`]): `out (P, rows) = W[e(p)] @ act[p / act_row_div]` for every pair p; and the
//! mat-vec's fused specializations `mv_glu` (gate, up and the activation) and `mv_sum` (down
//! and the sum over K).

use moetile::model::{ExpertActivation, ExpertBiases};
use moetile_codegen::params::MatmulParams;
use moetile_codegen::{ActType, KernelKey, MatmulKey, MvEpilogue};

use crate::buffers::GpuMatrix;
use crate::dispatch::Grid;
use crate::encoder::ParamSlot;
use crate::error::{Result, WgpuError, shape};
use crate::layout::ExpertTensor;
use crate::moe::act::{Glu, bias_rows};
use crate::moe::{ExpertMap, Routing};
use crate::recorder::Recorder;

/// The operands of a grouped matmul or mat-vec: weights, activations (one row per
/// `act_row_div` pairs: K for gate and up, which read each token's row once per expert, 1 for
/// down) and the f32 output, one row per pair.
#[derive(Debug, Clone, Copy)]
pub struct Matmul<'a> {
    /// `[cols, rows, experts]` weights.
    pub w: &'a ExpertTensor,
    /// Activations: rows of `w.cols` values, or rows of several such rows side by side, read
    /// as consecutive rows (a token's groups in `Backend::grouped_matmul`: the kernels index
    /// activation rows by `w.cols` alone).
    pub act: &'a GpuMatrix,
    /// Pairs per activation row.
    pub act_row_div: usize,
    /// f32: `(pairs, w.rows)`, or for [`mm_id`] and [`mv_id`] one row per activation row
    /// holding its pairs' rows side by side from column `out_col` (one weight of several
    /// stacked by rows, `Backend::matmul_stacked`).
    pub out: &'a GpuMatrix,
    /// The first column of this weight's rows in an output row (0 but for a stacked weight).
    pub out_col: usize,
}

/// Records `mm.out = W[e(p)] @ act[p / act_row_div]` for every pair p of `map` with kernel
/// `key`: one workgroup per (work item, row tile), once per weight chunk.
pub fn mm_id(
    rec: &mut Recorder<'_>,
    key: MatmulKey,
    map: &ExpertMap,
    mm: Matmul<'_>,
) -> Result<()> {
    let kkey = KernelKey::MmId(key);
    if let Err(why) = rec.profile().supports(key.path) {
        return Err(WgpuError::MissingFeature {
            adapter: rec.profile().describe(),
            what: kkey.to_string(),
            feature: why,
            fix: "use the register-tile path (Path::Reg), which runs everywhere",
        });
    }
    let grid = map.grid(&kkey, mm.w.rows)?;
    if mm.w.weight != key.weight || mm.act.ty != key.act {
        return Err(shape(
            kkey,
            format!(
                "given {} weights and {:?} activations",
                mm.w.weight, mm.act.ty
            ),
        ));
    }
    mm.check_inputs(&kkey, map.n_pairs, "map", map.n_experts)?;
    let stride = mm.rows_out_stride(&kkey, map.n_pairs)?;
    let params = mm.chunk_params(rec, map.n_pairs, 1, stride, Epilogue::default());
    let rest = [
        ("experts", map.experts.as_entire_binding()),
        ("list", map.list.as_entire_binding()),
        ("items", map.items.as_entire_binding()),
        ("y", mm.out.buffer.as_entire_binding()),
    ];
    let sets = mm.chunk_bindings(&params, &rest);
    rec.dispatch_each(&kkey, &sets, grid)
}

/// An RMS norm of the activation rows a mat-vec applies as it reads them: `x / sqrt(mean(x^2)
/// + eps) * weight` (the norm before a layer's projections, folded into them).
#[derive(Debug, Clone, Copy)]
pub struct RowNorm<'a> {
    /// f32, one per activation column.
    pub weight: &'a wgpu::Buffer,
    /// Added to the mean square.
    pub eps: f32,
}

/// What [`mv_id`] does besides the product.
#[derive(Debug, Clone, Copy, Default)]
pub struct MvExtras<'a> {
    /// Norm each f32 activation row as it is read.
    pub norm: Option<RowNorm<'a>>,
    /// Add the outputs to what the output holds (a residual stream) instead of storing them.
    pub accumulate: bool,
    /// Quantize the activations to int8 and multiply by integer dot products where the weight
    /// type has that kernel (see [`KernelKey::MvId`]); f32 otherwise.
    pub int8: bool,
}

/// The mat-vec form of [`mm_id`]: one workgroup per (row tile, pair) of `routing`, no map.
pub fn mv_id(
    rec: &mut Recorder<'_>,
    routing: &Routing,
    mm: Matmul<'_>,
    extras: MvExtras<'_>,
) -> Result<()> {
    let extra = Epilogue {
        norm: extras.norm,
        accumulate: extras.accumulate,
        int8: extras.int8,
        ..Epilogue::default()
    };
    mat_vec(rec, routing, mm, MvEpilogue::Rows, extra)
}

/// gate, up and the activation in one mat-vec over a gate/up tensor of interleaved rows
/// (`mm.w`, `[D, 2F, E]`): `mm.out (T*K, F) = activation(gate . x, up . x) * route_weight`,
/// stored as `mm.out`'s type (`mv_glu`). `mm.act` is x, one row per K pairs, normed by `norm`
/// as it is read when given; `int8` as in [`MvExtras`]. With `biases` (gpt-oss), each pair's
/// gate and up outputs get its expert's `biases.gate` and `biases.up` rows before the
/// activation (`biases.down` is [`mv_sum`]'s).
pub fn mv_glu(
    rec: &mut Recorder<'_>,
    routing: &Routing,
    mm: Matmul<'_>,
    activation: ExpertActivation,
    norm: Option<RowNorm<'_>>,
    int8: bool,
    biases: Option<&ExpertBiases<ExpertTensor>>,
) -> Result<()> {
    let epilogue = Epilogue {
        glu: Glu::of(activation),
        norm,
        accumulate: false,
        int8,
        bias: biases.map(|b| MvBias::Glu {
            gate: &b.gate,
            up: &b.up,
        }),
    };
    mat_vec(
        rec,
        routing,
        mm,
        MvEpilogue::Glu { mid: mm.out.ty },
        epilogue,
    )
}

/// down and the sum over K in one mat-vec: `mm.out (T, D) = sum_k W[e(t, k)] @ act[t*K + k]`
/// (`mv_sum`); `mm.act` is `mid`, one row per pair. `mm.w` must be one weight chunk. With
/// `accumulate`, the sum is added to what `mm.out` holds (the residual stream); `int8` as in
/// [`MvExtras`]. With `down_bias` (gpt-oss, `(E, D)`), each pair adds its expert's row times
/// its route weight (`mid` holds the route weight already).
pub fn mv_sum(
    rec: &mut Recorder<'_>,
    routing: &Routing,
    mm: Matmul<'_>,
    accumulate: bool,
    int8: bool,
    down_bias: Option<&ExpertTensor>,
) -> Result<()> {
    let extra = Epilogue {
        accumulate,
        int8,
        bias: down_bias.map(MvBias::Sum),
        ..Epilogue::default()
    };
    mat_vec(rec, routing, mm, MvEpilogue::Sum, extra)
}

/// What a mat-vec reads besides the matmul's shape (K comes from the routing).
#[derive(Debug, Clone, Copy, Default)]
struct Epilogue<'a> {
    glu: Glu,
    norm: Option<RowNorm<'a>>,
    accumulate: bool,
    int8: bool,
    bias: Option<MvBias<'a>>,
}

/// Per-expert biases (F32 `(E, cols)` matrices) a fused mat-vec adds.
#[derive(Debug, Clone, Copy)]
enum MvBias<'a> {
    /// `mv_glu`'s, to the gate and up outputs.
    Glu {
        gate: &'a ExpertTensor,
        up: &'a ExpertTensor,
    },
    /// `mv_sum`'s, to each pair's down output.
    Sum(&'a ExpertTensor),
}

/// Records the mat-vec of `epilogue` (see `wgsl/mv_id.wgsl`), once per weight chunk.
fn mat_vec(
    rec: &mut Recorder<'_>,
    routing: &Routing,
    mm: Matmul<'_>,
    epilogue: MvEpilogue,
    extra: Epilogue<'_>,
) -> Result<()> {
    let key = KernelKey::MvId {
        weight: mm.w.weight,
        act: mm.act.ty,
        epilogue,
        norm: extra.norm.is_some(),
        int8: mm.w.weight.mat_vec_int8(extra.int8),
        biased: extra.bias.is_some(),
    };
    let (n_pairs, k) = (routing.n_pairs(), routing.n_used);
    mm.check_inputs(&key, n_pairs, "routing", routing.n_experts)?;
    let stride = match epilogue {
        MvEpilogue::Rows => mm.rows_out_stride(&key, n_pairs)?,
        MvEpilogue::Glu { mid } => mm.check_out(&key, n_pairs, mm.w.rows / 2, mid)?,
        MvEpilogue::Sum => mm.check_out(&key, routing.n_tokens, mm.w.rows, ActType::F32)?,
    };
    match epilogue {
        MvEpilogue::Glu { .. } if !mm.w.rows.is_multiple_of(4) => {
            return Err(shape(
                key,
                format!(
                    "{} has {} interleaved gate/up rows: F must be even",
                    mm.w.name, mm.w.rows
                ),
            ));
        }
        _ if extra.norm.is_some()
            && (mm.act.ty != ActType::F32 || matches!(epilogue, MvEpilogue::Sum)) =>
        {
            return Err(shape(
                key,
                format!(
                    "an RMS-normed input needs f32 activations (given {:?}) and a rows or glu \
                     epilogue",
                    mm.act.ty
                ),
            ));
        }
        MvEpilogue::Sum if mm.w.chunks.len() != 1 || mm.act_row_div != 1 => {
            return Err(shape(
                key,
                format!(
                    "{} is {} weight chunks with {} pairs per activation row; the sum over K \
                     needs one chunk and one row per pair (use mv_id and sum)",
                    mm.w.name,
                    mm.w.chunks.len(),
                    mm.act_row_div
                ),
            ));
        }
        _ => {}
    }
    let (x, y) = key
        .mat_vec_grid(mm.w.rows as u32, n_pairs as u32, k as u32)
        .expect("a mat-vec key has a mat-vec grid");
    let params = mm.chunk_params(rec, n_pairs, k, stride, extra);
    let out = mm.out.buffer.as_entire_binding();
    let mut rest = match epilogue {
        MvEpilogue::Rows => vec![("ids", routing.ids.as_entire_binding()), ("y", out)],
        MvEpilogue::Glu { .. } => vec![
            ("ids", routing.ids.as_entire_binding()),
            ("mid", out),
            ("route", routing.weights.as_entire_binding()),
        ],
        MvEpilogue::Sum => vec![("ids", routing.ids.as_entire_binding()), ("out", out)],
    };
    if let Some(norm) = extra.norm {
        // The prologue norms each activation row of `w.cols`, not each row of a wider `act`.
        if norm.weight.size() < (mm.w.cols * 4) as u64 || mm.act.cols != mm.w.cols {
            return Err(shape(
                key,
                format!(
                    "norm weights of {} bytes for rows of {} values ({} in a row of act)",
                    norm.weight.size(),
                    mm.w.cols,
                    mm.act.cols
                ),
            ));
        }
        rest.push(("norm_w", norm.weight.as_entire_binding()));
    }
    match (extra.bias, epilogue) {
        (None, _) => {}
        (Some(MvBias::Glu { gate, up }), MvEpilogue::Glu { .. }) => {
            let f = mm.w.rows / 2;
            rest.push((
                "gate_bias",
                bias_rows(&key, gate, routing, f)?.as_entire_binding(),
            ));
            rest.push((
                "up_bias",
                bias_rows(&key, up, routing, f)?.as_entire_binding(),
            ));
        }
        (Some(MvBias::Sum(down)), MvEpilogue::Sum) => {
            let rows = bias_rows(&key, down, routing, mm.w.rows)?;
            rest.push(("route", routing.weights.as_entire_binding()));
            rest.push(("down_bias", rows.as_entire_binding()));
        }
        (Some(_), _) => unreachable!("mv_glu and mv_sum pass their own epilogue's biases"),
    }
    let sets = mm.chunk_bindings(&params, &rest);
    rec.dispatch_each(&key, &sets, Grid::Groups(x, y))
}

impl<'a> Matmul<'a> {
    /// Checks the weights and activations of `key` for `n_pairs` pairs routed by `source` (a
    /// map or a routing) over `n_experts` experts, as many as `w` must have.
    fn check_inputs(
        &self,
        key: &KernelKey,
        n_pairs: usize,
        source: &str,
        n_experts: usize,
    ) -> Result<()> {
        let Matmul {
            w,
            act,
            act_row_div,
            ..
        } = *self;
        if !w.cols.is_multiple_of(32) || w.cols == 0 || !act.cols.is_multiple_of(w.cols) {
            return Err(shape(
                key,
                format!(
                    "{} is {} x {} (cols must be a multiple of 32), activations have {} cols",
                    w.name, w.rows, w.cols, act.cols
                ),
            ));
        }
        let act_rows = act.rows * (act.cols / w.cols);
        if act_row_div == 0 || act_rows * act_row_div != n_pairs {
            return Err(shape(
                key,
                format!(
                    "{n_pairs} pairs need {} activation rows of {} (one per {act_row_div} \
                     pairs); given {act_rows}",
                    n_pairs / act_row_div.max(1),
                    w.cols,
                ),
            ));
        }
        if n_experts != w.experts {
            return Err(shape(
                key,
                format!(
                    "{source} over {n_experts} experts, {} has {}",
                    w.name, w.experts
                ),
            ));
        }
        Ok(())
    }

    /// Checks that the output is `rows x cols` of `ty` (at column 0); returns its stride per
    /// activation row.
    fn check_out(&self, key: &KernelKey, rows: usize, cols: usize, ty: ActType) -> Result<u32> {
        let out = self.out;
        if (out.rows, out.cols, out.ty, self.out_col) != (rows, cols, ty, 0) {
            return Err(shape(
                key,
                format!(
                    "the output is {} x {} {:?}, {} x {} {ty:?} expected for {}",
                    out.rows, out.cols, out.ty, rows, cols, self.w.name
                ),
            ));
        }
        Ok((self.act_row_div * self.w.rows) as u32)
    }

    /// Checks the f32 output of a plain matmul of `n_pairs` pairs: one row per pair, or one
    /// row per activation row with room for this weight's pairs from `out_col`. Returns the
    /// output's values per activation row (`out_stride`).
    fn rows_out_stride(&self, key: &KernelKey, n_pairs: usize) -> Result<u32> {
        let (out, div) = (self.out, self.act_row_div);
        let act_rows = n_pairs / div;
        let stride = if out.rows == n_pairs && self.out_col == 0 {
            div * out.cols
        } else {
            out.cols
        };
        let fits = out.ty == ActType::F32
            && (out.rows == n_pairs || out.rows == act_rows)
            && out.rows * out.cols == act_rows * stride
            && self.out_col + div * self.w.rows <= stride;
        if !fits {
            return Err(shape(
                key,
                format!(
                    "the output is {} x {} {:?}; {n_pairs} pairs of {} rows of {} at column {} \
                     do not fit",
                    out.rows, out.cols, out.ty, self.w.rows, self.w.name, self.out_col
                ),
            ));
        }
        u32::try_from(stride).map_err(|_| shape(key, "output too wide".into()))
    }

    /// The parameters of the matmul over each weight chunk of `w`, in order.
    fn chunk_params(
        &self,
        rec: &mut Recorder<'_>,
        n_pairs: usize,
        n_used: usize,
        out_stride: u32,
        extra: Epilogue<'_>,
    ) -> Vec<ParamSlot> {
        let w = self.w;
        w.chunks
            .iter()
            .map(|chunk| {
                rec.params(&MatmulParams {
                    n_rows: w.rows as u32,
                    n_cols: w.cols as u32,
                    act_row_div: self.act_row_div as u32,
                    expert_base: chunk.expert_base,
                    expert_count: chunk.expert_count,
                    n_pairs: n_pairs as u32,
                    n_used: n_used as u32,
                    clamp: extra.glu.mode,
                    limit: extra.glu.limit,
                    out_stride,
                    out_col: self.out_col as u32,
                    norm_eps: extra.norm.map_or(0.0, |n| n.eps),
                    accumulate: extra.accumulate as u32,
                    alpha: extra.glu.alpha,
                    _pad1: 0,
                    _pad2: 0,
                })
            })
            .collect()
    }

    /// Per weight chunk of `w` (with its `params`): the bindings of `wgsl/matmul.wgsl`
    /// (params, weights, act), then the kernel's own `rest`.
    fn chunk_bindings<'b>(
        &self,
        params: &'b [ParamSlot],
        rest: &[(&'b str, wgpu::BindingResource<'b>)],
    ) -> Vec<Vec<(&'b str, wgpu::BindingResource<'b>)>>
    where
        'a: 'b,
    {
        self.w
            .chunks
            .iter()
            .zip(params)
            .map(|(chunk, params)| {
                let shared = [
                    ("params", params.binding()),
                    ("weights", chunk.buffer.as_entire_binding()),
                    ("act", self.act.buffer.as_entire_binding()),
                ];
                shared.into_iter().chain(rest.iter().cloned()).collect()
            })
            .collect()
    }
}
