//! The kernel correctness matrix against f64 references, on one shared device: every weight
//! type x activation type x tile width x matmul path the adapter runs x per-expert load, a
//! 2048-token random routing, the mat-vec path, the map, the dispatch-grid guard, split
//! weights, and whole MoE layers against `moetile_cpu::moe`.
//!
//! Tolerances, against references computed in f64 from the exact dequantized weights and the
//! exact (f16-rounded where stored as f16) activations:
//! - register path: |err| <= 1e-5 * sum_i |w_i x_i|. The only error is f32 accumulation over
//!   K <= 2048 products (worst case K * 2^-24 relative to that sum; 1e-5 covers K = 168 worst
//!   case and every realistic order) plus a possible 1-ulp difference in dequantized weights
//!   where the GPU fuses `d * q - m` into an FMA.
//! - cooperative paths: 2e-3 * sum |w_i x_i|: weights and activations are rounded to f16
//!   (2^-11 relative each) in workgroup memory before the f32-accumulating multiply.
//! - whole layers (vs `moetile_cpu::moe`, f64 throughout): `tol * rms(reference)` with tol =
//!   5e-5 for f32 `mid` on the register path, 2e-3 for f16 `mid` (each mid value rounded to
//!   2^-11 relative; the errors of F of them add up like a random walk, ~2^-12 * rms), 4e-3 for
//!   cooperative paths (f16 rounding of the gate/up/down inputs on top).

mod common;

use common::{
    Weights, check, ctx, grouped_matmul_ref, ids_with_load, int8_matmul_ref, random_ids, rng,
    round_f16, uniform,
};
use moetile::model::{ExpertActivation, ExpertBiases, ExpertWeights, GateUp, MoeParams};
use moetile::tile::{MoeBatch, TilePolicy, TileWidth};
use moetile_cpu::{CpuWeight, Mat};
use moetile_wgpu::moe::{
    self, Matmul, MoeBuffers, MoeInputs, MoeOptions, MoePlan, MvExtras, Routing, RowNorm,
};
use moetile_wgpu::{
    ActType, ExpertTensor, GgmlWeight, KernelKey, MatmulKey, MvEpilogue, Path, WeightType,
    WgpuContext, WgpuError, kernels,
};

const D: usize = 256;
/// Output rows of the matmul tests: not a multiple of the 64-row tile.
const ROWS: usize = 96;
const LOADS: [usize; 10] = [1, 31, 32, 33, 63, 64, 65, 127, 128, 129];

/// The per-expert loads a weight type is tested at. The tile logic is the same for every type
/// (only `dequant8` differs): the types models use for routed experts get every load, the ones
/// added for dense projections (whose dequantization `tests/ops.rs` also checks against the
/// CPU) a partial, a just-past-one and a multi-tile load, to keep the suite fast on lavapipe.
fn loads(ty: WeightType) -> &'static [usize] {
    const EXPERT_TYPES: [WeightType; 8] = [
        WeightType::F16,
        WeightType::Q8_0,
        WeightType::Q2_K,
        WeightType::Q4_K,
        WeightType::Q5_K,
        WeightType::Q6_K,
        WeightType::IQ2_XXS,
        WeightType::MXFP4,
    ];
    if EXPERT_TYPES.contains(&ty) {
        &LOADS
    } else {
        &[1, 33, 129]
    }
}

/// The mat-vec inputs a weight type is tested with: f32, and int8 where it has that kernel.
fn int8_modes(ty: WeightType) -> &'static [bool] {
    match ty.int8_dot_fragments() {
        Some(_) => &[false, true],
        None => &[false],
    }
}

/// The reference of a mat-vec over `act` (f32 or int8 input, see [`int8_matmul_ref`]) for
/// [`check`] at 1e-5.
fn mat_vec_ref(w: &Weights, ids: &[u32], act: &[f32], div: usize, int8: bool) -> Vec<(f64, f64)> {
    match int8 {
        true => int8_matmul_ref(w, ids, act, div, 1e-5),
        false => grouped_matmul_ref(w, ids, act, div),
    }
}

fn matmul_tolerance(path: Path) -> f64 {
    match path {
        Path::Reg => 1e-5,
        Path::Coop16 | Path::Coop8 => 2e-3,
    }
}

/// Runs one grouped matmul over all of `w`'s experts on poisoned output; returns the output.
fn run_mm_id(
    ctx: &WgpuContext,
    key: MatmulKey,
    w: &moetile_wgpu::ExpertTensor,
    k: usize,
    ids: &[u32],
    act: &[f32],
    div: usize,
) -> Vec<f32> {
    let n_pairs = ids.len();
    let routing =
        Routing::from_host(&ctx.buffers(), w.experts, k, ids, &vec![1.0; n_pairs]).unwrap();
    let x = ctx
        .buffers()
        .matrix_from_host(n_pairs / div, w.cols, key.act, act)
        .unwrap();
    let out = ctx
        .buffers()
        .matrix_filled(n_pairs, w.rows, ActType::F32, f32::NAN)
        .unwrap();
    let groups = KernelKey::MmId(key).row_groups(w.rows as u32).unwrap();
    let mm = Matmul {
        w,
        act: &x,
        act_row_div: div,
        out: &out,
        out_col: 0,
    };
    ctx.record("test mm_id", |rec| {
        let map = moe::map(rec, &routing, key.tile, &[groups])?;
        moe::mm_id(rec, key, &map, mm)
    })
    .unwrap();
    ctx.read_matrix(&out).unwrap()
}

/// Runs one mat-vec over all of `w`'s experts on poisoned output, `act` being the activation
/// values and their storage type; returns the output.
fn run_mv_id(
    ctx: &WgpuContext,
    w: &moetile_wgpu::ExpertTensor,
    k: usize,
    ids: &[u32],
    (act, act_ty): (&[f32], ActType),
    div: usize,
    int8: bool,
) -> Vec<f32> {
    let buffers = ctx.buffers();
    let routing = Routing::from_host(&buffers, w.experts, k, ids, &vec![1.0; ids.len()]).unwrap();
    let x = buffers
        .matrix_from_host(ids.len() / div, w.cols, act_ty, act)
        .unwrap();
    let out = buffers
        .matrix_filled(ids.len(), w.rows, ActType::F32, f32::NAN)
        .unwrap();
    let mm = Matmul {
        w,
        act: &x,
        act_row_div: div,
        out: &out,
        out_col: 0,
    };
    let extras = MvExtras {
        int8,
        ..MvExtras::default()
    };
    ctx.record("test mv_id", |rec| moe::mv_id(rec, &routing, mm, extras))
        .unwrap();
    ctx.read_matrix(&out).unwrap()
}

/// `x` with each row of `cols` values RMS-normed in f64 and times `w`, as the mat-vec's norm
/// prologue computes it.
fn rms_normed(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    x.chunks(w.len())
        .flat_map(|row| {
            let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / row.len() as f64;
            let scale = 1.0 / (ms + eps as f64).sqrt();
            row.iter()
                .zip(w)
                .map(move |(&v, &g)| (v as f64 * scale * g as f64) as f32)
        })
        .collect()
}

/// Activation values as the kernel will see them.
fn act_values(rng: &mut rand::rngs::StdRng, n: usize, ty: ActType) -> Vec<f32> {
    let v = uniform(rng, n, 1.0);
    match ty {
        ActType::F32 => v,
        ActType::F16 => round_f16(&v),
    }
}

#[test]
fn mm_id_matches_reference_for_every_load() {
    let Some(ctx) = ctx() else { return };
    let mut rng = rng("mm_id_matches_reference_for_every_load");
    let (n_tokens, k, n_experts, busy) = (160, 2, 12, 9);
    for ty in WeightType::ALL {
        let weights = Weights::random(&mut rng, ty, n_experts, ROWS, D);
        let w = ctx.upload_experts(&weights.data("w")).unwrap();
        for act in ActType::ALL {
            // f32 activations are read like gate/up (x row p / K), f16 like down (row p).
            let div = match act {
                ActType::F32 => k,
                ActType::F16 => 1,
            };
            for &load in loads(ty) {
                let ids = ids_with_load(&mut rng, n_tokens, k, busy, load);
                let x = act_values(&mut rng, ids.len() / div * D, act);
                let want = grouped_matmul_ref(&weights, &ids, &x, div);
                for tile in TileWidth::ALL {
                    for path in ctx.profile().paths() {
                        let key = MatmulKey {
                            weight: ty,
                            act,
                            tile,
                            path,
                        };
                        let got = run_mm_id(ctx, key, &w, k, &ids, &x, div);
                        let label = format!("{} load {load}", KernelKey::MmId(key));
                        check(&label, &got, &want, matmul_tolerance(path), ROWS);
                    }
                }
            }
        }
    }
}

#[test]
fn mm_id_random_routing_2048_tokens() {
    let Some(ctx) = ctx() else { return };
    let mut rng = rng("mm_id_random_routing_2048_tokens");
    let (n_tokens, k, n_experts) = (2048, 4, 64);
    let ids = random_ids(&mut rng, n_tokens, k, n_experts);
    let x = uniform(&mut rng, n_tokens * D, 1.0);
    for ty in WeightType::ALL {
        let weights = Weights::random(&mut rng, ty, n_experts, ROWS, D);
        let w = ctx.upload_experts(&weights.data("w")).unwrap();
        let want = grouped_matmul_ref(&weights, &ids, &x, k);
        for tile in TileWidth::ALL {
            for path in ctx.profile().paths() {
                let key = MatmulKey {
                    weight: ty,
                    act: ActType::F32,
                    tile,
                    path,
                };
                let got = run_mm_id(ctx, key, &w, k, &ids, &x, k);
                let label = format!("{} T=2048", KernelKey::MmId(key));
                check(&label, &got, &want, matmul_tolerance(path), ROWS);
            }
        }
    }
}

/// The seed's bug: wide tiles computed only 32 tokens per tile. An expert with 128 and 129
/// tokens on 64- and 128-token tiles: every output row of every token must be written and
/// right. F16, and MXFP4 (whose GPU block is the only one padded after a one-byte field).
#[test]
fn wide_tile_computes_all_rows() {
    let Some(ctx) = ctx() else { return };
    let mut rng = rng("wide_tile_computes_all_rows");
    for ty in [WeightType::F16, WeightType::MXFP4] {
        let weights = Weights::random(&mut rng, ty, 4, ROWS, D);
        let w = ctx.upload_experts(&weights.data("w")).unwrap();
        for load in [128, 129] {
            let ids = vec![0u32; load];
            let x = uniform(&mut rng, load * D, 1.0);
            let want = grouped_matmul_ref(&weights, &ids, &x, 1);
            for tile in [TileWidth::T64, TileWidth::T128] {
                for path in ctx.profile().paths() {
                    let key = MatmulKey {
                        weight: ty,
                        act: ActType::F32,
                        tile,
                        path,
                    };
                    let got = run_mm_id(ctx, key, &w, 1, &ids, &x, 1);
                    for (i, v) in got.iter().enumerate() {
                        assert!(
                            !v.is_nan(),
                            "{}: token {} row {} never written",
                            KernelKey::MmId(key),
                            i / ROWS,
                            i % ROWS
                        );
                    }
                    check(
                        &format!("{} load {load}", KernelKey::MmId(key)),
                        &got,
                        &want,
                        matmul_tolerance(path),
                        ROWS,
                    );
                }
            }
        }
    }
}

#[test]
fn mv_id_matches_reference() {
    let Some(ctx) = ctx() else { return };
    let mut rng = rng("mv_id_matches_reference");
    let (k, n_experts) = (3, 8);
    for ty in WeightType::ALL {
        let weights = Weights::random(&mut rng, ty, n_experts, ROWS, D);
        let w = ctx.upload_experts(&weights.data("w")).unwrap();
        for act in ActType::ALL {
            for n_tokens in [1, 4] {
                for &int8 in int8_modes(ty) {
                    let div = if act == ActType::F32 { k } else { 1 };
                    let ids = random_ids(&mut rng, n_tokens, k, n_experts);
                    let x = act_values(&mut rng, ids.len() / div * D, act);
                    let got = run_mv_id(ctx, &w, k, &ids, (&x, act), div, int8);
                    let want = mat_vec_ref(&weights, &ids, &x, div, int8);
                    let key = KernelKey::MvId {
                        weight: ty,
                        act,
                        epilogue: MvEpilogue::Rows,
                        norm: false,
                        int8,
                        biased: false,
                    };
                    check(&format!("{key} T={n_tokens}"), &got, &want, 1e-5, ROWS);
                }
            }
        }
    }
}

/// Rows longer than the mat-vec's activation staging round (2048 values), and not a multiple of
/// it: the kernel must walk every round.
#[test]
fn mv_id_walks_long_rows_in_rounds() {
    let Some(ctx) = ctx() else { return };
    let mut rng = rng("mv_id_walks_long_rows_in_rounds");
    let (k, n_experts, cols) = (2, 4, 2048 + 256);
    for ty in [
        WeightType::Q4_K,
        WeightType::IQ2_XXS,
        WeightType::F16,
        WeightType::Q6_K,
    ] {
        let weights = Weights::random(&mut rng, ty, n_experts, ROWS, cols);
        let w = ctx.upload_experts(&weights.data("w")).unwrap();
        for &int8 in int8_modes(ty) {
            let ids = random_ids(&mut rng, 2, k, n_experts);
            let x = uniform(&mut rng, 2 * cols, 1.0);
            let want = mat_vec_ref(&weights, &ids, &x, k, int8);
            let key = KernelKey::MvId {
                weight: ty,
                act: ActType::F32,
                epilogue: MvEpilogue::Rows,
                norm: false,
                int8,
                biased: false,
            };
            check(
                &format!("{key} cols {cols}"),
                &run_mv_id(ctx, &w, k, &ids, (&x, ActType::F32), k, int8),
                &want,
                1e-5,
                ROWS,
            );
        }
    }
}

/// The folded norm and residual add of a projection: `mv_id` RMS-norms each activation row as
/// it reads it (rows of one and of several staging rounds) and adds into what the output
/// holds, writing columns of a wider output. Against the f64 norm and dot products; the norm's
/// f32 rounding moves each value by ~1e-7 relative, inside the 1e-5 bound on the sum of |w x|,
/// and the add into a held value adds one f32 rounding of the result (1e-6 relative).
#[test]
fn mv_id_norms_rows_and_adds_into_the_output() {
    let Some(ctx) = ctx() else { return };
    let mut rng = rng("mv_id_norms_rows_and_adds_into_the_output");
    let buffers = ctx.buffers();
    for (ty, cols) in [
        (WeightType::Q4_K, D),
        (WeightType::Q8_0, 2048 + 256),
        (WeightType::F16, D),
        (WeightType::IQ2_XXS, D),
    ] {
        let weights = Weights::random(&mut rng, ty, 1, ROWS, cols);
        let w = ctx.upload_experts(&weights.data("w")).unwrap();
        for (n_tokens, int8) in [(1, false), (3, false), (1, true), (3, true)] {
            if int8 && ty.int8_dot_fragments().is_none() {
                continue;
            }
            let x = uniform(&mut rng, n_tokens * cols, 3.0);
            let norm_w = uniform(&mut rng, cols, 1.0);
            let eps = 1e-5;
            let normed = rms_normed(&x, &norm_w, eps);
            let ids = vec![0; n_tokens];
            let dots = mat_vec_ref(&weights, &ids, &normed, 1, int8);
            // The output is 7 columns wider on each side of this weight's rows.
            let (width, col) = (ROWS + 14, 7);
            let held = uniform(&mut rng, n_tokens * width, 2.0);
            let want: Vec<(f64, f64)> = (0..n_tokens * width)
                .map(|i| {
                    let (t, c) = (i / width, i % width);
                    let h = held[i] as f64;
                    match c.checked_sub(col).filter(|&r| r < ROWS) {
                        Some(r) => {
                            let (v, scale) = dots[t * ROWS + r];
                            (h + v, scale + 0.1 * (h + v).abs())
                        }
                        None => (h, 0.0),
                    }
                })
                .collect();
            let routing = Routing::from_host(&buffers, 1, 1, &ids, &vec![1.0; n_tokens]).unwrap();
            let xm = buffers
                .matrix_from_host(n_tokens, cols, ActType::F32, &x)
                .unwrap();
            let out = buffers
                .matrix_from_host(n_tokens, width, ActType::F32, &held)
                .unwrap();
            let norm_buf = buffers
                .matrix_from_host(1, cols, ActType::F32, &norm_w)
                .unwrap();
            let mm = Matmul {
                w: &w,
                act: &xm,
                act_row_div: 1,
                out: &out,
                out_col: col,
            };
            let extras = MvExtras {
                norm: Some(RowNorm {
                    weight: norm_buf.buffer(),
                    eps,
                }),
                accumulate: true,
                int8,
            };
            ctx.record("test mv_id norm", |rec| {
                moe::mv_id(rec, &routing, mm, extras)
            })
            .unwrap();
            let key = KernelKey::MvId {
                weight: ty,
                act: ActType::F32,
                epilogue: MvEpilogue::Rows,
                norm: true,
                int8,
                biased: false,
            };
            check(
                &format!("{key} cols {cols} T={n_tokens}"),
                &ctx.read_matrix(&out).unwrap(),
                &want,
                1e-5,
                width,
            );
        }
    }
}

/// `swiglu(g, u)` of `activation` in f64, as `moetile_cpu` computes it.
fn swiglu_ref(activation: ExpertActivation, g: f64, u: f64) -> f64 {
    let silu = |v: f64| v / (1.0 + (-v).exp());
    match activation {
        ExpertActivation::SwiGlu => silu(g) * u,
        ExpertActivation::SwiGluClamped { limit } => {
            let l = limit as f64;
            silu(g.min(l)) * u.clamp(-l, l)
        }
        ExpertActivation::SwiGluOai { alpha, limit } => {
            let (a, l) = (alpha as f64, limit as f64);
            let x = g.min(l);
            x / (1.0 + (-a * x).exp()) * (u.clamp(-l, l) + 1.0)
        }
    }
}

/// Bounds on `|d act / dg|` and `|d act / du|` at `(g, u)`: how errors in the dot products
/// carry through the activation (`x sigmoid(a x)` has a slope of at most 1.1 for any `a`; the
/// clamps are 1-Lipschitz).
fn glu_slopes(activation: ExpertActivation, g: f64, u: f64) -> (f64, f64) {
    match activation {
        ExpertActivation::SwiGlu | ExpertActivation::SwiGluClamped { .. } => {
            (1.1 * u.abs(), (g / (1.0 + (-g).exp())).abs())
        }
        ExpertActivation::SwiGluOai { alpha, .. } => (
            1.1 * (u.abs() + 1.0),
            (g / (1.0 + (-(alpha as f64) * g).exp())).abs(),
        ),
    }
}

/// gpt-oss's per-expert gate and up biases, `(E, F)` F32 each: the uploads and their values.
struct GluBias {
    gpu: ExpertBiases<ExpertTensor>,
    gate: Weights,
    up: Weights,
}

impl GluBias {
    fn random(
        ctx: &WgpuContext,
        rng: &mut rand::rngs::StdRng,
        n_experts: usize,
        f: usize,
        d: usize,
    ) -> GluBias {
        let gate = Weights::random(rng, WeightType::F32, 1, n_experts, f);
        let up = Weights::random(rng, WeightType::F32, 1, n_experts, f);
        // The down bias is mv_sum's; a placeholder of its shape completes the set.
        let down = Weights::random(rng, WeightType::F32, 1, n_experts, d);
        let upload = |w: &Weights, name| ctx.upload_experts(&w.matrix_data(name)).unwrap();
        GluBias {
            gpu: ExpertBiases {
                gate: upload(&gate, "gate_b"),
                up: upload(&up, "up_b"),
                down: upload(&down, "down_b"),
            },
            gate,
            up,
        }
    }

    fn gate(&self, expert: u32, c: usize) -> f64 {
        self.gate.row(0, expert as usize)[c] as f64
    }

    fn up(&self, expert: u32, c: usize) -> f64 {
        self.up.row(0, expert as usize)[c] as f64
    }
}

/// mv_glu over a tensor of interleaved rows (row 2i gate row i, row 2i + 1 up row i) against
/// the f64 activation of the f64 gate and up dot products, times the route weight. Bound: the
/// dot products' f32 error (1e-5 * sum |w x|, as for mv_id) carried through the activation
/// (|d/dg| <= 1.1 |u|, |d/du| <= |silu(g)|; the clamp is 1-Lipschitz), plus the rounding of
/// the stored value (2^-11 relative for f16 `mid`, 1e-6 for f32).
#[test]
fn mv_glu_matches_reference() {
    let Some(ctx) = ctx() else { return };
    let mut rng = rng("mv_glu_matches_reference");
    let (k, n_experts) = (3, 8);
    let oai = ExpertActivation::SwiGluOai {
        alpha: 1.702,
        limit: 0.5,
    };
    let clamped = ExpertActivation::SwiGluClamped { limit: 0.5 };
    // (tokens, activation, norm, int8, biased)
    let plain = [
        (1, ExpertActivation::SwiGlu, false, false, false),
        (4, clamped, false, false, false),
        (3, ExpertActivation::SwiGlu, true, false, false),
        (4, clamped, false, true, false),
        (3, ExpertActivation::SwiGlu, true, true, false),
        (4, oai, true, false, false),
    ];
    // Bias rows are F32 in whole 32-value blocks: F = 96, whose rows fill every workgroup.
    let biased = [(3, oai, true, false, true), (2, oai, false, true, true)];
    for (f, cases) in [(ROWS / 2, &plain[..]), (ROWS, &biased[..])] {
        for ty in WeightType::ALL {
            let weights = Weights::random(&mut rng, ty, n_experts, 2 * f, D);
            let w = ctx.upload_experts(&weights.data("gate_up")).unwrap();
            for mid in ActType::ALL {
                for &(n_tokens, activation, norm, int8, biased) in cases {
                    if int8 && ty.int8_dot_fragments().is_none() {
                        continue;
                    }
                    let ids = random_ids(&mut rng, n_tokens, k, n_experts);
                    let route: Vec<f32> = (0..ids.len())
                        .map(|_| rand::Rng::random_range(&mut rng, 0.1..1.0))
                        .collect();
                    let x = uniform(&mut rng, n_tokens * D, 1.0);
                    let norm_w = uniform(&mut rng, D, 1.0);
                    let norm_buf = ctx
                        .buffers()
                        .matrix_from_host(1, D, ActType::F32, &norm_w)
                        .unwrap();
                    let row_norm = norm.then(|| RowNorm {
                        weight: norm_buf.buffer(),
                        eps: 1e-6,
                    });
                    let routing =
                        Routing::from_host(&ctx.buffers(), n_experts, k, &ids, &route).unwrap();
                    let xm = ctx
                        .buffers()
                        .matrix_from_host(n_tokens, D, ActType::F32, &x)
                        .unwrap();
                    let out = ctx
                        .buffers()
                        .matrix_filled(ids.len(), f, mid, f32::NAN)
                        .unwrap();
                    let mm = Matmul {
                        w: &w,
                        act: &xm,
                        act_row_div: k,
                        out: &out,
                        out_col: 0,
                    };
                    let bias = biased.then(|| GluBias::random(ctx, &mut rng, n_experts, f, D));
                    ctx.record("test mv_glu", |rec| {
                        let biases = bias.as_ref().map(|b| &b.gpu);
                        moe::mv_glu(rec, &routing, mm, activation, row_norm, int8, biases)
                    })
                    .unwrap();
                    let got = ctx.read_matrix(&out).unwrap();
                    let x_read = match norm {
                        true => rms_normed(&x, &norm_w, 1e-6),
                        false => x.clone(),
                    };
                    let dots = mat_vec_ref(&weights, &ids, &x_read, k, int8);
                    let rounding = match mid {
                        ActType::F32 => 1e-6,
                        ActType::F16 => 2f64.powi(-11),
                    };
                    let want: Vec<(f64, f64)> = (0..ids.len() * f)
                        .map(|i| {
                            let (p, c) = (i / f, i % f);
                            let (g, sg) = dots[p * 2 * f + 2 * c];
                            let (u, su) = dots[p * 2 * f + 2 * c + 1];
                            let (g, u) = match &bias {
                                Some(b) => (g + b.gate(ids[p], c), u + b.up(ids[p], c)),
                                None => (g, u),
                            };
                            let r = route[p] as f64;
                            let v = swiglu_ref(activation, g, u) * r;
                            let (dg, du) = glu_slopes(activation, g, u);
                            let carried = (dg * sg + du * su) * r;
                            // check() bounds |got - v| by 1e-5 * scale + 1e-6.
                            (v, carried + rounding * v.abs() / 1e-5)
                        })
                        .collect();
                    let key = KernelKey::MvId {
                        weight: ty,
                        act: ActType::F32,
                        epilogue: MvEpilogue::Glu { mid },
                        norm,
                        int8,
                        biased,
                    };
                    check(
                        &format!("{key} T={n_tokens} {activation:?}"),
                        &got,
                        &want,
                        1e-5,
                        f,
                    );
                }
            }
        }
    }
}

/// mv_sum: a token's K pairs of `mid` rows through their experts, summed, against f64. Bound:
/// 1e-5 * the sum over all K products of |w x| (f32 accumulation, as for mv_id).
#[test]
fn mv_sum_matches_reference() {
    let Some(ctx) = ctx() else { return };
    let mut rng = rng("mv_sum_matches_reference");
    let n_experts = 8;
    // Rows of D, whose K rows fit one staging round of the kernel (X_CHUNK, 2048 values), and
    // of 768 (Qwen3-30B-A3B's down), whose 3 rows take two rounds, the second starting in the
    // middle of the third row.
    // (tokens, K, accumulate, int8, biased)
    let narrow = [
        (1, 1, false, false, false),
        (3, 4, false, false, false),
        (2, 3, true, false, false),
        (3, 4, false, true, false),
        (2, 3, true, true, false),
        (3, 2, true, false, true),
        (2, 3, false, true, true),
    ];
    let wide = [(2, 3, false, false, false), (2, 3, true, true, true)];
    for (f, cases) in [(D, &narrow[..]), (768, &wide[..])] {
        for ty in WeightType::ALL {
            let weights = Weights::random(&mut rng, ty, n_experts, ROWS, f);
            let w = ctx.upload_experts(&weights.data("down")).unwrap();
            for act in ActType::ALL {
                for &(n_tokens, k, accumulate, int8, biased) in cases {
                    if int8 && ty.int8_dot_fragments().is_none() {
                        continue;
                    }
                    let ids = random_ids(&mut rng, n_tokens, k, n_experts);
                    let mid = act_values(&mut rng, ids.len() * f, act);
                    // The route weights scale only the biases (`mid` holds them already).
                    let route: Vec<f32> = (0..ids.len())
                        .map(|_| rand::Rng::random_range(&mut rng, 0.1..1.0))
                        .collect();
                    let routing =
                        Routing::from_host(&ctx.buffers(), n_experts, k, &ids, &route).unwrap();
                    let down_bias = biased.then(|| {
                        let b = Weights::random(&mut rng, WeightType::F32, 1, n_experts, ROWS);
                        let gpu = ctx.upload_experts(&b.matrix_data("down_b")).unwrap();
                        (b, gpu)
                    });
                    let mm_act = ctx
                        .buffers()
                        .matrix_from_host(ids.len(), f, act, &mid)
                        .unwrap();
                    // Accumulating: the residual stream it adds into; else poisoned.
                    let held = match accumulate {
                        true => uniform(&mut rng, n_tokens * ROWS, 2.0),
                        false => vec![f32::NAN; n_tokens * ROWS],
                    };
                    let out = ctx
                        .buffers()
                        .matrix_from_host(n_tokens, ROWS, ActType::F32, &held)
                        .unwrap();
                    let mm = Matmul {
                        w: &w,
                        act: &mm_act,
                        act_row_div: 1,
                        out: &out,
                        out_col: 0,
                    };
                    ctx.record("test mv_sum", |rec| {
                        let bias = down_bias.as_ref().map(|(_, gpu)| gpu);
                        moe::mv_sum(rec, &routing, mm, accumulate, int8, bias)
                    })
                    .unwrap();
                    let per_pair = mat_vec_ref(&weights, &ids, &mid, 1, int8);
                    let want: Vec<(f64, f64)> = (0..n_tokens * ROWS)
                        .map(|i| {
                            let (t, row) = (i / ROWS, i % ROWS);
                            let (v, scale) = (0..k)
                                .map(|j| per_pair[(t * k + j) * ROWS + row])
                                .fold((0.0, 0.0), |(s, a), (v, sv)| (s + v, a + sv));
                            let v = v + match &down_bias {
                                Some((b, _)) => (0..k)
                                    .map(|j| {
                                        let p = t * k + j;
                                        let e = ids[p] as usize;
                                        route[p] as f64 * b.row(0, e)[row] as f64
                                    })
                                    .sum(),
                                None => 0.0,
                            };
                            match accumulate {
                                // One more f32 rounding, of the sum: 1e-6 relative.
                                true => {
                                    let total = held[i] as f64 + v;
                                    (total, scale + 0.1 * total.abs())
                                }
                                false => (v, scale),
                            }
                        })
                        .collect();
                    let key = KernelKey::MvId {
                        weight: ty,
                        act,
                        epilogue: MvEpilogue::Sum,
                        norm: false,
                        int8,
                        biased,
                    };
                    let got = ctx.read_matrix(&out).unwrap();
                    check(
                        &format!("{key} F={f} T={n_tokens} K={k} accumulate {accumulate}"),
                        &got,
                        &want,
                        1e-5,
                        ROWS,
                    );
                }
            }
        }
    }
}

#[test]
fn map_lists_are_expert_major_and_token_ascending() {
    let Some(ctx) = ctx() else { return };
    let mut rng = rng("map_lists_are_expert_major_and_token_ascending");
    // 300 experts: the scan walks more than one round of 256.
    for (n_tokens, k, n_experts) in [(1, 1, 1), (700, 6, 300), (2048, 8, 128)] {
        let ids = random_ids(&mut rng, n_tokens, k, n_experts);
        let routing =
            Routing::from_host(&ctx.buffers(), n_experts, k, &ids, &vec![0.0; ids.len()]).unwrap();
        for tile in TileWidth::ALL {
            let map = ctx
                .record("expert map", |rec| moe::map(rec, &routing, tile, &[2, 64]))
                .unwrap();
            let got = map.contents(ctx).unwrap();
            let mut offset = 0;
            let mut items = Vec::new();
            for e in 0..n_experts {
                let pairs: Vec<u32> = (0..ids.len() as u32)
                    .filter(|&p| ids[p as usize] == e as u32)
                    .collect();
                assert_eq!(got.experts[e], (offset, pairs.len() as u32), "expert {e}");
                let span = offset as usize..offset as usize + pairs.len();
                assert_eq!(got.list[span], pairs[..], "expert {e} list, tile {tile}");
                for first in (0..pairs.len()).step_by(tile.tokens()) {
                    items.push((e as u32, first as u32));
                }
                offset += pairs.len() as u32;
            }
            assert_eq!(got.items, items, "work list, tile {tile}");
            let n = items.len() as u32;
            assert_eq!(got.dispatch[..2], [[n, 2, 1], [n, 64, 1]], "dispatch args");
        }
    }
}

#[test]
fn a_kernel_can_only_be_dispatched_with_the_grid_of_its_own_key() {
    let Some(ctx) = ctx() else { return };
    let mut rng = rng("a_kernel_can_only_be_dispatched_with_the_grid_of_its_own_key");
    let weights = Weights::random(&mut rng, WeightType::Q8_0, 4, ROWS, D);
    let w = ctx.upload_experts(&weights.data("w")).unwrap();
    let buffers = ctx.buffers();
    let ids = random_ids(&mut rng, 64, 2, 4);
    let routing = Routing::from_host(&buffers, 4, 2, &ids, &[1.0; 128]).unwrap();
    let x = buffers.matrix_filled(64, D, ActType::F32, 1.0).unwrap();
    let out = buffers
        .matrix_filled(128, ROWS, ActType::F32, f32::NAN)
        .unwrap();
    let key = |tile| MatmulKey {
        weight: WeightType::Q8_0,
        act: ActType::F32,
        tile,
        path: Path::Reg,
    };
    let groups = KernelKey::MmId(key(TileWidth::T32))
        .row_groups(ROWS as u32)
        .unwrap();
    let mm = Matmul {
        w: &w,
        act: &x,
        act_row_div: 2,
        out: &out,
        out_col: 0,
    };
    let err = ctx
        .record("mismatch", |rec| {
            let map = moe::map(rec, &routing, TileWidth::T64, &[groups])?;
            moe::mm_id(rec, key(TileWidth::T32), &map, mm)
        })
        .unwrap_err();
    assert!(matches!(err, WgpuError::TileMismatch { .. }), "{err}");
    assert!(err.to_string().contains("mm_id_q8_0_f32_t32_reg"), "{err}");
    // A map without arguments for this row count is refused too.
    let err = ctx
        .record("no slot", |rec| {
            let map = moe::map(rec, &routing, TileWidth::T32, &[groups + 1])?;
            moe::mm_id(rec, key(TileWidth::T32), &map, mm)
        })
        .unwrap_err();
    assert!(
        matches!(err, WgpuError::MissingDispatchSlot { .. }),
        "{err}"
    );
    // Nothing ran: the output is still poison.
    assert!(ctx.read_matrix(&out).unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn a_path_the_adapter_lacks_is_refused_by_name() {
    let Some(ctx) = ctx() else { return };
    let Some(path) = [Path::Coop16, Path::Coop8]
        .into_iter()
        .find(|p| ctx.profile().supports(*p).is_err())
    else {
        return;
    };
    let mut rng = rng("a_path_the_adapter_lacks_is_refused_by_name");
    let weights = Weights::random(&mut rng, WeightType::Q4_K, 2, ROWS, D);
    let w = ctx.upload_experts(&weights.data("w")).unwrap();
    let buffers = ctx.buffers();
    let routing = Routing::from_host(&buffers, 2, 1, &[0, 1], &[1.0; 2]).unwrap();
    let x = buffers.matrix_filled(2, D, ActType::F32, 1.0).unwrap();
    let out = buffers
        .matrix_filled(2, ROWS, ActType::F32, f32::NAN)
        .unwrap();
    let key = MatmulKey {
        weight: WeightType::Q4_K,
        act: ActType::F32,
        tile: TileWidth::T32,
        path,
    };
    let groups = KernelKey::MmId(key).row_groups(ROWS as u32).unwrap();
    let err = ctx
        .record("unsupported path", |rec| {
            let map = moe::map(rec, &routing, TileWidth::T32, &[groups])?;
            moe::mm_id(
                rec,
                key,
                &map,
                Matmul {
                    w: &w,
                    act: &x,
                    act_row_div: 1,
                    out: &out,
                    out_col: 0,
                },
            )
        })
        .unwrap_err();
    assert!(matches!(err, WgpuError::MissingFeature { .. }), "{err}");
    assert!(
        err.to_string().contains(&KernelKey::MmId(key).to_string()),
        "{err}"
    );
}

#[test]
fn split_weights_give_identical_results() {
    let Some(ctx) = ctx() else { return };
    let mut rng = rng("split_weights_give_identical_results");
    let (n_experts, k) = (10, 2);
    let ids = random_ids(&mut rng, 100, k, n_experts);
    let x = uniform(&mut rng, 100 * D, 1.0);
    for ty in [WeightType::Q4_K, WeightType::IQ2_XXS, WeightType::Q8_0] {
        let weights = Weights::random(&mut rng, ty, n_experts, ROWS, D);
        let whole = ctx.upload_experts(&weights.data("whole")).unwrap();
        assert_eq!(whole.chunks.len(), 1);
        let per_expert =
            (ROWS * D / ty.block_values() as usize) as u64 * ty.gpu_block_bytes() as u64;
        let split = ctx
            .upload_experts_with_limit(&weights.data("split"), 3 * per_expert + 5)
            .unwrap();
        let bases: Vec<(u32, u32)> = split
            .chunks
            .iter()
            .map(|c| (c.expert_base, c.expert_count))
            .collect();
        assert_eq!(bases, [(0, 3), (3, 3), (6, 3), (9, 1)]);
        let key = MatmulKey {
            weight: ty,
            act: ActType::F32,
            tile: TileWidth::T32,
            path: Path::Reg,
        };
        let a = run_mm_id(ctx, key, &whole, k, &ids, &x, k);
        let b = run_mm_id(ctx, key, &split, k, &ids, &x, k);
        assert!(
            a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{ty}: split differs"
        );
        // mat-vec over split weights
        for &int8 in int8_modes(ty) {
            let want = mat_vec_ref(&weights, &ids[..6], &x[..3 * D], k, int8);
            check(
                &format!("{ty} split mv_id int8 {int8}"),
                &run_mv_id(
                    ctx,
                    &split,
                    k,
                    &ids[..6],
                    (&x[..3 * D], ActType::F32),
                    k,
                    int8,
                ),
                &want,
                1e-5,
                ROWS,
            );
        }
    }
    let too_small = ctx.upload_experts_with_limit(
        &Weights::random(&mut rng, WeightType::F16, 2, ROWS, D).data("big"),
        100,
    );
    assert!(matches!(too_small, Err(WgpuError::ExpertTooLarge { .. })));
}

/// A model's expert tensors: gate/up `[D, F, E]`, down `[F, D, E]`.
struct Layer {
    gate: Weights,
    up: Weights,
    down: Weights,
}

fn cpu_weight(w: &Weights) -> CpuWeight {
    CpuWeight {
        name: "w".into(),
        ty: w.ty.ggml(),
        dims: w.dims.to_vec(),
        values: w.values.clone(),
    }
}

/// `moetile_cpu::moe` of `layer` (gate and up separate) for `x (T, D)` routed to `ids` with
/// weights `route`, K = `k`.
fn layer_reference(
    layer: &Layer,
    x: &[f32],
    (ids, route): (&[u32], &[f32]),
    k: usize,
    activation: ExpertActivation,
) -> Vec<f32> {
    let d = layer.gate.dims[0];
    let x = Mat {
        rows: x.len() / d,
        cols: d,
        data: x.to_vec(),
    };
    let gate_up = GateUp::Separate {
        gate: cpu_weight(&layer.gate),
        up: cpu_weight(&layer.up),
    };
    let down = cpu_weight(&layer.down);
    moetile_cpu::moe(&x, ids, route, k, &gate_up, &down, None, activation).data
}

/// Whole layers: see the module docs; int8 mat-vec inputs (x into gate/up, mid into down)
/// move each value by up to d / 2 (d = max|x| / 127 per 32 values). `mid` is heavy-tailed
/// (a block's max is ~5x its rms), so its quanta are coarse: measured, the error is ~1% of
/// rms(out) and the largest of a layer's ~1000 outputs ~6%; 0.1 bounds that, while a wrong
/// element, block or scale is off by the order of the value itself.
fn layer_tolerance(path: Path, mid: ActType, int8: bool) -> f64 {
    match (path, mid) {
        _ if int8 => 0.1,
        (Path::Reg, ActType::F32) => 5e-5,
        (Path::Reg, ActType::F16) => 2e-3,
        _ => 4e-3,
    }
}

fn check_layer(
    rng: &mut rand::rngs::StdRng,
    label: &str,
    layer: &Layer,
    n_tokens: usize,
    k: usize,
    activation: ExpertActivation,
    opts_for: impl Fn(&MoeOptions) -> Vec<MoeOptions>,
) {
    let ctx = ctx().expect("checked by the caller");
    let [d, _, n_experts] = layer.gate.dims;
    let scale = match activation {
        ExpertActivation::SwiGlu => 1.0,
        // Large enough that gate and up outputs pass the clamp limit.
        ExpertActivation::SwiGluClamped { .. } | ExpertActivation::SwiGluOai { .. } => 3.0,
    };
    let x = uniform(rng, n_tokens * d, scale);
    let ids = random_ids(rng, n_tokens, k, n_experts);
    let route: Vec<f32> = (0..ids.len())
        .map(|_| rand::Rng::random_range(rng, 0.0..1.0))
        .collect();
    let want = layer_reference(layer, &x, (&ids, &route), k, activation);
    let separate = GateUp::Separate {
        gate: ctx.upload_experts(&layer.gate.data("gate")).unwrap(),
        up: ctx.upload_experts(&layer.up.data("up")).unwrap(),
    };
    let interleaved = ctx
        .upload_gate_up(&layer.gate.data("gate"), &layer.up.data("up"))
        .unwrap();
    assert!(matches!(interleaved, GateUp::Interleaved(_)), "{label}");
    let down = ctx.upload_experts(&layer.down.data("down")).unwrap();
    let routing = Routing::from_host(&ctx.buffers(), n_experts, k, &ids, &route).unwrap();
    let xm = ctx
        .buffers()
        .matrix_from_host(n_tokens, d, ActType::F32, &x)
        .unwrap();
    let tile = TilePolicy::default().choose(MoeBatch {
        tokens: n_tokens,
        n_experts,
        n_experts_used: k,
    });
    let base = MoeOptions::new(ctx, &MoeParams { activation, tile }, n_tokens);
    for gate_up in [&separate, &interleaved] {
        let inputs = MoeInputs {
            x: &xm,
            norm: None,
            routing: &routing,
            experts: ExpertWeights {
                gate_up,
                down: &down,
            },
            biases: None,
        };
        for opts in opts_for(&base) {
            let got = run_layer(ctx, &inputs, &opts);
            let plan = MoePlan::new(&inputs, &opts);
            let what = format!(
                "{label} T={n_tokens} tile {} {:?} mid {:?} int8 {} {activation:?} {}: {plan:?}",
                opts.tile,
                opts.path,
                opts.mid,
                opts.int8,
                form(gate_up),
            );
            // int8 applies to the mat-vecs only.
            let int8 = opts.int8 && plan.mat_vec;
            check_rms(
                &what,
                &got,
                &want,
                d,
                layer_tolerance(opts.path, opts.mid, int8),
            );
        }
    }
}

/// `"separate"` or `"interleaved"`.
fn form<W>(gate_up: &GateUp<W>) -> &'static str {
    match gate_up {
        GateUp::Separate { .. } => "separate",
        GateUp::Interleaved(_) => "interleaved",
    }
}

/// Records one layer with every intermediate and the output poisoned; returns the output.
fn run_layer(ctx: &WgpuContext, inputs: &MoeInputs<'_>, opts: &MoeOptions) -> Vec<f32> {
    let bufs = MoeBuffers::new(&ctx.buffers(), inputs, opts).unwrap();
    for m in bufs.all() {
        ctx.fill(m, f32::NAN);
    }
    let out = ctx
        .buffers()
        .matrix_filled(inputs.x.rows, inputs.x.cols, ActType::F32, f32::NAN)
        .unwrap();
    ctx.record("test moe", |rec| moe::layer(rec, inputs, opts, &bufs, &out))
        .unwrap();
    ctx.read_matrix(&out).unwrap()
}

/// `|got - want| <= tol * rms(want)` everywhere; NaN (never written) fails. Prints the first
/// mismatches.
fn check_rms(what: &str, got: &[f32], want: &[f32], cols: usize, tol: f64) {
    let rms = (want.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / want.len() as f64).sqrt();
    let bound = tol * rms;
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].is_nan() || (got[i] as f64 - want[i] as f64).abs() > bound)
        .collect();
    for &i in bad.iter().take(8) {
        eprintln!(
            "{what}: out[{}][{}] = {}, want {}",
            i / cols,
            i % cols,
            got[i],
            want[i]
        );
    }
    assert!(
        bad.is_empty(),
        "{what}: {} of {} wrong (bound {bound:.3e})",
        bad.len(),
        got.len()
    );
}

/// Every path and both `mid` types the device runs, at the given tile.
fn all_variants(base: &MoeOptions) -> Vec<MoeOptions> {
    let ctx = ctx().expect("checked by the caller");
    let mut v = Vec::new();
    for path in ctx.profile().paths() {
        for mid in ActType::ALL {
            v.push(MoeOptions {
                path,
                mid,
                mat_vec: false,
                ..*base
            });
        }
    }
    v
}

#[test]
fn moe_layer_matches_cpu_reference() {
    if ctx().is_none() {
        return;
    }
    let mut rng = rng("moe_layer_matches_cpu_reference");
    let (n_experts, k) = (64, 4);
    // (name, gate/up type, down type, D, F): k-quants need rows of whole 256-value blocks;
    // the others use widths that are not multiples of the 64-row tile (partial row tiles in
    // gate/up for F = 160, in down for D = 288).
    let mixes = [
        ("q2", WeightType::IQ2_XXS, WeightType::Q2_K, 256, 256),
        ("q4", WeightType::Q4_K, WeightType::Q6_K, 256, 256),
        ("q5", WeightType::Q5_K, WeightType::Q8_0, 256, 160),
        ("f16", WeightType::F16, WeightType::F16, 288, 160),
    ];
    for (i, (name, gate_up, down, d, f)) in mixes.into_iter().enumerate() {
        let layer = Layer {
            gate: Weights::random(&mut rng, gate_up, n_experts, f, d),
            up: Weights::random(&mut rng, gate_up, n_experts, f, d),
            down: Weights::random(&mut rng, down, n_experts, d, f),
        };
        let activation = if i % 2 == 0 {
            ExpertActivation::SwiGlu
        } else {
            ExpertActivation::SwiGluClamped { limit: 10.0 }
        };
        // 2048 tokens: the alignment rule picks 128-token tiles.
        check_layer(&mut rng, name, &layer, 2048, k, activation, all_variants);
        // 96 tokens: 32-token tiles; and the mat-vec path on a decode-sized batch.
        check_layer(&mut rng, name, &layer, 96, k, activation, all_variants);
        // Decode-sized batches, every activation: the mat-vec path with both `mid` types
        // (mv_glu + mv_sum over interleaved gate/up, mv_id x 2 + act + mv_sum over separate
        // ones) and the register tiles.
        for activation in [
            ExpertActivation::SwiGlu,
            ExpertActivation::SwiGluClamped { limit: 10.0 },
            ExpertActivation::SwiGluOai {
                alpha: 1.702,
                limit: 7.0,
            },
        ] {
            for n_tokens in [1, 3] {
                check_layer(
                    &mut rng,
                    name,
                    &layer,
                    n_tokens,
                    k,
                    activation,
                    decode_variants,
                );
            }
        }
    }
}

/// The mat-vec path with both `mid` types over f32 and int8 inputs, and the register tiles.
fn decode_variants(base: &MoeOptions) -> Vec<MoeOptions> {
    let mut v: Vec<MoeOptions> = ActType::ALL
        .into_iter()
        .flat_map(|mid| {
            [false, true].map(|int8| MoeOptions {
                mat_vec: true,
                mid,
                int8,
                ..*base
            })
        })
        .collect();
    v.push(MoeOptions {
        mat_vec: false,
        path: Path::Reg,
        ..*base
    });
    v
}

/// Expert tensors split over several weight chunks (as past the device's binding limit): gate
/// and up in both forms, down split (mv_id + sum at decode) or whole (mv_sum), on the mat-vec
/// and tiled paths, against the CPU reference.
#[test]
fn moe_layer_with_split_weights_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let mut rng = rng("moe_layer_with_split_weights_matches_cpu_reference");
    let (n_experts, k, d, f) = (10, 3, 256, 96);
    let ty = WeightType::Q4_K;
    let layer = Layer {
        gate: Weights::random(&mut rng, ty, n_experts, f, d),
        up: Weights::random(&mut rng, ty, n_experts, f, d),
        down: Weights::random(&mut rng, WeightType::Q8_0, n_experts, d, f),
    };
    let expert_bytes = |rows: usize, cols: usize, ty: WeightType| {
        (rows * cols / ty.block_values() as usize) as u64 * ty.gpu_block_bytes() as u64
    };
    // Three experts a chunk: four chunks.
    let gate_up_limit = 3 * expert_bytes(2 * f, d, ty) + 5;
    let down_limit = 3 * expert_bytes(d, f, WeightType::Q8_0) + 5;
    let separate = GateUp::Separate {
        gate: ctx
            .upload_experts_with_limit(&layer.gate.data("gate"), gate_up_limit / 2)
            .unwrap(),
        up: ctx
            .upload_experts_with_limit(&layer.up.data("up"), gate_up_limit / 2)
            .unwrap(),
    };
    let interleaved = ctx
        .upload_gate_up_with_limit(
            &layer.gate.data("gate"),
            &layer.up.data("up"),
            gate_up_limit,
        )
        .unwrap();
    let GateUp::Interleaved(merged) = &interleaved else {
        panic!("same type and shape: interleaved");
    };
    assert_eq!(merged.chunks.len(), 4);
    let down_split = ctx
        .upload_experts_with_limit(&layer.down.data("down"), down_limit)
        .unwrap();
    assert_eq!(down_split.chunks.len(), 4);
    let down_whole = ctx.upload_experts(&layer.down.data("down")).unwrap();
    let activation = ExpertActivation::SwiGluClamped { limit: 10.0 };
    for n_tokens in [2, 40] {
        let x = uniform(&mut rng, n_tokens * d, 1.0);
        let ids = random_ids(&mut rng, n_tokens, k, n_experts);
        let route: Vec<f32> = (0..ids.len())
            .map(|_| rand::Rng::random_range(&mut rng, 0.0..1.0))
            .collect();
        let want = layer_reference(&layer, &x, (&ids, &route), k, activation);
        let routing = Routing::from_host(&ctx.buffers(), n_experts, k, &ids, &route).unwrap();
        let xm = ctx
            .buffers()
            .matrix_from_host(n_tokens, d, ActType::F32, &x)
            .unwrap();
        for gate_up in [&separate, &interleaved] {
            for down in [&down_split, &down_whole] {
                let inputs = MoeInputs {
                    x: &xm,
                    norm: None,
                    routing: &routing,
                    experts: ExpertWeights { gate_up, down },
                    biases: None,
                };
                for (mat_vec, int8) in [(true, false), (true, true), (false, false)] {
                    let opts = MoeOptions {
                        activation,
                        tile: TileWidth::T32,
                        path: Path::Reg,
                        mid: ActType::F32,
                        mat_vec,
                        accumulate: false,
                        int8,
                    };
                    let plan = MoePlan::new(&inputs, &opts);
                    assert_eq!(plan.sum, mat_vec && down.chunks.len() == 1);
                    let got = run_layer(ctx, &inputs, &opts);
                    let what = format!(
                        "split T={n_tokens} {} down in {} chunks int8 {int8}: {plan:?}",
                        form(gate_up),
                        down.chunks.len()
                    );
                    let tol = layer_tolerance(opts.path, opts.mid, int8);
                    check_rms(&what, &got, &want, d, tol);
                }
            }
        }
    }
}

#[test]
fn every_key_the_runtime_can_request_is_generated() {
    // The runtime builds keys from an uploaded tensor's type, an activation type, a tile width
    // and a path, plus the fixed helper kernels: every combination must be in the table.
    for weight in WeightType::ALL {
        for act in ActType::ALL {
            for tile in TileWidth::ALL {
                for path in Path::ALL {
                    let key = KernelKey::MmId(MatmulKey {
                        weight,
                        act,
                        tile,
                        path,
                    });
                    assert!(kernels::source(&key).is_some(), "{key}");
                }
            }
            for epilogue in MvEpilogue::ALL {
                for norm in [false, true] {
                    for int8 in [false, true] {
                        let key = KernelKey::MvId {
                            weight,
                            act,
                            epilogue,
                            norm,
                            int8,
                            biased: false,
                        };
                        let folds = act == ActType::F32 && epilogue != MvEpilogue::Sum;
                        let has_int8 = weight.int8_dot_fragments().is_some();
                        assert_eq!(
                            kernels::source(&key).is_some(),
                            (!norm || folds) && (!int8 || has_int8),
                            "{key}"
                        );
                    }
                }
            }
        }
    }
    for tile in TileWidth::ALL {
        assert!(kernels::source(&KernelKey::Map { tile }).is_some());
    }
    for mid in ActType::ALL {
        for interleaved in [false, true] {
            for biased in [false, true] {
                let key = KernelKey::Act {
                    mid,
                    interleaved,
                    biased,
                };
                assert!(kernels::source(&key).is_some());
            }
        }
    }
    for biased in [false, true] {
        assert!(kernels::source(&KernelKey::Sum { biased }).is_some());
    }
}
