//! The routed-MoE layer on the GPU: routing, the expert map, the grouped matmul (`mm_id`) and
//! mat-vec (`mv_id`), the activation and the sum over K.
//!
//! ```text
//! map:  ids (T, K) -> spans, expert-major pair list, work list of token tiles, dispatch args
//! gate: g (T*K, F) = mm_id(W_gate, x (T, D), row of pair p = p / K)
//! up:   u (T*K, F) = mm_id(W_up, x)
//! act:  mid (T*K, F) = act(g, u) * route_weight   (f16 when the device has SHADER_F16)
//! down: y (T*K, D) = mm_id(W_down, mid, row of pair p = p)
//! sum:  out (T, D) = sum_k y[t*K + k]
//! ```
//! The map is built once per layer for one tile width and reused by the three matmuls. A
//! matmul's grid comes only from its key and the map: x = the map's work items (indirect),
//! y = `key.row_groups(rows)`; a map of another width is refused ([`WgpuError::TileMismatch`]).
//! Small batches skip the map and run `mv_id`, one workgroup row per pair.
//!
//! Dense projections are the one-expert case: [`ExpertMap::dense`] lists the batch's tokens for
//! expert 0 on the host (its work-item count is known, so its matmuls dispatch directly), and
//! [`Routing::dense`] routes every token to expert 0 with weight 1 for `mv_id` and `act`. A
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
pub use matmul::{Matmul, mm_id, mv_id};
pub use routing::Routing;

use moetile::model::{ExpertActivation, ExpertWeights, MoeParams};
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
}

impl MoeOptions {
    /// The defaults for a batch of `n_tokens` on `ctx`: the tile `p` asks for, the fastest path
    /// the device runs, f16 `mid` with `SHADER_F16`, mat-vec for at most
    /// [`mat_vec_max_tokens`] tokens.
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
        }
    }
}

/// The inputs of one routed-MoE layer: `x (T, D)`, its routing and the experts.
#[derive(Debug)]
pub struct MoeInputs<'a> {
    /// `(T, D)` activations.
    pub x: &'a GpuMatrix,
    /// T tokens to K of E experts.
    pub routing: &'a Routing,
    /// gate and up `[D, F, E]`, down `[F, D, E]`.
    pub experts: ExpertWeights<'a, ExpertTensor>,
}

/// The intermediate matrices of one MoE layer evaluation.
#[derive(Debug)]
pub struct MoeBuffers {
    /// (T*K, F) f32.
    pub gate: GpuMatrix,
    /// (T*K, F) f32.
    pub up: GpuMatrix,
    /// (T*K, F), f32 or f16.
    pub mid: GpuMatrix,
    /// (T*K, D) f32.
    pub y: GpuMatrix,
}

impl MoeBuffers {
    /// Intermediates of `inputs`' layer with `mid` stored as `mid`.
    pub fn new(buffers: &Buffers<'_>, inputs: &MoeInputs<'_>, mid: ActType) -> Result<MoeBuffers> {
        let pairs = inputs.routing.n_pairs();
        let (d, f) = (inputs.x.cols, inputs.experts.gate.rows);
        Ok(MoeBuffers {
            gate: buffers.matrix(pairs, f, ActType::F32, "moe gate")?,
            up: buffers.matrix(pairs, f, ActType::F32, "moe up")?,
            mid: buffers.matrix(pairs, f, mid, "moe mid")?,
            y: buffers.matrix(pairs, d, ActType::F32, "moe y")?,
        })
    }
}

/// Records the whole routed-MoE layer: `out (T, D)` from `inputs`, through `bufs`.
pub fn layer(
    rec: &mut Recorder<'_>,
    inputs: &MoeInputs<'_>,
    opts: &MoeOptions,
    bufs: &MoeBuffers,
    out: &GpuMatrix,
) -> Result<()> {
    let MoeInputs { x, routing, .. } = *inputs;
    let ExpertWeights { gate, up, down } = inputs.experts;
    let k = routing.n_used;
    if x.rows != routing.n_tokens
        || gate.rows != up.rows
        || down.cols != gate.rows
        || down.rows != x.cols
    {
        return Err(shape(
            "moe",
            format!(
                "x {}x{} with {} routed tokens, gate {}x{}, up {}x{}, down {}x{}",
                x.rows,
                x.cols,
                routing.n_tokens,
                gate.rows,
                gate.cols,
                up.rows,
                up.cols,
                down.rows,
                down.cols
            ),
        ));
    }
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
    let map = if opts.mat_vec {
        None
    } else {
        let row_groups: Vec<u32> = [(gate, x.ty), (down, opts.mid)]
            .iter()
            .filter_map(|&(w, act)| KernelKey::MmId(key(w, act)).row_groups(w.rows as u32))
            .collect();
        rec.set_detail("map");
        Some(map(rec, routing, opts.tile, &row_groups)?)
    };
    // `out (pairs, rows) = w @ act`: grouped over the map, or mat-vec over the routing.
    let matmul = |rec: &mut Recorder<'_>, mm: Matmul<'_>| match &map {
        Some(map) => mm_id(rec, key(mm.w, mm.act.ty), map, mm),
        None => mv_id(rec, routing, mm),
    };
    rec.set_detail("gate");
    matmul(
        rec,
        Matmul {
            w: gate,
            act: x,
            act_row_div: k,
            out: &bufs.gate,
        },
    )?;
    rec.set_detail("up");
    matmul(
        rec,
        Matmul {
            w: up,
            act: x,
            act_row_div: k,
            out: &bufs.up,
        },
    )?;
    rec.set_detail("act");
    act(
        rec,
        &bufs.gate,
        &bufs.up,
        routing,
        opts.activation,
        &bufs.mid,
    )?;
    rec.set_detail("down");
    matmul(
        rec,
        Matmul {
            w: down,
            act: &bufs.mid,
            act_row_div: 1,
            out: &bufs.y,
        },
    )?;
    rec.set_detail("sum");
    sum(rec, &bufs.y, k, out)?;
    rec.set_detail("");
    Ok(())
}

/// The routed-MoE layer alone (see the module docs): allocates its intermediates and output,
/// records and submits. `out (T, D) = sum_k w[t,k] * down[e] @ act(gate[e] @ x[t],
/// up[e] @ x[t])`.
pub fn run(ctx: &WgpuContext, inputs: &MoeInputs<'_>, opts: &MoeOptions) -> Result<GpuMatrix> {
    let bufs = MoeBuffers::new(&ctx.buffers(), inputs, opts.mid)?;
    let out = ctx
        .buffers()
        .matrix(inputs.x.rows, inputs.x.cols, ActType::F32, "moe out")?;
    ctx.record("moe", |rec| layer(rec, inputs, opts, &bufs, &out))?;
    Ok(out)
}
