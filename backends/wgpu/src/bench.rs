//! Kernel benchmark: times `map`, `mm_id`, `mv_id` and the decode step's fused mat-vecs
//! (`mv_glu`, `mv_sum`) on the expert shapes of real MoE layers
//! with random top-K routing, after checking a sample of each kernel's outputs against an f64
//! reference on an output poisoned with NaN first (a wrong kernel is not measured: its row
//! holds NaNs and the reason goes to stderr).
//!
//! The matmul is the gate/up shape (rows F, cols D, f32 activations, pair p reads token
//! p / K), the shape of llama.cpp's `MUL_MAT_ID` rows in `shared/gpu/H100.md`. Times come from
//! GPU timestamps around each pass (wall clock after a device wait when the adapter has no
//! timestamps); a row reports the median of `iters` runs. GFLOP/s counts 2 * T * K * F * D;
//! GB/s counts each byte once: weights of the experts that received tokens, activations read
//! and outputs written (a lower bound of the traffic). To keep set-up fast, weights are random
//! data quantized for `distinct_experts` experts and repeated over all E.
//!
//! The first row, `copy`, is the device's own copy bandwidth (a buffer-to-buffer copy, bytes
//! read plus written); every row's `of_copy` is its GB/s as a share of it, the yardstick of a
//! memory-bound kernel that no datasheet number is (issue 11 asks the mat-vecs for 60%).

use std::time::Instant;

use moetile::model::WeightData;
use moetile::tile::TileWidth;
use moetile_codegen::{ActType, KernelKey, MatmulKey, MvEpilogue, Path, WeightType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::buffers::GpuMatrix;
use crate::context::WgpuContext;
use crate::error::WgpuError;
use crate::layout::{ExpertTensor, GgmlWeight};
use crate::moe::{self, Matmul, Routing};
use crate::recorder::Recorder;
use crate::timer::Timer;

/// The dimensions of one routed-MoE layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Name in the report.
    pub name: &'static str,
    /// D.
    pub hidden: usize,
    /// F.
    pub expert_width: usize,
    /// E.
    pub n_experts: usize,
    /// K.
    pub n_used: usize,
}

/// DeepSeek-V4-Flash's MoE layer: D 4096, F 2048, E 256, K 6.
pub const DEEPSEEK_V4_FLASH: Shape = Shape {
    name: "deepseek-v4-flash",
    hidden: 4096,
    expert_width: 2048,
    n_experts: 256,
    n_used: 6,
};

/// Qwen3-30B-A3B's MoE layer: D 2048, F 768, E 128, K 8.
pub const QWEN3_30B_A3B: Shape = Shape {
    name: "qwen3-30b-a3b",
    hidden: 2048,
    expert_width: 768,
    n_experts: 128,
    n_used: 8,
};

/// Qwen3-30B-A3B's router as a one-expert layer: 128 f32 rows of D 2048 every token goes
/// through (issue 12: 0.2 ms a layer at 512 tokens, far above its 0.27 GFLOP).
pub const QWEN3_30B_A3B_ROUTER: Shape = Shape {
    name: "qwen3-30b-a3b-router",
    hidden: 2048,
    expert_width: 128,
    n_experts: 1,
    n_used: 1,
};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Layer shapes.
    pub shapes: Vec<Shape>,
    /// Batch lengths T for the tiled kernels.
    pub tokens: Vec<usize>,
    /// Batch lengths T for the mat-vec kernel.
    pub mat_vec_tokens: Vec<usize>,
    /// Weight types.
    pub weights: Vec<WeightType>,
    /// Tile widths.
    pub tiles: Vec<TileWidth>,
    /// Matmul paths (those the device does not run are skipped).
    pub paths: Vec<Path>,
    /// Timed runs per row (after a warm-up of about 100 ms of back-to-back runs).
    pub iters: usize,
    /// Experts with distinct random weights; the rest repeat them.
    pub distinct_experts: usize,
    /// Seed of weights, activations and routing.
    pub seed: u64,
    /// Activation type of the matmul inputs (the llama.cpp anchor uses f32).
    pub act: ActType,
}

impl BenchConfig {
    /// Both shapes, T = 512, 2048, 4096, mat-vec at T = 1, the weight types of the llama.cpp
    /// anchor table and MXFP4 (gpt-oss's experts), every tile width and every path `ctx` runs,
    /// 10 runs a row.
    pub fn default_for(ctx: &WgpuContext) -> BenchConfig {
        BenchConfig {
            shapes: vec![QWEN3_30B_A3B, DEEPSEEK_V4_FLASH],
            tokens: vec![512, 2048, 4096],
            mat_vec_tokens: vec![1],
            weights: vec![
                WeightType::F16,
                WeightType::Q8_0,
                WeightType::Q4_K,
                WeightType::Q2_K,
                WeightType::IQ2_XXS,
                WeightType::MXFP4,
            ],
            tiles: TileWidth::ALL.to_vec(),
            paths: ctx.profile().paths(),
            iters: 10,
            distinct_experts: 4,
            seed: 1,
            act: ActType::F32,
        }
    }
}

/// One measured kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    /// Kernel key name.
    pub kernel: String,
    /// Shape name.
    pub shape: &'static str,
    /// T.
    pub tokens: usize,
    /// Median milliseconds.
    pub ms: f64,
    /// Fastest run, milliseconds.
    pub ms_min: f64,
    /// GFLOP/s at the median (0 for the map).
    pub gflops: f64,
    /// GB/s at the median.
    pub gbs: f64,
    /// Worst checked error as a fraction of its tolerance (0 for the map).
    pub check: f64,
    /// GB/s as a share of the `copy` row's (1 for that row).
    pub of_copy: f64,
}

impl BenchRow {
    /// The CSV columns of [`BenchRow::csv_record`].
    pub const CSV_HEADER: [&'static str; 9] = [
        "kernel", "shape", "tokens", "ms", "ms_min", "gflops", "gbs", "check", "of_copy",
    ];

    /// The row's CSV fields, numbers rounded to what the timing resolves.
    pub fn csv_record(&self) -> [String; 9] {
        [
            self.kernel.clone(),
            self.shape.to_string(),
            self.tokens.to_string(),
            format!("{:.4}", self.ms),
            format!("{:.4}", self.ms_min),
            format!("{:.1}", self.gflops),
            format!("{:.1}", self.gbs),
            format!("{:.3}", self.check),
            format!("{:.3}", self.of_copy),
        ]
    }
}

/// Runs `cfg` on `ctx`, calling `report` with each row as it is measured.
pub fn run_kernel_bench(
    ctx: &WgpuContext,
    cfg: &BenchConfig,
    mut report: impl FnMut(&BenchRow),
) -> moetile::Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    let copy = copy_row(ctx, cfg.iters)?;
    let copy_gbs = copy.gbs;
    let mut emit = |mut row: BenchRow| {
        row.of_copy = row.gbs / copy_gbs;
        report(&row);
        rows.push(row);
    };
    emit(copy);
    let paths: Vec<Path> = cfg
        .paths
        .iter()
        .copied()
        .filter(|p| ctx.profile().supports(*p).is_ok())
        .collect();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    for shape in &cfg.shapes {
        let (d, f, e, k) = (
            shape.hidden,
            shape.expert_width,
            shape.n_experts,
            shape.n_used,
        );
        let max_t = cfg
            .tokens
            .iter()
            .chain(&cfg.mat_vec_tokens)
            .copied()
            .max()
            .unwrap_or(1);
        // Activation values as the kernels see them (rounded through f16 for f16 inputs).
        let x_host: Vec<f32> = (0..max_t * d)
            .map(|_| {
                let v: f32 = rng.random_range(-1.0..1.0);
                match cfg.act {
                    ActType::F32 => v,
                    ActType::F16 => half::f16::from_f32(v).to_f32(),
                }
            })
            .collect();
        for &ty in &cfg.weights {
            let weights = ExpertPool::new(&mut rng, ty, f, d, cfg.distinct_experts)?;
            let w = weights.upload(ctx, e)?;
            for &t in &cfg.tokens {
                let batch = Batch::new(ctx, &mut rng, shape, &x_host, t, cfg.act)?;
                let active = active_experts(&batch.ids, e);
                let bytes = (active as u64 * f as u64 * weights.gpu_row_bytes()) as f64
                    + (t * d * cfg.act.bytes() + t * k * f * 4) as f64;
                let flops = 2.0 * (t * k) as f64 * f as f64 * d as f64;
                for &tile in &cfg.tiles {
                    // One map serves every path: dispatch arguments for each path's row tiles.
                    let groups: Vec<u32> = paths
                        .iter()
                        .filter_map(|&path| {
                            KernelKey::MmId(MatmulKey {
                                weight: ty,
                                act: cfg.act,
                                tile,
                                path,
                            })
                            .row_groups(f as u32)
                        })
                        .collect();
                    let map_key = KernelKey::Map { tile };
                    let mut map = None;
                    let (ms, ms_min) = time(ctx, cfg.iters, &map_key.to_string(), |rec| {
                        map = Some(moe::map(rec, &batch.routing, tile, &groups)?);
                        Ok(())
                    })?;
                    let map = map.expect("timed at least once");
                    if ty == cfg.weights[0] {
                        emit(BenchRow {
                            kernel: map_key.to_string(),
                            shape: shape.name,
                            tokens: t,
                            ms,
                            ms_min,
                            gflops: 0.0,
                            gbs: (t * k * 4 * 3) as f64 / ms / 1e6,
                            check: 0.0,
                            of_copy: 0.0,
                        });
                    }
                    for &path in &paths {
                        let key = MatmulKey {
                            weight: ty,
                            act: cfg.act,
                            tile,
                            path,
                        };
                        let name = KernelKey::MmId(key).to_string();
                        let mm = batch.matmul(&w);
                        let run = |rec: &mut Recorder<'_>| moe::mm_id(rec, key, &map, mm);
                        let timed = check_and_time(ctx, cfg.iters, &name, &batch.out, run, || {
                            weights.check(ctx, &mut rng, &name, &batch, path, 0.0)
                        });
                        emit(BenchRow::timed(name, shape, t, timed, flops, bytes));
                    }
                }
            }
            for &t in &cfg.mat_vec_tokens {
                let batch = Batch::new(ctx, &mut rng, shape, &x_host, t, cfg.act)?;
                for int8 in mat_vec_inputs(ty) {
                    let name = KernelKey::MvId {
                        weight: ty,
                        act: cfg.act,
                        epilogue: MvEpilogue::Rows,
                        norm: false,
                        int8,
                        biased: false,
                    }
                    .to_string();
                    let mm = batch.matmul(&w);
                    let extras = moe::MvExtras {
                        int8,
                        ..moe::MvExtras::default()
                    };
                    let run = |rec: &mut Recorder<'_>| moe::mv_id(rec, &batch.routing, mm, extras);
                    let x_err = input_error(batch.x, int8);
                    let timed = check_and_time(ctx, cfg.iters, &name, &batch.out, run, || {
                        weights.check(ctx, &mut rng, &name, &batch, Path::Reg, x_err)
                    });
                    let active = active_experts(&batch.ids, e);
                    let bytes = (active as u64 * f as u64 * weights.gpu_row_bytes()) as f64
                        + (t * d * cfg.act.bytes() + t * k * f * 4) as f64;
                    let flops = 2.0 * (t * k) as f64 * f as f64 * d as f64;
                    emit(BenchRow::timed(name, shape, t, timed, flops, bytes));
                }
            }
            if !cfg.mat_vec_tokens.is_empty() {
                fused_mat_vecs(ctx, cfg, &mut rng, shape, ty, &x_host, &mut emit)?;
            }
        }
    }
    Ok(rows)
}

/// What a checked output may be off by: `rel` of the sum of |terms| (f32 accumulation), plus
/// `x_err` (the most an input value moves, see [`input_error`]) times the sum of |weights|.
#[derive(Debug, Clone, Copy)]
struct Tolerance {
    rel: f64,
    x_err: f64,
}

/// The mat-vec inputs `ty` runs: f32, and int8 where it has that kernel.
fn mat_vec_inputs(ty: WeightType) -> Vec<bool> {
    match ty.int8_dot_fragments() {
        Some(_) => vec![false, true],
        None => vec![false],
    }
}

/// The most an input value moves on its way into a mat-vec: nothing for f32, half an int8
/// quantum for int8 (d / 2 with d = max|x| / 127 of its 32-value block, at most the whole
/// input's max / 254), with a little room for the rounding of d itself.
fn input_error(x: &[f32], int8: bool) -> f64 {
    match int8 {
        true => x.iter().fold(0f64, |m, v| m.max(v.abs() as f64)) / 254.0 * (1.0 + 1e-5),
        false => 0.0,
    }
}

/// The two mat-vecs a decode step's routed experts run (`moe::layer` on the mat-vec path):
/// `mv_glu` over the gate/up tensor of interleaved rows (`[D, 2F, E]`, writing `mid` in the
/// type the backend stores it) and `mv_sum` over down (`[F, D, E]`, reading that `mid` and
/// summing each token's K pairs), timed and checked like `mv_id`. GB/s counts the active
/// experts' weights, the activations read and the outputs written.
fn fused_mat_vecs(
    ctx: &WgpuContext,
    cfg: &BenchConfig,
    rng: &mut StdRng,
    shape: &Shape,
    ty: WeightType,
    x_host: &[f32],
    emit: &mut impl FnMut(BenchRow),
) -> moetile::Result<()> {
    let (d, f, e, k) = (
        shape.hidden,
        shape.expert_width,
        shape.n_experts,
        shape.n_used,
    );
    let mid_ty = if ctx.profile().shader_f16 {
        ActType::F16
    } else {
        ActType::F32
    };
    let gate_up = ExpertPool::new(rng, ty, 2 * f, d, cfg.distinct_experts)?;
    let down = ExpertPool::new(rng, ty, d, f, cfg.distinct_experts)?;
    let (gate_up_w, down_w) = (gate_up.upload(ctx, e)?, down.upload(ctx, e)?);
    let rel = 1e-5;
    for (&t, int8) in cfg
        .mat_vec_tokens
        .iter()
        .flat_map(|t| mat_vec_inputs(ty).into_iter().map(move |int8| (t, int8)))
    {
        let batch = Batch::new(ctx, rng, shape, x_host, t, cfg.act)?;
        let active = active_experts(&batch.ids, e) as f64;
        let buffers = ctx.buffers();
        let mid = buffers.matrix(t * k, f, mid_ty, "bench mid")?;
        let glu = Matmul {
            w: &gate_up_w,
            act: &batch.act,
            act_row_div: k,
            out: &mid,
            out_col: 0,
        };
        let name = KernelKey::MvId {
            weight: ty,
            act: cfg.act,
            epilogue: MvEpilogue::Glu { mid: mid_ty },
            norm: false,
            int8,
            biased: false,
        }
        .to_string();
        let activation = moetile::model::ExpertActivation::SwiGlu;
        let run = |rec: &mut Recorder<'_>| {
            moe::mv_glu(rec, &batch.routing, glu, activation, None, int8, None)
        };
        let timed = check_and_time(ctx, cfg.iters, &name, &mid, run, || {
            let got = ctx.read_matrix(&mid)?;
            let tol = Tolerance {
                rel,
                x_err: input_error(batch.x, int8),
            };
            gate_up.check_glu(rng, &name, &batch, &got, mid_ty, tol)
        });
        let bytes = active * (2 * f) as f64 * gate_up.gpu_row_bytes() as f64
            + (t * d * cfg.act.bytes() + t * k * f * mid_ty.bytes()) as f64;
        let flops = 2.0 * (t * k) as f64 * (2 * f) as f64 * d as f64;
        emit(BenchRow::timed(name, shape, t, timed, flops, bytes));

        // down reads `mid` as the decode step leaves it: random values in its storage type.
        let mid_host: Vec<f32> = (0..t * k * f)
            .map(|_| {
                let v: f32 = rng.random_range(-1.0..1.0);
                half::f16::from_f32(v).to_f32()
            })
            .collect();
        let mid = buffers.matrix_from_host(t * k, f, mid_ty, &mid_host)?;
        let out = buffers.matrix(t, d, ActType::F32, "bench out")?;
        let sum = Matmul {
            w: &down_w,
            act: &mid,
            act_row_div: 1,
            out: &out,
            out_col: 0,
        };
        let name = KernelKey::MvId {
            weight: ty,
            act: mid_ty,
            epilogue: MvEpilogue::Sum,
            norm: false,
            int8,
            biased: false,
        }
        .to_string();
        let run = |rec: &mut Recorder<'_>| moe::mv_sum(rec, &batch.routing, sum, false, int8, None);
        let timed = check_and_time(ctx, cfg.iters, &name, &out, run, || {
            let got = ctx.read_matrix(&out)?;
            let tol = Tolerance {
                rel,
                x_err: input_error(&mid_host, int8),
            };
            down.check_sum(&name, &batch.ids, k, &mid_host, &got, tol)
        });
        let bytes = active * d as f64 * down.gpu_row_bytes() as f64
            + (t * k * f * mid_ty.bytes() + t * d * 4) as f64;
        let flops = 2.0 * (t * k) as f64 * d as f64 * f as f64;
        emit(BenchRow::timed(name, shape, t, timed, flops, bytes));
    }
    Ok(())
}

/// One measured batch: random routing ids (T tokens to K experts each), the host activations
/// `x (T, D)`, and the device operands made from them with a `(T * K, F)` f32 output.
pub(crate) struct Batch<'a> {
    pub(crate) ids: Vec<u32>,
    x: &'a [f32],
    k: usize,
    pub(crate) routing: Routing,
    act: GpuMatrix,
    pub(crate) out: GpuMatrix,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(
        ctx: &WgpuContext,
        rng: &mut StdRng,
        shape: &Shape,
        x_host: &'a [f32],
        t: usize,
        act: ActType,
    ) -> crate::Result<Batch<'a>> {
        let (d, f, e, k) = (
            shape.hidden,
            shape.expert_width,
            shape.n_experts,
            shape.n_used,
        );
        let ids = random_ids(rng, t, k, e);
        let x = &x_host[..t * d];
        let buffers = ctx.buffers();
        Ok(Batch {
            routing: Routing::from_host(&buffers, e, k, &ids, &vec![1.0; ids.len()])?,
            act: buffers.matrix_from_host(t, d, act, x)?,
            out: buffers.matrix(t * k, f, ActType::F32, "bench out")?,
            ids,
            x,
            k,
        })
    }

    /// The batch as the operands of a matmul over `w`.
    pub(crate) fn matmul<'b>(&'b self, w: &'b ExpertTensor) -> Matmul<'b> {
        Matmul {
            w,
            act: &self.act,
            act_row_div: self.k,
            out: &self.out,
            out_col: 0,
        }
    }
}

/// `(median ms, min ms, check)` from `run`; a kernel that fails (wrong output, a device error)
/// is reported on stderr and gets a row of NaNs, so one broken kernel does not hide the others.
fn measure(name: &str, run: impl FnOnce() -> moetile::Result<(f64, f64, f64)>) -> (f64, f64, f64) {
    run().unwrap_or_else(|e| {
        eprintln!("{name}: not measured: {e}");
        (f64::NAN, f64::NAN, f64::NAN)
    })
}

/// Poisons `out`, runs `run` once and checks the result with `check`: the worst error as a
/// fraction of its tolerance, or the error saying where the kernel is wrong.
pub(crate) fn run_checked(
    ctx: &WgpuContext,
    name: &str,
    out: &GpuMatrix,
    run: impl Fn(&mut Recorder<'_>) -> crate::Result<()>,
    check: impl FnOnce() -> moetile::Result<f64>,
) -> moetile::Result<f64> {
    ctx.fill(out, f32::NAN);
    ctx.record(name, run)?;
    check()
}

/// [`run_checked`], then times `run`: `(median ms, min ms, check)`, or NaNs when a step fails
/// (see [`measure`]).
fn check_and_time(
    ctx: &WgpuContext,
    iters: usize,
    name: &str,
    out: &GpuMatrix,
    run: impl Fn(&mut Recorder<'_>) -> crate::Result<()> + Copy,
    check: impl FnOnce() -> moetile::Result<f64>,
) -> (f64, f64, f64) {
    measure(name, || {
        let check = run_checked(ctx, name, out, run, check)?;
        let (ms, ms_min) = time(ctx, iters, name, run)?;
        Ok((ms, ms_min, check))
    })
}

impl BenchRow {
    /// The row of `kernel` timed at `(ms, ms_min, check)` doing `flops` and moving `bytes`.
    fn timed(
        kernel: String,
        shape: &Shape,
        tokens: usize,
        (ms, ms_min, check): (f64, f64, f64),
        flops: f64,
        bytes: f64,
    ) -> BenchRow {
        BenchRow {
            kernel,
            shape: shape.name,
            tokens,
            ms,
            ms_min,
            gflops: flops / ms / 1e6,
            gbs: bytes / ms / 1e6,
            check,
            of_copy: 0.0,
        }
    }
}

/// Bytes the `copy` row copies: far past every cache (the H100's L2 is 50 MB); a quarter of
/// that on CPU adapters, where the copy is a memcpy and only shows the row works.
const COPY_BYTES: u64 = 256 << 20;
/// Copies per timed submission: the wall clock of one submission also holds its launch and
/// the wait for it, spread over this many copies.
const COPIES_PER_RUN: u32 = 8;

/// The `copy` row: one buffer copied into another, `COPIES_PER_RUN` times a submission, the
/// median over `iters` submissions (after one untimed) on the wall clock after a device wait
/// (copies are outside the compute passes the timestamps bracket). GB/s counts the bytes read
/// and written.
fn copy_row(ctx: &WgpuContext, iters: usize) -> moetile::Result<BenchRow> {
    let profile = ctx.profile();
    let size = match profile.device_type {
        wgpu::DeviceType::Cpu => COPY_BYTES / 4,
        _ => COPY_BYTES,
    }
    .min(profile.max_buffer)
        & !3;
    let buffer = |label, usage| {
        ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let src = buffer("copy source", wgpu::BufferUsages::COPY_SRC);
    let dst = buffer("copy destination", wgpu::BufferUsages::COPY_DST);
    let run = || -> crate::Result<f64> {
        let start = Instant::now();
        let (_, submission) = ctx.record_timed("copy", None, |rec| {
            for _ in 0..COPIES_PER_RUN {
                rec.encoder().copy_buffer_to_buffer(&src, 0, &dst, 0, size);
            }
            Ok(())
        })?;
        ctx.wait(&submission, "copy")?;
        Ok(start.elapsed().as_secs_f64() * 1e3 / f64::from(COPIES_PER_RUN))
    };
    run()?;
    let mut times = (0..iters.max(1))
        .map(|_| run())
        .collect::<crate::Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    let (ms, ms_min) = (times[times.len() / 2], times[0]);
    Ok(BenchRow {
        kernel: "copy".to_string(),
        shape: "-",
        tokens: 0,
        ms,
        ms_min,
        gflops: 0.0,
        gbs: 2.0 * size as f64 / ms / 1e6,
        check: 0.0,
        of_copy: 1.0,
    })
}

/// GPU time a row runs back to back before it is timed: the H100's clocks drop while the host
/// quantizes and checks, and two warm-up runs did not bring them back (the first row after a
/// pause measured up to 2x slow).
const WARM_UP_MS: f64 = 100.0;

/// Median and minimum milliseconds of `iters` runs of `encode`, after a warm-up of about
/// [`WARM_UP_MS`] of back-to-back runs.
pub(crate) fn time(
    ctx: &WgpuContext,
    iters: usize,
    op: &str,
    mut encode: impl FnMut(&mut Recorder<'_>) -> crate::Result<()>,
) -> crate::Result<(f64, f64)> {
    let mut timer = Timer::new(ctx, 1);
    let mut run =
        |encode: &mut dyn FnMut(&mut Recorder<'_>) -> crate::Result<()>| -> crate::Result<f64> {
            let start = Instant::now();
            let (_, submission) = ctx.record_timed(op, timer.as_mut(), |rec| encode(rec))?;
            Ok(match timer.as_mut() {
                Some(t) => t.read(ctx)?.first().map(|(_, ms)| *ms).unwrap_or(0.0),
                None => {
                    ctx.wait(&submission, op)?;
                    start.elapsed().as_secs_f64() * 1e3
                }
            })
        };
    let first = run(&mut encode)?;
    let batch = (WARM_UP_MS / first.max(1e-3)).ceil().clamp(1.0, 200.0) as usize;
    let (_, submission) = ctx.record_timed(op, None, |rec| {
        for _ in 0..batch {
            encode(rec)?;
        }
        Ok(())
    })?;
    ctx.wait(&submission, op)?;
    let mut times = (0..iters.max(1))
        .map(|_| run(&mut encode))
        .collect::<crate::Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[0]))
}

/// `distinct` experts of random `rows x cols` weights of one type, quantized once.
pub(crate) struct ExpertPool {
    ty: WeightType,
    rows: usize,
    cols: usize,
    /// Per distinct expert: GGUF bytes and exact dequantized values.
    experts: Vec<(Vec<u8>, Vec<f32>)>,
}

impl ExpertPool {
    pub(crate) fn new(
        rng: &mut StdRng,
        ty: WeightType,
        rows: usize,
        cols: usize,
        distinct: usize,
    ) -> moetile::Result<ExpertPool> {
        let seeds: Vec<u64> = (0..distinct.max(1)).map(|_| rng.random()).collect();
        let experts = std::thread::scope(|s| {
            let handles: Vec<_> = seeds
                .iter()
                .map(|&seed| {
                    s.spawn(move || -> moetile::Result<(Vec<u8>, Vec<f32>)> {
                        let mut rng = StdRng::seed_from_u64(seed);
                        let raw: Vec<f32> = (0..rows * cols)
                            .map(|_| rng.random_range(-1.0..1.0))
                            .collect();
                        let mut bytes = Vec::new();
                        moetile::quant::quantize(ty.ggml(), &raw, &mut bytes)?;
                        let mut values = vec![0.0; raw.len()];
                        moetile::quant::dequantize(ty.ggml(), &bytes, &mut values)?;
                        Ok((bytes, values))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("quantizer threads do not panic"))
                .collect::<moetile::Result<Vec<_>>>()
        })?;
        Ok(ExpertPool {
            ty,
            rows,
            cols,
            experts,
        })
    }

    fn gpu_row_bytes(&self) -> u64 {
        (self.cols / self.ty.block_values() as usize) as u64 * self.ty.gpu_block_bytes() as u64
    }

    /// Uploads `n_experts` experts, expert `e` being distinct expert `e % distinct`.
    pub(crate) fn upload(
        &self,
        ctx: &WgpuContext,
        n_experts: usize,
    ) -> moetile::Result<ExpertTensor> {
        let mut bytes = Vec::with_capacity(n_experts * self.experts[0].0.len());
        for e in 0..n_experts {
            bytes.extend_from_slice(&self.experts[e % self.experts.len()].0);
        }
        let dims = [self.cols, self.rows, n_experts];
        Ok(ctx.upload_experts(&WeightData {
            name: "bench experts",
            ty: self.ty.ggml(),
            dims: &dims,
            bytes: &bytes,
        })?)
    }

    /// `(W[e] row r . x, tolerance)` in f64, `e` the distinct expert serving routed id `id`.
    fn dot(&self, id: u32, r: usize, x: &[f32], tol: Tolerance) -> (f64, f64) {
        let (_, w) = &self.experts[id as usize % self.experts.len()];
        let wr = &w[r * self.cols..(r + 1) * self.cols];
        let (s, a, wa) = wr
            .iter()
            .zip(x)
            .fold((0.0, 0.0, 0.0), |(s, a, wa), (&wi, &xi)| {
                let term = wi as f64 * xi as f64;
                (s + term, a + term.abs(), wa + (wi as f64).abs())
            });
        (s, tol.rel * a + tol.x_err * wa)
    }

    /// Checks all rows of 8 random pairs of `out` against f64 dot products; returns the worst
    /// error as a fraction of the path's tolerance (see the kernel tests) with inputs that
    /// move by up to `x_err`.
    pub(crate) fn check(
        &self,
        ctx: &WgpuContext,
        rng: &mut StdRng,
        kernel: &str,
        batch: &Batch<'_>,
        path: Path,
        x_err: f64,
    ) -> moetile::Result<f64> {
        let Batch { ids, x, k, out, .. } = batch;
        let tol = Tolerance {
            rel: match path {
                Path::Reg => 1e-5,
                Path::Coop16 | Path::Coop8 => 2e-3,
            },
            x_err,
        };
        let got = ctx.read_matrix(out)?;
        let mut worst = 0f64;
        for _ in 0..8 {
            let p = rng.random_range(0..ids.len());
            let xr = &x[(p / k) * self.cols..(p / k + 1) * self.cols];
            for r in 0..self.rows {
                let (want, tol) = self.dot(ids[p], r, xr, tol);
                let at = format!("pair {p} row {r}");
                worst = worst.max(verdict(kernel, &at, got[p * self.rows + r], want, tol)?);
            }
        }
        Ok(worst)
    }

    /// [`Self::check`] for `mv_glu` over this pool as a gate/up tensor of interleaved rows:
    /// `got` is `mid (pairs, rows / 2)` = swiglu(gate . x, up . x) (route weights 1), in
    /// `mid_ty` (f16 adds its rounding to the tolerance).
    fn check_glu(
        &self,
        rng: &mut StdRng,
        kernel: &str,
        batch: &Batch<'_>,
        got: &[f32],
        mid_ty: ActType,
        tol: Tolerance,
    ) -> moetile::Result<f64> {
        let Batch { ids, x, k, .. } = batch;
        let storage = match mid_ty {
            ActType::F32 => 0.0,
            ActType::F16 => 1.0 / 1024.0,
        };
        let n_out = self.rows / 2;
        let mut worst = 0f64;
        for _ in 0..8 {
            let p = rng.random_range(0..ids.len());
            let xr = &x[(p / k) * self.cols..(p / k + 1) * self.cols];
            for i in 0..n_out {
                let (g, g_err) = self.dot(ids[p], 2 * i, xr, tol);
                let (u, u_err) = self.dot(ids[p], 2 * i + 1, xr, tol);
                let sigmoid = 1.0 / (1.0 + (-g).exp());
                let silu = g * sigmoid;
                // The error of g and u carried through silu(g) * u.
                let d_silu = sigmoid * (1.0 + g * (1.0 - sigmoid));
                let bound =
                    g_err * (u * d_silu).abs() + u_err * silu.abs() + storage * (silu * u).abs();
                let at = format!("pair {p} column {i}");
                worst = worst.max(verdict(kernel, &at, got[p * n_out + i], silu * u, bound)?);
            }
        }
        Ok(worst)
    }

    /// [`Self::check`] for `mv_sum` over this pool as down: `got` is `out (T, rows)`, row t
    /// the sum over its K pairs of `W[ids[t*K + k]] . mid[t*K + k]`.
    fn check_sum(
        &self,
        kernel: &str,
        ids: &[u32],
        k: usize,
        mid: &[f32],
        got: &[f32],
        tol: Tolerance,
    ) -> moetile::Result<f64> {
        let mut worst = 0f64;
        for t in 0..ids.len() / k {
            for r in 0..self.rows {
                let (want, tol) = (t * k..(t + 1) * k)
                    .map(|p| {
                        let x = &mid[p * self.cols..(p + 1) * self.cols];
                        self.dot(ids[p], r, x, tol)
                    })
                    .fold((0.0, 0.0), |(s, a), (ds, da)| (s + ds, a + da));
                let at = format!("token {t} row {r}");
                worst = worst.max(verdict(kernel, &at, got[t * self.rows + r], want, tol)?);
            }
        }
        Ok(worst)
    }
}

/// `|got - want|` as a fraction of `tol` (NaN, an unwritten output, fails), or a verification
/// error naming `kernel` and where (`at`) when over 1.
fn verdict(kernel: &str, at: &str, got: f32, want: f64, tol: f64) -> moetile::Result<f64> {
    let ratio = (got as f64 - want).abs() / (tol + 1e-6);
    if ratio.is_nan() || ratio > 1.0 {
        return Err(WgpuError::Verification {
            kernel: kernel.to_string(),
            detail: format!("{at}: got {got}, want {want}"),
        }
        .into());
    }
    Ok(ratio)
}

fn random_ids(rng: &mut StdRng, n_tokens: usize, k: usize, n_experts: usize) -> Vec<u32> {
    let mut ids = Vec::with_capacity(n_tokens * k);
    for _ in 0..n_tokens {
        let start = ids.len();
        while ids.len() < start + k {
            let e = rng.random_range(0..n_experts as u32);
            if !ids[start..].contains(&e) {
                ids.push(e);
            }
        }
    }
    ids
}

fn active_experts(ids: &[u32], n_experts: usize) -> usize {
    let mut seen = vec![false; n_experts];
    ids.iter().for_each(|&e| seen[e as usize] = true);
    seen.iter().filter(|&&s| s).count()
}
