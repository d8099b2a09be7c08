//! The routed-MoE layer on the GPU: routing, the expert map, the grouped matmul (`mm_id`) and
//! mat-vec (`mv_id` and its fused forms `mv_glu`, `mv_sum`), the activation and the sum over K.
//!
//! gate and up are one `[D, 2F, E]` tensor of interleaved rows (row 2i gate row i, row 2i + 1
//! up row i) when they share type and shape ([`GateUp::Interleaved`], made by
//! [`WgpuContext::upload_gate_up`]); then one matmul computes both, each (gate, up) pair of
//! outputs adjacent. Prefill (tiled), interleaved:
//! ```text
//! map:     ids (T, K) -> spans, expert-major pair list, work list of token tiles, dispatch args
//! gate_up: gu (T*K, 2F) = mm_id(W_gate_up, x (T, D), row of pair p = p / K)
//! act:     mid (T*K, F) = act(gu[:, 2i], gu[:, 2i + 1]) * route_weight   (f16 with SHADER_F16)
//! down:    y (T*K, D) = mm_id(W_down, mid, row of pair p = p)
//! sum:     out (T, D) = sum_k y[t*K + k]
//! ```
//! (separate gate and up: two matmuls, `gate` and `up`, and `act` over both). Decode (the
//! mat-vec path, no map), interleaved, two dispatches:
//! ```text
//! gate_up_act: mid (T*K, F) = mv_glu(W_gate_up, x): act(gate . x, up . x) * route_weight
//! down_sum:    out (T, D) = mv_sum(W_down, mid): sum_k W_down[e(t, k)] @ mid[t*K + k]
//! ```
//! (separate gate and up: `mv_id` x 2 + `act`; a `down` split over several weight chunks:
//! `mv_id` + `sum`, since a workgroup's K pairs may lie in different chunks). [`MoePlan`]
//! says which kernels a batch runs; the profiler labels each with the sub-stage names above.
//!
//! The map is built once per layer for one tile width and reused by the matmuls. A
//! matmul's grid comes only from its key and the map: x = the map's work items (indirect),
//! y = `key.row_groups(rows)`; a map of another width is refused ([`WgpuError::TileMismatch`]).
//! A mat-vec's grid is `key.mat_vec_grid`: row tiles by pairs (tokens for `mv_sum`).
//!
//! Dense projections are the one-expert case: `ExpertMap::dense` lists the batch's tokens for
//! expert 0 on the host (its work-item count is known, so its matmuls dispatch directly), and
//! `Routing::dense` routes every token to expert 0 with weight 1 for `mv_id` and `act`. A
//! dense weight too large for one binding is several experts of whole rows
//! ([`ExpertTensor::slices`]); its maps and routings send every token to each of them.
//!
//! [`WgpuError::TileMismatch`]: crate::WgpuError::TileMismatch

mod act;
mod map;
mod matmul;
mod routing;

pub use act::{act, sum};
pub use map::{ExpertMap, MapContents, map};
pub use matmul::{Matmul, MvExtras, RowNorm, mm_id, mv_glu, mv_id, mv_sum};
pub use routing::Routing;

use moetile::model::{ExpertActivation, ExpertBiases, ExpertWeights, GateUp, MoeParams};
use moetile::tile::TileWidth;
use moetile_codegen::{ActType, KernelKey, MatmulKey, Path};

use crate::adapter::Profile;
use crate::buffers::{Buffers, GpuMatrix};
use crate::context::WgpuContext;
use crate::error::{Result, shape};
use crate::layout::ExpertTensor;
use crate::recorder::Recorder;

/// The largest batch that runs the mat-vec kernels by default on a device of `profile` whose
/// grouped matmuls use `path`.
///
/// GPUs, measured on the H100 (Qwen3-30B-A3B expert shape, `bench/crossover-h100.csv`): the
/// mat-vec costs ~9 us per token; map + cooperative mm_id ~55 us at T = 1, ~0.25 ms at T = 24
/// and ~0.28 ms at T = 32, so they meet at T = 24 (q4_K: mat-vec 15% faster there, iq2_xxs: 4%
/// slower) to 32. The register-tile mm_id is 2-4x slower at small T, so the mat-vec wins up to
/// T = 32 (iq2_xxs) to beyond 64 (q4_K).
///
/// CPU adapters (`bench/crossover-lavapipe.csv`): one mat-vec workgroup row per (pair, row
/// group) is pure overhead on lavapipe's threads, so the tiled matmul wins from T = 1 (map +
/// mm_id 1.2 ms against 2.0 ms) and the mat-vec is never the default.
pub fn mat_vec_max_tokens(profile: &Profile, path: Path) -> usize {
    if profile.is_cpu() {
        return 0;
    }
    match path {
        Path::Reg => 32,
        Path::Coop16 | Path::Coop8 => 24,
    }
}

/// How [`layer`] runs a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeOptions {
    /// The activation between up/gate and down.
    pub activation: ExpertActivation,
    /// Token-tile width of the grouped matmuls.
    pub tile: TileWidth,
    /// Matmul path.
    pub path: Path,
    /// Storage type of `mid`, the input of `down`.
    pub mid: ActType,
    /// Run the mat-vec kernels (no map, no tiles) instead of the grouped matmuls.
    pub mat_vec: bool,
    /// Add the result to what `out` holds (the residual stream) instead of storing it: the
    /// fused mat-vec plan only ([`MoePlan::fused_ends`]).
    pub accumulate: bool,
    /// Mat-vecs quantize their activations to int8 where the weight type allows (see
    /// [`MvExtras::int8`]).
    pub int8: bool,
}

impl MoeOptions {
    /// The defaults for a batch of `n_tokens` on `ctx`: the tile `p` asks for, the fastest path
    /// the device runs, f16 `mid` with `SHADER_F16`, mat-vec for at most
    /// [`mat_vec_max_tokens`] tokens, int8 mat-vec activations.
    pub fn new(ctx: &WgpuContext, p: &MoeParams, n_tokens: usize) -> MoeOptions {
        let path = ctx.profile().best_path();
        MoeOptions {
            activation: p.activation,
            tile: p.tile,
            path,
            mid: if ctx.profile().shader_f16 {
                ActType::F16
            } else {
                ActType::F32
            },
            mat_vec: n_tokens <= mat_vec_max_tokens(ctx.profile(), path),
            accumulate: false,
            int8: true,
        }
    }
}

/// The inputs of one routed-MoE layer: `x (T, D)`, its routing and the experts.
#[derive(Debug)]
pub struct MoeInputs<'a> {
    /// `(T, D)` activations.
    pub x: &'a GpuMatrix,
    /// An RMS norm of x's rows applied as they are read: the fused mat-vec plan only
    /// ([`MoePlan::fused_ends`]).
    pub norm: Option<RowNorm<'a>>,
    /// T tokens to K of E experts.
    pub routing: &'a Routing,
    /// gate and up `[D, F, E]` (or one `[D, 2F, E]` interleaved), down `[F, D, E]`.
    pub experts: ExpertWeights<'a, ExpertTensor>,
    /// Per-expert biases (gpt-oss), F32 `(E, F)` for gate and up, `(E, D)` for down: added by
    /// the fused mat-vecs' epilogues (`mv_glu`, `mv_sum`), else by `act` and `sum`.
    pub biases: Option<&'a ExpertBiases<ExpertTensor>>,
}

impl MoeInputs<'_> {
    /// F, checked against the other shapes.
    fn expert_width(&self) -> Result<usize> {
        let (x, routing, down) = (self.x, self.routing, self.experts.down);
        let (f, gate_up_ok, gate_up) = match self.experts.gate_up {
            GateUp::Separate { gate, up } => (
                gate.rows,
                (gate.rows, gate.cols, gate.experts) == (up.rows, up.cols, up.experts)
                    && gate.cols == x.cols,
                format!(
                    "gate {}x{}, up {}x{}",
                    gate.rows, gate.cols, up.rows, up.cols
                ),
            ),
            GateUp::Interleaved(w) => (
                w.rows / 2,
                w.rows.is_multiple_of(2) && w.cols == x.cols,
                format!("interleaved gate/up {}x{}", w.rows, w.cols),
            ),
        };
        if x.rows != routing.n_tokens || !gate_up_ok || down.cols != f || down.rows != x.cols {
            return Err(shape(
                "moe",
                format!(
                    "x {}x{} with {} routed tokens, {gate_up}, down {}x{}",
                    x.rows, x.cols, routing.n_tokens, down.rows, down.cols
                ),
            ));
        }
        Ok(f)
    }
}

/// Which kernels [`layer`] records for a batch (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoePlan {
    /// Mat-vec kernels rather than the map and grouped matmuls.
    pub mat_vec: bool,
    /// gate, up, the activation and the route weight in one mat-vec (`mv_glu`): the mat-vec
    /// path over gate/up weights of interleaved rows.
    pub glu: bool,
    /// down and the sum over K in one mat-vec (`mv_sum`): the mat-vec path over a `down` held
    /// in one weight chunk.
    pub sum: bool,
}

impl MoePlan {
    /// The plan of `inputs` under `opts`.
    pub fn new(inputs: &MoeInputs<'_>, opts: &MoeOptions) -> MoePlan {
        let mat_vec = opts.mat_vec;
        MoePlan {
            mat_vec,
            glu: mat_vec && matches!(inputs.experts.gate_up, GateUp::Interleaved(_)),
            sum: mat_vec && inputs.experts.down.chunks.len() == 1,
        }
    }

    /// Whether x's norm and the add into `out` can be folded into the layer's kernels: the
    /// fused mat-vecs, `mv_glu` reading x and `mv_sum` writing `out`.
    pub fn fused_ends(&self) -> bool {
        self.glu && self.sum
    }
}

/// The intermediate matrices of one MoE layer evaluation: what its [`MoePlan`] needs.
#[derive(Debug)]
pub struct MoeBuffers {
    /// The gate and up outputs, f32: (T*K, F) each, or one (T*K, 2F) of interleaved columns
    /// as the weights are; none when `mv_glu` computes `mid` directly.
    pub gate_up: Option<GateUp<GpuMatrix>>,
    /// (T*K, F), f32 or f16: the activation times the route weight, the input of down.
    pub mid: GpuMatrix,
    /// (T*K, D) f32: down's output per pair; none when `mv_sum` sums over K itself.
    pub y: Option<GpuMatrix>,
}

impl MoeBuffers {
    /// Intermediates of `inputs`' layer under `opts`.
    pub fn new(
        buffers: &Buffers<'_>,
        inputs: &MoeInputs<'_>,
        opts: &MoeOptions,
    ) -> Result<MoeBuffers> {
        let plan = MoePlan::new(inputs, opts);
        let pairs = inputs.routing.n_pairs();
        let (d, f) = (inputs.x.cols, inputs.expert_width()?);
        let f32_matrix = |cols, label| buffers.matrix(pairs, cols, ActType::F32, label);
        let gate_up = match (plan.glu, inputs.experts.gate_up) {
            (true, _) => None,
            (false, GateUp::Separate { .. }) => Some(GateUp::Separate {
                gate: f32_matrix(f, "moe gate")?,
                up: f32_matrix(f, "moe up")?,
            }),
            (false, GateUp::Interleaved(_)) => {
                Some(GateUp::Interleaved(f32_matrix(2 * f, "moe gate_up")?))
            }
        };
        Ok(MoeBuffers {
            gate_up,
            mid: buffers.matrix(pairs, f, opts.mid, "moe mid")?,
            y: if plan.sum {
                None
            } else {
                Some(f32_matrix(d, "moe y")?)
            },
        })
    }

    /// Every intermediate (to poison them).
    pub fn all(&self) -> Vec<&GpuMatrix> {
        let gate_up = match &self.gate_up {
            Some(GateUp::Separate { gate, up }) => vec![gate, up],
            Some(GateUp::Interleaved(gu)) => vec![gu],
            None => vec![],
        };
        gate_up
            .into_iter()
            .chain([&self.mid])
            .chain(&self.y)
            .collect()
    }
}

/// Records the whole routed-MoE layer: `out (T, D)` from `inputs`, through `bufs` (made by
/// [`MoeBuffers::new`] for the same inputs and options).
pub fn layer(
    rec: &mut Recorder<'_>,
    inputs: &MoeInputs<'_>,
    opts: &MoeOptions,
    bufs: &MoeBuffers,
    out: &GpuMatrix,
) -> Result<()> {
    let MoeInputs {
        x, routing, norm, ..
    } = *inputs;
    let ExpertWeights { gate_up, down } = inputs.experts;
    let k = routing.n_used;
    inputs.expert_width()?;
    let plan = MoePlan::new(inputs, opts);
    if (norm.is_some() || opts.accumulate) && !plan.fused_ends() {
        return Err(shape(
            "moe",
            format!(
                "a folded norm or residual add needs the fused mat-vec plan, not {plan:?}: \
                 norm x and add the output around the layer"
            ),
        ));
    }
    let missing = |what: &str| {
        shape(
            "moe",
            format!("the buffers lack {what}: make them with MoeBuffers::new for these options"),
        )
    };
    if bufs.mid.ty != opts.mid {
        return Err(shape(
            "moe",
            format!(
                "mid buffer is {:?}, options ask {:?}",
                bufs.mid.ty, opts.mid
            ),
        ));
    }
    let key = |w: &ExpertTensor, act: ActType| MatmulKey {
        weight: w.weight,
        act,
        tile: opts.tile,
        path: opts.path,
    };
    // gate and up share their row count, so one of them stands for both here.
    let (gate_or_merged, up) = match gate_up {
        GateUp::Separate { gate, up } => (gate, Some(up)),
        GateUp::Interleaved(w) => (w, None),
    };
    let map = if plan.mat_vec {
        None
    } else {
        let row_groups: Vec<u32> = [(gate_or_merged, x.ty), (down, opts.mid)]
            .iter()
            .filter_map(|&(w, act)| KernelKey::MmId(key(w, act)).row_groups(w.rows as u32))
            .collect();
        rec.set_detail("map");
        Some(map(rec, routing, opts.tile, &row_groups)?)
    };
    // `out (pairs, rows) = w @ act`: grouped over the map, or mat-vec over the routing.
    let matmul = |rec: &mut Recorder<'_>, mm: Matmul<'_>| match &map {
        Some(map) => mm_id(rec, key(mm.w, mm.act.ty), map, mm),
        None => mv_id(
            rec,
            routing,
            mm,
            MvExtras {
                int8: opts.int8,
                ..MvExtras::default()
            },
        ),
    };
    let x_times = |w, out| Matmul {
        w,
        act: x,
        act_row_div: k,
        out,
        out_col: 0,
    };
    if plan.glu {
        rec.set_detail("gate_up_act");
        mv_glu(
            rec,
            routing,
            x_times(gate_or_merged, &bufs.mid),
            opts.activation,
            norm,
            opts.int8,
            inputs.biases,
        )?;
    } else {
        let gu_out = bufs
            .gate_up
            .as_ref()
            .ok_or_else(|| missing("gate/up outputs"))?;
        match (up, gu_out) {
            (Some(up), GateUp::Separate { gate: g, up: u }) => {
                rec.set_detail("gate");
                matmul(rec, x_times(gate_or_merged, g))?;
                rec.set_detail("up");
                matmul(rec, x_times(up, u))?;
            }
            (None, GateUp::Interleaved(gu)) => {
                rec.set_detail("gate_up");
                matmul(rec, x_times(gate_or_merged, gu))?;
            }
            _ => return Err(missing("gate/up outputs of the weights' form")),
        }
        rec.set_detail("act");
        let activation = opts.activation;
        act(
            rec,
            gu_out.as_ref(),
            routing,
            activation,
            inputs.biases,
            &bufs.mid,
        )?;
    }
    let mid_times = |out| Matmul {
        w: down,
        act: &bufs.mid,
        act_row_div: 1,
        out,
        out_col: 0,
    };
    if plan.sum {
        rec.set_detail("down_sum");
        let down_bias = inputs.biases.map(|b| &b.down);
        mv_sum(
            rec,
            routing,
            mid_times(out),
            opts.accumulate,
            opts.int8,
            down_bias,
        )?;
    } else {
        let y = bufs.y.as_ref().ok_or_else(|| missing("down's outputs"))?;
        rec.set_detail("down");
        matmul(rec, mid_times(y))?;
        rec.set_detail("sum");
        sum(rec, y, routing, inputs.biases.map(|b| &b.down), out)?;
    }
    rec.set_detail("");
    Ok(())
}

/// The routed-MoE layer alone (see the module docs): allocates its intermediates and output,
/// records and submits. `out (T, D) = sum_k w[t,k] * down[e] @ act(gate[e] @ x[t],
/// up[e] @ x[t])`.
pub fn run(ctx: &WgpuContext, inputs: &MoeInputs<'_>, opts: &MoeOptions) -> Result<GpuMatrix> {
    let bufs = MoeBuffers::new(&ctx.buffers(), inputs, opts)?;
    let out = ctx
        .buffers()
        .matrix(inputs.x.rows, inputs.x.cols, ActType::F32, "moe out")?;
    ctx.record("moe", |rec| layer(rec, inputs, opts, &bufs, &out))?;
    Ok(out)
}
