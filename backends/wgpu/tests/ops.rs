//! Every op of `WgpuBackend` against `moetile_cpu::CpuBackend` on fresh random inputs, with
//! every output, intermediate and KV cache poisoned with NaN first (an element a kernel never
//! writes fails the check).
//!
//! Tolerances, each against the CPU reference (f32 storage, f64 arithmetic):
//! - embed: |err| <= 1e-6 * max(1, |want|). Dequantization is exact except that the GPU may
//!   fuse `q * d + m` into one FMA (half an ulp).
//! - matmul: 1e-5 * sum_i |w_i x_i| on the register path (f32 accumulation over <= 256
//!   products, see tests/kernels.rs), 2e-3 on cooperative paths (f16 tiles).
//! - rms_norm (with or without the fused residual add, itself one f32 rounding as on the CPU),
//!   element-wise ops, route weights: 1e-6 relative (+1e-6 absolute): a few f32 roundings of
//!   values around 1.
//! - attention (values in [-1, 1]; q/k norms and RoPE, whose angles are f64 on the host,
//!   rounded once, add a few f32 roundings of values around 1): 1e-5 absolute with an f32
//!   cache (f32 scores and softmax over <= 1000 keys; measured <= 1e-6), 2e-3 with the default
//!   f16 cache (keys and values rounded to 2^-11 relative; through scores of size ~1-3 that
//!   moves the softmax weights by ~1e-3 relative; measured <= 4.5e-4). gpt-oss's attention
//!   (sinks, sliding window, YaRN, whose magnitude 1.35 at factor 32 scales scores by 1.8) is
//!   held to the same bounds (measured <= 0.09 of the f32 one, 0.5 of the f16 one).
//! - moe_biased: as moe_out, at `moe_biased_matches_cpu_with_gate_up_and_down_biases`.
//! - route ids: exact, including ties (to the lower id); sqrt-softplus route weights 1e-5
//!   relative (`route_tolerance`: GPUs' `log` near 1).
//! - hyper-connections (`hc_pre`, `hc_post`): derived per value at `hyper_connection_matches_cpu`;
//!   the output head's mix (`hc_head`) at `output_head_mix_matches_cpu`.
//! - compressor_pool: relative, derived at `compressor_pool_matches_cpu`.
//! - delta_net: relative to each head's scale, derived at `delta_net_matches_cpu`.
//! - grouped_matmul: `cols` half-ulps of `sum_i |w_i x_i|` on the register path (`sum_tolerance`).

mod common;

use std::collections::HashSet;

use common::{Weights, random_blocks, rng, shared_ctx, uniform};
use moetile::model::gptoss::{GptOssAttentionParams, Yarn};
use moetile::model::qwen35moe::{DeltaNetConfig, DeltaNetWeights, Mixer, Qwen35MoeConfig};
use moetile::model::{
    AttentionParams, Backend, DeltaNetParams, ExpertActivation, ExpertBiases, ExpertWeights,
    GateUp, Gating, HC_MIXES, HC_STREAMS, HyperParams, HyperWeights, MoeParams, PoolParams,
    PoolWeights, PreNorm, RopeParams, RouterParams, Selection, Stage, WeightData,
};
use moetile::tile::TileWidth;
use moetile_cpu::{CpuBackend, CpuWeight};
use moetile_wgpu::attention::{self, AttnInputs, CacheSlot};
use moetile_wgpu::{
    ActType, AttentionKernel, BackendOptions, DECODE_MAX_SPLITS, GgmlWeight, HEAD_DIMS, KvCache,
    Path, WeightType, WgpuBackend, WgpuError,
};
use rand::Rng;
use rand::rngs::StdRng;

/// A poisoning backend on the test device with an exact (f32) or the default (f16) cache, its
/// mat-vecs on f32 inputs (the int8 ones are checked against their own reference in
/// tests/kernels.rs, alone and in whole MoE layers).
fn backend(kv: ActType) -> Option<WgpuBackend> {
    let ctx = shared_ctx()?;
    let options = BackendOptions {
        kv,
        poison: true,
        mat_vec_max_tokens: 4,
        int8_mat_vec: false,
        ..BackendOptions::for_device(ctx)
    };
    Some(WgpuBackend::with_options(ctx.clone(), options).unwrap())
}

fn f32_data<'a>(name: &'a str, dims: &'a [usize], values: &'a [f32]) -> WeightData<'a> {
    WeightData {
        name,
        ty: moetile::quant::GgmlType::F32,
        dims,
        bytes: bytemuck::cast_slice(values),
    }
}

/// The path a dense matmul of `ty` runs on `gpu` (F32 weights always take the register path).
fn dense_path(gpu: &WgpuBackend, ty: WeightType) -> Path {
    if ty == WeightType::F32 {
        Path::Reg
    } else {
        gpu.options().path
    }
}

/// Uploads the same tensor to both backends.
fn upload_both(
    gpu: &mut WgpuBackend,
    cpu: &mut CpuBackend,
    w: WeightData<'_>,
) -> (moetile_wgpu::ExpertTensor, moetile_cpu::CpuWeight) {
    (gpu.upload(w).unwrap(), cpu.upload(w).unwrap())
}

/// `|got - want| <= rel * scale(i) + abs` for every element; NaN fails. Prints the worst.
fn check_close(label: &str, got: &[f32], want: &[f32], bound: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len(), "{label}: lengths");
    let mut bad = Vec::new();
    let mut worst = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs();
        let b = bound(i);
        if g.is_nan() || err > b {
            bad.push((i, g, w, b));
        } else {
            worst = worst.max(err / b);
        }
    }
    for (i, g, w, b) in bad.iter().take(8) {
        eprintln!("{label}: [{i}] got {g}, want {w} (bound {b:.3e})");
    }
    assert!(
        bad.is_empty(),
        "{label}: {} of {} wrong",
        bad.len(),
        got.len()
    );
    eprintln!("{label}: worst error {:.2} of its bound", worst);
}

fn rel(want: &[f32], r: f64) -> impl Fn(usize) -> f64 + '_ {
    move |i| r * (want[i] as f64).abs() + 1e-6
}

fn gpu_act(
    gpu: &mut WgpuBackend,
    rows: usize,
    cols: usize,
    data: &[f32],
) -> moetile_wgpu::GpuMatrix {
    gpu.act_from_host(rows, cols, data).unwrap()
}

fn cpu_act(rows: usize, cols: usize, data: &[f32]) -> moetile_cpu::Mat {
    moetile_cpu::Mat {
        rows,
        cols,
        data: data.to_vec(),
    }
}

#[test]
fn embed_dequantizes_rows_of_every_weight_type() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("embed_dequantizes_rows_of_every_weight_type");
    let (d, vocab) = (256, 40);
    for ty in WeightType::ALL {
        let bytes = random_blocks(&mut rng, ty, d * vocab);
        let dims = [d, vocab];
        let data = WeightData {
            name: "token_embd.weight",
            ty: ty.ggml(),
            dims: &dims,
            bytes: &bytes,
        };
        let (gw, cw) = upload_both(&mut gpu, &mut cpu, data);
        // Repeats, the first and the last row, and a batch that is not a whole tile.
        let mut tokens: Vec<u32> = (0..37).map(|_| rng.random_range(0..vocab as u32)).collect();
        tokens.extend([0, vocab as u32 - 1, tokens[3]]);
        let got = gpu.embed(&gw, &tokens).unwrap();
        let got = gpu.read(&got).unwrap();
        let want = cpu.embed(&cw, &tokens).unwrap();
        check_close(&format!("embed {ty}"), &got, &want.data, |i| {
            1e-6 * (want.data[i] as f64).abs().max(1.0)
        });
    }
    let table = gpu.upload(f32_data("t", &[32, 4], &[0.0; 128])).unwrap();
    let err = gpu.embed(&table, &[1, 4]).unwrap_err().to_string();
    assert!(
        err.contains("token 4 is outside the vocabulary of 4"),
        "{err}"
    );
}

/// `sum_i |w_i x_i|` per output of `x (T, cols) @ w^T`: the scale of f32 rounding errors.
fn abs_dot(x: &[f32], w: &[f32], cols: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for xr in x.chunks(cols) {
        for wr in w.chunks(cols) {
            out.push(xr.iter().zip(wr).map(|(a, b)| (a * b).abs() as f64).sum());
        }
    }
    out
}

#[test]
fn matmul_matches_cpu_for_every_weight_type() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("matmul_matches_cpu_for_every_weight_type");
    // 96 output rows: not a multiple of the 64-row tile. T = 1, 4: mat-vec; 5, 37: one
    // partial 32-token tile; 70: a 64-token tile and a partial one; 130: 128 + 2.
    let (cols, rows) = (256, 96);
    for ty in WeightType::ALL {
        let w = Weights::random(&mut rng, ty, 1, rows, cols);
        let data = w.matrix_data("w");
        let (gw, cw) = upload_both(&mut gpu, &mut cpu, data);
        let path = dense_path(&gpu, ty);
        let tol = if path == Path::Reg { 1e-5 } else { 2e-3 };
        for t in [1, 4, 5, 37, 70, 130] {
            let x = uniform(&mut rng, t * cols, 1.0);
            let gx = gpu_act(&mut gpu, t, cols, &x);
            let got = gpu.matmul(&gx, &gw).unwrap();
            let got = gpu.read(&got).unwrap();
            let want = cpu.matmul(&cpu_act(t, cols, &x), &cw).unwrap();
            let scale = abs_dot(&x, &w.values, cols);
            check_close(&format!("matmul {ty} T={t}"), &got, &want.data, |i| {
                tol * scale[i] + 1e-6
            });
        }
    }
}

/// A dense tensor larger than the storage binding limit (an output head or embedding table of
/// a big vocabulary) is cut into equal slices of rows over several buffers; matmul (mat-vec and
/// tiled) and embed see the whole tensor.
#[test]
fn dense_tensor_over_the_binding_limit_is_sliced_by_rows() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("dense_tensor_over_the_binding_limit_is_sliced_by_rows");
    // 98 rows of 288 GPU bytes (Q8_0, 256 values) under a 48-row limit: 2 slices of 49 rows do
    // not fit, 7 of 14 do, 3 per buffer: buffers of 3, 3 and 1 slices.
    let (cols, rows) = (256, 98);
    for ty in [WeightType::Q8_0, WeightType::Q4_K] {
        let w = Weights::random(&mut rng, ty, 1, rows, cols);
        let data = w.matrix_data("output.weight");
        let row_bytes = (cols / ty.block_values() as usize * ty.gpu_block_bytes() as usize) as u64;
        let gw = gpu
            .context()
            .upload_experts_with_limit(&data, 48 * row_bytes)
            .unwrap();
        let cw = cpu.upload(data).unwrap();
        assert_eq!((gw.slices, gw.experts, gw.rows), (7, 7, 14), "{ty}");
        let per_buffer: Vec<u32> = gw.chunks.iter().map(|c| c.expert_count).collect();
        assert_eq!(per_buffer, [3, 3, 1], "{ty}");

        let path = gpu.options().path;
        let tol = if path == Path::Reg { 1e-5 } else { 2e-3 };
        // T = 1, 4: mat-vec; 37, 70: tiled.
        for t in [1, 4, 37, 70] {
            let x = uniform(&mut rng, t * cols, 1.0);
            let gx = gpu_act(&mut gpu, t, cols, &x);
            let got = gpu.matmul(&gx, &gw).unwrap();
            assert_eq!(gpu.shape(&got), (t, rows));
            let got = gpu.read(&got).unwrap();
            let want = cpu.matmul(&cpu_act(t, cols, &x), &cw).unwrap();
            let scale = abs_dot(&x, &w.values, cols);
            check_close(
                &format!("sliced matmul {ty} T={t}"),
                &got,
                &want.data,
                |i| tol * scale[i] + 1e-6,
            );
        }

        // Every buffer's first and last row, and rows across a slice boundary.
        let tokens = [0, 41, 42, 43, 84, 97, 13, 14, 55, 0];
        let got = gpu.embed(&gw, &tokens).unwrap();
        let got = gpu.read(&got).unwrap();
        let want = cpu.embed(&cw, &tokens).unwrap();
        check_close(&format!("sliced embed {ty}"), &got, &want.data, |i| {
            1e-6 * (want.data[i] as f64).abs().max(1.0)
        });
        let err = gpu.embed(&gw, &[98]).unwrap_err().to_string();
        assert!(err.contains("outside the vocabulary of 98"), "{err}");
    }
}

/// A folded RMS norm by `weight` (epsilon 1e-5).
fn pre<W>(weight: &W) -> PreNorm<'_, W> {
    PreNorm { weight, eps: 1e-5 }
}

/// Weights stacked by rows (q, k and v of a layer) fill their own columns of one output: a
/// sliced weight between two of other types, on the mat-vec and the tiled paths (every tile
/// width, poisoned output), with and without the RMS norm of x folded in (its f32 rounding is
/// ~1e-7 relative per value, inside the matmul's bound).
#[test]
fn project_fills_each_weights_columns() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("project_fills_each_weights_columns");
    let cols = 256;
    let (mut gws, mut cws, mut parts) = (Vec::new(), Vec::new(), Vec::new());
    for (ty, rows, slice_limit) in [
        (WeightType::Q4_K, 96, None),
        (WeightType::Q8_0, 98, Some(48)),
        (WeightType::Q6_K, 32, None),
    ] {
        let w = Weights::random(&mut rng, ty, 1, rows, cols);
        let data = w.matrix_data("w");
        let gw = match slice_limit {
            Some(limit) => {
                let row_bytes = cols / ty.block_values() as usize * ty.gpu_block_bytes() as usize;
                let gw = gpu
                    .context()
                    .upload_experts_with_limit(&data, (limit * row_bytes) as u64)
                    .unwrap();
                assert!(gw.slices > 1, "{ty} is sliced");
                gw
            }
            None => gpu.upload(data).unwrap(),
        };
        gws.push(gw);
        cws.push(cpu.upload(data).unwrap());
        parts.push((w.values, rows));
    }
    let total: usize = parts.iter().map(|p| p.1).sum();
    let tol = if gpu.options().path == Path::Reg {
        1e-5
    } else {
        2e-3
    };
    let norm_w = uniform(&mut rng, cols, 1.0);
    let (gnorm, cnorm) = upload_both(&mut gpu, &mut cpu, f32_data("norm", &[cols], &norm_w));
    // T = 1, 4: mat-vec; 37, 70, 130: tiled, with 32-, 64- and 128-token tiles placing their
    // rows through the stacked output's stride and column.
    for (t, normed) in [
        (1, false),
        (4, false),
        (37, false),
        (70, false),
        (130, false),
        (1, true),
        (3, true),
        (37, true),
    ] {
        let x = uniform(&mut rng, t * cols, 3.0);
        let gx = gpu_act(&mut gpu, t, cols, &x);
        let got = gpu.project(&gx, normed.then(|| pre(&gnorm)), &gws).unwrap();
        assert_eq!(gpu.shape(&got), (t, total));
        let got = gpu.read(&got).unwrap();
        let cx = cpu_act(t, cols, &x);
        let want = cpu.project(&cx, normed.then(|| pre(&cnorm)), &cws).unwrap();
        let x_read = match normed {
            true => cpu.rms_norm(&cx, &cnorm, 1e-5).unwrap().data,
            false => x,
        };
        let scales: Vec<Vec<f64>> = parts.iter().map(|p| abs_dot(&x_read, &p.0, cols)).collect();
        // Element (token, column) of the output lies in one weight's rows.
        let scale = |i: usize| {
            let (token, mut col) = (i / total, i % total);
            for (s, &(_, rows)) in scales.iter().zip(&parts) {
                if col < rows {
                    return s[token * rows + col];
                }
                col -= rows;
            }
            unreachable!("column within the total")
        };
        check_close(
            &format!("project T={t} normed {normed}"),
            &got,
            &want.data,
            |i| tol * scale(i) + 1e-6,
        );
    }
}

#[test]
fn rms_norm_per_row_and_per_head() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("rms_norm_per_row_and_per_head");
    // Rows of 4 heads of 32 (norm over a row, and per head as qwen3's q/k norms), and a long
    // row that takes several strided steps per thread.
    for (t, cols, group) in [(7, 128, 128), (7, 128, 32), (3, 2880, 2880)] {
        let x = uniform(&mut rng, t * cols, 2.0);
        let w = uniform(&mut rng, group, 1.0);
        let dims = [group];
        let (gw, cw) = upload_both(&mut gpu, &mut cpu, f32_data("norm", &dims, &w));
        let gx = gpu_act(&mut gpu, t, cols, &x);
        let got = gpu.rms_norm(&gx, &gw, 1e-6).unwrap();
        let got = gpu.read(&got).unwrap();
        let want = cpu.rms_norm(&cpu_act(t, cols, &x), &cw, 1e-6).unwrap();
        check_close(
            &format!("rms_norm {t}x{cols} / {group}"),
            &got,
            &want.data,
            rel(&want.data, 1e-6),
        );
    }
}

/// `x += a @ w^T`: one mat-vec adding into x for small batches, a matmul and an add for
/// large ones, against the CPU's default composition.
#[test]
fn matmul_add_matches_cpu() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("matmul_add_matches_cpu");
    let (cols, rows) = (256, 96);
    let w = Weights::random(&mut rng, WeightType::Q4_K, 1, rows, cols);
    let dims = [cols, rows];
    let data = WeightData {
        name: "w",
        ty: WeightType::Q4_K.ggml(),
        dims: &dims,
        bytes: &w.bytes,
    };
    let (gw, cw) = upload_both(&mut gpu, &mut cpu, data);
    let tol = if gpu.options().path == Path::Reg {
        1e-5
    } else {
        2e-3
    };
    for t in [1, 4, 37] {
        let a = uniform(&mut rng, t * cols, 1.0);
        let x = uniform(&mut rng, t * rows, 2.0);
        let mut gx = gpu_act(&mut gpu, t, rows, &x);
        let ga = gpu_act(&mut gpu, t, cols, &a);
        gpu.matmul_add(&mut gx, &ga, &gw).unwrap();
        let mut cx = cpu_act(t, rows, &x);
        cpu.matmul_add(&mut cx, &cpu_act(t, cols, &a), &cw).unwrap();
        let scale = abs_dot(&a, &w.values, cols);
        // One more f32 rounding, of the sum: 1e-6 relative.
        check_close(
            &format!("matmul_add T={t}"),
            &gpu.read(&gx).unwrap(),
            &cx.data,
            |i| tol * scale[i] + 1e-6 * (cx.data[i] as f64).abs() + 1e-6,
        );
    }
}

#[test]
fn elementwise_ops_match_cpu() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("elementwise_ops_match_cpu");
    let (t, cols) = (37, 100);
    let x = uniform(&mut rng, t * cols, 3.0);
    let y = uniform(&mut rng, t * cols, 3.0);
    let bias = uniform(&mut rng, cols, 1.0);
    let gate = uniform(&mut rng, t, 4.0);
    let dims = [cols];
    let (gb, cb) = upload_both(&mut gpu, &mut cpu, f32_data("bias", &dims, &bias));

    let mut gx = gpu_act(&mut gpu, t, cols, &x);
    let gy = gpu_act(&mut gpu, t, cols, &y);
    let gg = gpu_act(&mut gpu, t, 1, &gate);
    let mut cx = cpu_act(t, cols, &x);
    let cy = cpu_act(t, cols, &y);
    let cg = cpu_act(t, 1, &gate);

    gpu.add(&mut gx, &gy).unwrap();
    cpu.add(&mut cx, &cy).unwrap();
    check_close(
        "add",
        &gpu.read(&gx).unwrap(),
        &cx.data,
        rel(&cx.data, 1e-6),
    );
    gpu.add_bias(&mut gx, &gb).unwrap();
    cpu.add_bias(&mut cx, &cb).unwrap();
    check_close(
        "add_bias",
        &gpu.read(&gx).unwrap(),
        &cx.data,
        rel(&cx.data, 1e-6),
    );
    gpu.mul_sigmoid(&mut gx, &gg).unwrap();
    cpu.mul_sigmoid(&mut cx, &cg).unwrap();
    check_close(
        "mul_sigmoid (a gate per row)",
        &gpu.read(&gx).unwrap(),
        &cx.data,
        rel(&cx.data, 1e-6),
    );
    gpu.mul_sigmoid(&mut gx, &gy).unwrap();
    cpu.mul_sigmoid(&mut cx, &cy).unwrap();
    check_close(
        "mul_sigmoid (a gate per value)",
        &gpu.read(&gx).unwrap(),
        &cx.data,
        rel(&cx.data, 1e-6),
    );
    let gs = gpu.swiglu(&gx, &gy).unwrap();
    let cs = cpu.swiglu(&cx, &cy).unwrap();
    check_close(
        "swiglu",
        &gpu.read(&gs).unwrap(),
        &cs.data,
        rel(&cs.data, 1e-6),
    );
    // deepseek4's streams: each row repeated HC_STREAMS times, exactly.
    let ge = gpu.hc_expand(&gy).unwrap();
    let ce = cpu.hc_expand(&cy).unwrap();
    assert_eq!(gpu.shape(&ge), (t, HC_STREAMS * cols));
    check_close("hc_expand", &gpu.read(&ge).unwrap(), &ce.data, |_| 0.0);
    let gl = gpu.last_row(&gs).unwrap();
    let cl = cpu.last_row(&cs).unwrap();
    assert_eq!(gpu.shape(&gl), (1, cols));
    check_close(
        "last_row",
        &gpu.read(&gl).unwrap(),
        &cl.data,
        rel(&cl.data, 1e-6),
    );

    // Shape errors name the op.
    let err = gpu.add(&mut gx, &gg).unwrap_err().to_string();
    assert!(err.contains("add"), "{err}");
    let two = gpu_act(&mut gpu, t, 2, &x[..2 * t]);
    let err = gpu.mul_sigmoid(&mut gx, &two).unwrap_err().to_string();
    assert!(err.contains("mul_sigmoid"), "{err}");
}

/// One attention check: cache type, heads, the chunks `T` run one after the other (each at the
/// position the previous ones reached), and how inputs are drawn.
#[derive(Debug, Clone, Copy)]
struct AttnCase<'a> {
    kv: ActType,
    head_dim: usize,
    n_heads: usize,
    n_kv_heads: usize,
    chunks: &'a [usize],
    /// Keys at position j are scaled by `1 + key_growth * j`, so later key tiles hold larger
    /// scores than the first (the online softmax's rescaling).
    key_growth: f32,
    /// Inputs rounded to f16 (exact in an f16 cache) and a power-of-two scale, so an f16
    /// cache rounds nothing and both cache types are held to the f32 bound (with `rope`
    /// rotating no dimension and no norms, which would round again).
    f16_exact: bool,
    /// The rotary embedding of q and k.
    rope: RopeParams,
    /// Per-head q/k norms (random weights) before RoPE.
    norm: bool,
    /// gpt-oss's attention instead (`Backend::gptoss_attention`): random per-head sinks, the
    /// rotation extended by this YaRN, and this sliding window.
    gptoss: Option<(Yarn, Option<usize>)>,
}

impl<'a> AttnCase<'a> {
    /// Random inputs, Qwen3's rotary embedding (NeoX pairs over the whole head), no norms.
    fn new(
        kv: ActType,
        head_dim: usize,
        (n_heads, n_kv_heads): (usize, usize),
        chunks: &'a [usize],
    ) -> Self {
        AttnCase {
            kv,
            head_dim,
            n_heads,
            n_kv_heads,
            chunks,
            key_growth: 0.0,
            f16_exact: false,
            rope: RopeParams {
                n_dims: head_dim,
                freq_base: 1e6,
                freq_scale: 1.0,
                neox: true,
            },
            norm: false,
            gptoss: None,
        }
    }
}

/// Runs the chunks of `case` on both backends, checking each chunk's output.
fn check_attention(rng: &mut StdRng, case: AttnCase<'_>) {
    let mut gpu = backend(case.kv).expect("checked by the caller");
    let mut cpu = CpuBackend::new();
    let (hd, n_heads, n_kv_heads) = (case.head_dim, case.n_heads, case.n_kv_heads);
    let n_ctx = case.chunks.iter().sum::<usize>() + 3;
    let scale = if case.f16_exact {
        (0.5f32).powi((hd as f32).log2().ceil() as i32 / 2)
    } else {
        1.0 / (hd as f32).sqrt()
    };
    let p = AttentionParams {
        n_heads,
        n_kv_heads,
        head_dim: hd,
        scale,
        rope: case.rope,
        norm_eps: 1e-6,
    };
    let norms = case.norm.then(|| {
        let (wq, wk) = (uniform(rng, hd, 1.0), uniform(rng, hd, 1.0));
        let dims = [hd];
        (
            upload_both(&mut gpu, &mut cpu, f32_data("q_norm", &dims, &wq)),
            upload_both(&mut gpu, &mut cpu, f32_data("k_norm", &dims, &wk)),
        )
    });
    let sinks = case.gptoss.map(|_| {
        // Sinks from well below to above the scores (~1-3), so some heads' keys share the
        // softmax with a sink that dominates it and others with one that barely counts.
        let s: Vec<f32> = uniform(rng, n_heads, 3.0).iter().map(|x| x + 1.0).collect();
        upload_both(&mut gpu, &mut cpu, f32_data("sinks", &[n_heads], &s))
    });
    let mut gkv = gpu.kv_cache(2, n_ctx, n_kv_heads, hd).unwrap();
    let mut ckv = cpu.kv_cache(2, n_ctx, n_kv_heads, hd).unwrap();
    let (qw, kw) = (n_heads * hd, n_kv_heads * hd);
    // f32 arithmetic in another order than the CPU's f64: ~1e-6 on outputs of size ~1. An f16
    // cache rounds keys and values by 2^-11 relative: scores move by ~1e-3, outputs by a few
    // 1e-4 (measured worst: 0.25 of the bound).
    let tol = match (case.kv, case.f16_exact) {
        (ActType::F32, _) | (ActType::F16, true) => 1e-5,
        (ActType::F16, false) => 2e-3,
    };
    let round = |mut x: Vec<f32>| {
        if case.f16_exact {
            x.iter_mut()
                .for_each(|v| *v = half::f16::from_f32(*v).to_f32());
        }
        x
    };
    let mut pos0 = 0;
    for &t in case.chunks {
        // Scores of size ~1-3 so the softmax is neither flat nor one-hot.
        let q = round(uniform(rng, t * qw, 2.0));
        let mut k = uniform(rng, t * kw, 2.0);
        for (i, row) in k.chunks_exact_mut(kw).enumerate() {
            let growth = 1.0 + case.key_growth * (pos0 + i) as f32;
            row.iter_mut().for_each(|x| *x *= growth);
        }
        let k = round(k);
        let v = round(uniform(rng, t * kw, 1.0));
        let qkv: Vec<f32> = (0..t)
            .flat_map(|i| {
                let (q, k, v) = (&q[i * qw..][..qw], &k[i * kw..][..kw], &v[i * kw..][..kw]);
                q.iter().chain(k).chain(v).copied()
            })
            .collect();
        let width = qw + 2 * kw;
        let gqkv = gpu_act(&mut gpu, t, width, &qkv);
        let cqkv = cpu_act(t, width, &qkv);
        let (got, want) = match (case.gptoss, &sinks) {
            (Some((yarn, window)), Some((gs, cs))) => {
                let p = GptOssAttentionParams {
                    attn: p,
                    yarn,
                    window,
                };
                let got = gpu.gptoss_attention(&gqkv, gs, &mut gkv, 1, pos0, &p);
                let want = cpu.gptoss_attention(&cqkv, cs, &mut ckv, 1, pos0, &p);
                (got.unwrap(), want.unwrap())
            }
            _ => {
                let gnorm = norms.as_ref().map(|((gq, _), (gk, _))| [gq, gk]);
                let cnorm = norms.as_ref().map(|((_, cq), (_, ck))| [cq, ck]);
                let got = gpu.attention(&gqkv, gnorm, &mut gkv, 1, pos0, &p);
                let want = cpu.attention(&cqkv, cnorm, &mut ckv, 1, pos0, &p);
                (got.unwrap(), want.unwrap())
            }
        };
        let got = gpu.read(&got).unwrap();
        let label = format!(
            "attention {:?} hd {hd} heads {n_heads}/{n_kv_heads} T={t} pos0={pos0} ({:?}), \
             {:?}, norms {}, gpt-oss {:?}",
            case.kv,
            AttentionKernel::for_batch(t),
            case.rope,
            case.norm,
            case.gptoss
        );
        check_close(&label, &got, &want.data, |_| tol);
        pos0 += t;
    }
}

#[test]
fn attention_matches_cpu_at_every_head_width() {
    if shared_ctx().is_none() {
        return;
    }
    let mut rng = rng("attention_matches_cpu_at_every_head_width");
    // GQA ratios 1, 4 and 8 in turn; chunks: a prefill that is no multiple of any tile, a
    // second prefill at a later position, then decode batches of 1, 4 and 2 tokens.
    for (i, head_dim) in HEAD_DIMS.into_iter().enumerate() {
        let head_dim = head_dim as usize;
        let ratio = [1, 4, 8][i % 3];
        let n_kv_heads = 1 + i % 2;
        for kv in ActType::ALL {
            check_attention(
                &mut rng,
                AttnCase {
                    norm: i % 2 == 0,
                    ..AttnCase::new(
                        kv,
                        head_dim,
                        (ratio * n_kv_heads, n_kv_heads),
                        &[37, 21, 1, 4, 2],
                    )
                },
            );
        }
    }
}

#[test]
fn attention_spans_many_key_tiles() {
    if shared_ctx().is_none() {
        return;
    }
    let mut rng = rng("attention_spans_many_key_tiles");
    // Qwen3-30B-A3B's heads (GQA 8, width 128) and a GQA-4 shape of width 64: a chunked
    // prefill over ~1000 positions, then decode batches of 1 to 4 tokens over 17 chunks of
    // positions.
    for (head_dim, n_heads, n_kv_heads) in [(128, 8, 1), (64, 8, 2)] {
        for kv in ActType::ALL {
            check_attention(
                &mut rng,
                AttnCase {
                    norm: true,
                    ..AttnCase::new(kv, head_dim, (n_heads, n_kv_heads), &[700, 333, 1, 2, 3, 4])
                },
            );
        }
    }
}

#[test]
fn attention_rescales_when_later_keys_score_higher() {
    if shared_ctx().is_none() {
        return;
    }
    let mut rng = rng("attention_rescales_when_later_keys_score_higher");
    // Keys grow with their position (x10 by position 300), so row maxima grow from key tile
    // to key tile and the online softmax rescales what it accumulated. Inputs exact in f16, so
    // the f16 cache adds no rounding of its own. Then 2150 keys, whose decode merges 68
    // partials (with keys of one scale: the prefill's f32 sums over 2150 growing keys drift
    // past its bound). attention_kernels_agree_on_small_batches walks chunks in one split.
    for (kv, batches, key_growth, f16_exact) in [
        (ActType::F32, &[300, 1, 3][..], 1.0 / 32.0, true),
        (ActType::F16, &[300, 1, 3], 1.0 / 32.0, true),
        (ActType::F16, &[2150, 1, 3], 0.0, false),
    ] {
        check_attention(
            &mut rng,
            AttnCase {
                key_growth,
                f16_exact,
                // No dimension rotates.
                rope: RopeParams {
                    n_dims: 0,
                    ..AttnCase::new(kv, 64, (4, 1), &[]).rope
                },
                ..AttnCase::new(kv, 64, (4, 1), batches)
            },
        );
    }
}

/// RoPE in both layouts, over part of a head and with scaled positions, with and without the
/// q/k norms, through prefill and decode.
#[test]
fn attention_rotates_and_norms_q_and_k_like_cpu() {
    if shared_ctx().is_none() {
        return;
    }
    let mut rng = rng("attention_rotates_and_norms_q_and_k_like_cpu");
    for (head_dim, n_dims) in [(64, 64), (128, 64)] {
        for neox in [false, true] {
            for (freq_base, freq_scale) in [(10000.0, 1.0), (1e6, 0.25)] {
                for norm in [false, true] {
                    check_attention(
                        &mut rng,
                        AttnCase {
                            rope: RopeParams {
                                n_dims,
                                freq_base,
                                freq_scale,
                                neox,
                            },
                            norm,
                            ..AttnCase::new(ActType::F32, head_dim, (4, 2), &[9, 1, 3])
                        },
                    );
                }
            }
        }
    }
}

/// gpt-oss's attention: per-head sinks, sliding windows narrower than a key tile, across tiles
/// and chunks and past the prompt (and full attention), the rotation extended by YaRN as
/// gpt-oss sets it, at its head width and GQA ratio and at a width of other tile shapes;
/// through prefill and decode (the sink added once, in the merge of several splits).
#[test]
fn gptoss_attention_matches_cpu_with_sinks_window_and_yarn() {
    if shared_ctx().is_none() {
        return;
    }
    let mut rng = rng("gptoss_attention_matches_cpu_with_sinks_window_and_yarn");
    // gpt-oss-20b: base 150000, factor 32 over an original context of 4096.
    let yarn = Yarn {
        ext_factor: 1.0,
        attn_factor: 1.0,
        beta_fast: 32.0,
        beta_slow: 1.0,
        n_ctx_orig: 4096,
    };
    for (head_dim, window) in [
        (64, Some(128)),
        (64, Some(1)),
        (64, Some(20)),
        (64, None),
        (128, Some(40)),
    ] {
        for kv in ActType::ALL {
            let base = AttnCase::new(kv, head_dim, (8, 2), &[150, 37, 1, 4, 2, 1]);
            check_attention(
                &mut rng,
                AttnCase {
                    rope: RopeParams {
                        freq_base: 150000.0,
                        freq_scale: 1.0 / 32.0,
                        ..base.rope
                    },
                    gptoss: Some((yarn, window)),
                    ..base
                },
            );
        }
    }
}

#[test]
fn attention_kernels_agree_on_small_batches() {
    let Some(ctx) = shared_ctx() else {
        return;
    };
    let mut rng = rng("attention_kernels_agree_on_small_batches");
    let (hd, n_heads, n_kv) = (64, 4, 2);
    let rope = RopeParams {
        n_dims: hd,
        freq_base: 10000.0,
        freq_scale: 1.0,
        neox: false,
    };
    let p = AttentionParams {
        n_heads,
        n_kv_heads: n_kv,
        head_dim: hd,
        scale: 0.125,
        rope,
        norm_eps: 1e-6,
    };
    let cache = KvCache::new(ctx, 1, 80, n_kv, hd, ActType::F32).unwrap();
    let mut outs = Vec::new();
    // The same 3-token batch at position 70 with every kernel (the cache holds 0..73 after
    // the first call; later calls rewrite the same rows).
    let width = (n_heads + 2 * n_kv) * hd;
    let m = |rows, cols, d: &[f32]| {
        ctx.buffers()
            .matrix_from_host(rows, cols, ActType::F32, d)
            .unwrap()
    };
    // Positions from 0 to past the batch.
    let angles = |rows| {
        let a: Vec<f32> = moetile_wgpu::rope_angles(&rope, &Yarn::NONE, 0, rows)
            .into_iter()
            .flatten()
            .collect();
        m(rows, hd, &a)
    };
    let (prefix_qkv, prefix_angles) = (
        m(70, width, &uniform(&mut rng, 70 * width, 1.0)),
        angles(70),
    );
    let (batch_qkv, batch_angles) = (m(3, width, &uniform(&mut rng, 3 * width, 1.0)), angles(73));
    let prefix_out = ctx
        .buffers()
        .matrix_filled(70, n_heads * hd, ActType::F32, f32::NAN)
        .unwrap();
    let at = |pos0| CacheSlot {
        cache: &cache,
        layer: 0,
        pos0,
    };
    let prefix = AttnInputs {
        qkv: &prefix_qkv,
        rows: 0..70,
        angles: prefix_angles.buffer(),
        qk_norm: None,
        sinks: None,
        window: None,
    };
    ctx.record("prefix", |rec| {
        let kernel = AttentionKernel::Prefill;
        attention::attend(rec, prefix, at(0), &p, kernel, &prefix_out)
    })
    .unwrap();
    // Decode with one workgroup per chunk of positions, and with one walking all three
    // chunks (rescaling its running sums between them).
    let mut kernels = vec![AttentionKernel::Prefill];
    for max_splits in [DECODE_MAX_SPLITS, 1] {
        kernels.push(AttentionKernel::Decode { max_splits });
    }
    // Each kernel on the whole batch, then on rows 1..3 alone at position 71 (rows of shared
    // matrices, as a batch of sequences attends): the same values in the same output rows,
    // row 0 left as it was.
    let q_width = n_heads * hd;
    for &kernel in &kernels {
        for rows in [0..3, 1..3] {
            let out = ctx
                .buffers()
                .matrix_filled(3, q_width, ActType::F32, f32::NAN)
                .unwrap();
            let (row0, pos0) = (rows.start, 70 + rows.start);
            let batch = AttnInputs {
                qkv: &batch_qkv,
                rows,
                angles: batch_angles.buffer(),
                qk_norm: None,
                sinks: None,
                window: None,
            };
            ctx.record("batch", |rec| {
                attention::attend(rec, batch, at(pos0), &p, kernel, &out)
            })
            .unwrap();
            let got = ctx.read_matrix(&out).unwrap();
            if row0 == 0 {
                outs.push(got);
                continue;
            }
            let (skipped, done) = got.split_at(row0 * q_width);
            assert!(skipped.iter().all(|v| v.is_nan()), "{kernel:?} wrote row 0");
            let label = format!("rows {row0}..3 with {kernel:?}");
            check_close(&label, done, &outs[0][row0 * q_width..], |_| 2e-6);
        }
    }
    for (kernel, out) in kernels.iter().zip(&outs).skip(1) {
        check_close(&format!("prefill vs {kernel:?}"), out, &outs[0], |_| 2e-6);
    }
}

/// The attention of the batched-sequence tests (8 query heads over 2 key/value heads of 64) and
/// the width of its `qkv` rows.
fn batch_params() -> (AttentionParams, usize) {
    let (hd, n_heads, n_kv_heads) = (64, 8, 2);
    let p = AttentionParams {
        n_heads,
        n_kv_heads,
        head_dim: hd,
        scale: 1.0 / (hd as f32).sqrt(),
        rope: AttnCase::new(ActType::F32, hd, (n_heads, n_kv_heads), &[]).rope,
        norm_eps: 1e-6,
    };
    (p, (n_heads + 2 * n_kv_heads) * hd)
}

/// Rows of different sequences, each the next token of its own cache at its own position (an
/// empty cache among them), attend like the CPU reference's, over two steps so the second reads
/// the keys and values the first appended to each cache. Outputs and caches start poisoned.
#[test]
fn attention_batch_attends_each_row_over_its_own_cache() {
    if shared_ctx().is_none() {
        return;
    }
    let mut rng = rng("attention_batch_attends_each_row_over_its_own_cache");
    let (p, width) = batch_params();
    let (hd, n_kv_heads) = (p.head_dim, p.n_kv_heads);
    let prompts = [5, 0, 300, 1];
    // As attention_matches_cpu_at_every_head_width (module docs).
    for (kv, tol) in [(ActType::F32, 1e-5), (ActType::F16, 2e-3)] {
        let mut gpu = backend(kv).unwrap();
        let mut cpu = CpuBackend::new();
        let dims = [hd];
        let (gq, cq) = upload_both(
            &mut gpu,
            &mut cpu,
            f32_data("q_norm", &dims, &uniform(&mut rng, hd, 1.0)),
        );
        let (gk, ck) = upload_both(
            &mut gpu,
            &mut cpu,
            f32_data("k_norm", &dims, &uniform(&mut rng, hd, 1.0)),
        );
        let mut gkvs = Vec::new();
        let mut ckvs = Vec::new();
        for &len in &prompts {
            let mut gkv = gpu.kv_cache(2, 310, n_kv_heads, hd).unwrap();
            let mut ckv = cpu.kv_cache(2, 310, n_kv_heads, hd).unwrap();
            if len > 0 {
                let qkv = uniform(&mut rng, len * width, 2.0);
                let g = gpu_act(&mut gpu, len, width, &qkv);
                gpu.attention(&g, Some([&gq, &gk]), &mut gkv, 1, 0, &p)
                    .unwrap();
                let c = cpu_act(len, width, &qkv);
                cpu.attention(&c, Some([&cq, &ck]), &mut ckv, 1, 0, &p)
                    .unwrap();
            }
            gkvs.push(gkv);
            ckvs.push(ckv);
        }
        for step in 0..2 {
            let positions: Vec<usize> = prompts.iter().map(|&len| len + step).collect();
            let rows = prompts.len();
            let qkv = uniform(&mut rng, rows * width, 2.0);
            let g = gpu_act(&mut gpu, rows, width, &qkv);
            let mut gs: Vec<&mut KvCache> = gkvs.iter_mut().collect();
            let got = gpu
                .attention_batch(&g, Some([&gq, &gk]), &mut gs, &positions, 1, &p)
                .unwrap();
            let got = gpu.read(&got).unwrap();
            let c = cpu_act(rows, width, &qkv);
            let mut cs: Vec<_> = ckvs.iter_mut().collect();
            let want = cpu
                .attention_batch(&c, Some([&cq, &ck]), &mut cs, &positions, 1, &p)
                .unwrap();
            let label = format!("attention_batch {kv:?} at positions {positions:?}");
            check_close(&label, &got, &want.data, |_| tol);
        }
        // Fewer positions than rows, and a row past its cache: errors, not panics.
        let g = gpu_act(&mut gpu, 2, width, &uniform(&mut rng, 2 * width, 1.0));
        let mut gs: Vec<&mut KvCache> = gkvs.iter_mut().take(2).collect();
        let short = gpu.attention_batch(&g, None, &mut gs, &[0], 1, &p);
        assert!(
            matches!(short, Err(moetile::Error::Shape { .. })),
            "{short:?}"
        );
        let full = gpu.attention_batch(&g, None, &mut gs, &[0, 310], 1, &p);
        assert!(
            matches!(full, Err(moetile::Error::ContextFull { .. })),
            "{full:?}"
        );
    }
}

/// Rows of several sequences whose caches are regions of one arena (`Backend::kv_caches`)
/// attend in one set of dispatches (`attention::attend_seqs`): at positions 0, inside and just
/// past a 32-position decode chunk, and past two, over two steps, with q/k norms and with
/// gpt-oss's sinks and a window narrower than the longest prompt. Each row equals the same row
/// attended over a cache of its own (the per-row path), bit for bit, and the CPU reference
/// within the module's bounds; no region is written outside its own rows (the arena starts
/// poisoned, and every unwritten row comes back poisoned).
#[test]
fn arena_rows_attend_together_like_each_over_its_own_cache() {
    if shared_ctx().is_none() {
        return;
    }
    let mut rng = rng("arena_rows_attend_together_like_each_over_its_own_cache");
    let (p, width) = batch_params();
    let (hd, n_heads, n_kv_heads) = (p.head_dim, p.n_heads, p.n_kv_heads);
    let n_ctx = 80;
    let prompts = [5, 0, 31, 32, 70, 1];
    let steps = 2;
    let mut worst = Vec::new();
    for (kv, tol) in [(ActType::F32, 1e-5), (ActType::F16, 2e-3)] {
        for gptoss in [false, true] {
            let mut gpu = backend(kv).unwrap();
            let mut cpu = CpuBackend::new();
            let head = |gpu: &mut WgpuBackend, cpu: &mut CpuBackend, name, rng: &mut StdRng| {
                let data = uniform(rng, hd, 1.0);
                upload_both(gpu, cpu, f32_data(name, &[hd], &data))
            };
            let (gq, cq) = head(&mut gpu, &mut cpu, "q_norm", &mut rng);
            let (gk, ck) = head(&mut gpu, &mut cpu, "k_norm", &mut rng);
            let s: Vec<f32> = uniform(&mut rng, n_heads, 3.0)
                .iter()
                .map(|x| x + 1.0)
                .collect();
            let (gs, cs) = upload_both(&mut gpu, &mut cpu, f32_data("sinks", &[n_heads], &s));
            let gp = GptOssAttentionParams {
                attn: p,
                yarn: Yarn::NONE,
                window: Some(40),
            };
            // The layer's attention: of a prompt from position 0 over one cache, or of a row
            // per cache at `positions`.
            macro_rules! prefill {
                ($b:expr, $qkv:expr, $q:expr, $k:expr, $s:expr, $kv:expr) => {
                    if gptoss {
                        $b.gptoss_attention($qkv, $s, $kv, 1, 0, &gp)
                    } else {
                        $b.attention($qkv, Some([$q, $k]), $kv, 1, 0, &p)
                    }
                };
            }
            macro_rules! batch {
                ($b:expr, $qkv:expr, $q:expr, $k:expr, $s:expr, $kvs:expr, $positions:expr) => {
                    if gptoss {
                        $b.gptoss_attention_batch($qkv, $s, $kvs, $positions, 1, &gp)
                    } else {
                        $b.attention_batch($qkv, Some([$q, $k]), $kvs, $positions, 1, &p)
                    }
                };
            }
            let mut arena = gpu
                .kv_caches(prompts.len(), 2, n_ctx, n_kv_heads, hd)
                .unwrap();
            assert!(arena[0].shares_layer(&arena[1], 1));
            let mut own: Vec<KvCache> = prompts
                .iter()
                .map(|_| gpu.kv_cache(2, n_ctx, n_kv_heads, hd).unwrap())
                .collect();
            let mut cpus: Vec<_> = prompts
                .iter()
                .map(|_| cpu.kv_cache(2, n_ctx, n_kv_heads, hd).unwrap())
                .collect();
            for (i, &len) in prompts.iter().enumerate().filter(|(_, l)| **l > 0) {
                let qkv = uniform(&mut rng, len * width, 2.0);
                let g = gpu_act(&mut gpu, len, width, &qkv);
                prefill!(gpu, &g, &gq, &gk, &gs, &mut arena[i]).unwrap();
                prefill!(gpu, &g, &gq, &gk, &gs, &mut own[i]).unwrap();
                let c = cpu_act(len, width, &qkv);
                prefill!(cpu, &c, &cq, &ck, &cs, &mut cpus[i]).unwrap();
            }
            for step in 0..steps {
                let positions: Vec<usize> = prompts.iter().map(|&len| len + step).collect();
                let rows = prompts.len();
                let qkv = uniform(&mut rng, rows * width, 2.0);
                let g = gpu_act(&mut gpu, rows, width, &qkv);
                let mut kvs: Vec<&mut KvCache> = arena.iter_mut().collect();
                let together = batch!(gpu, &g, &gq, &gk, &gs, &mut kvs[..], &positions);
                let together = gpu.read(&together.unwrap()).unwrap();
                let mut kvs: Vec<&mut KvCache> = own.iter_mut().collect();
                let each = batch!(gpu, &g, &gq, &gk, &gs, &mut kvs[..], &positions);
                let each = gpu.read(&each.unwrap()).unwrap();
                let c = cpu_act(rows, width, &qkv);
                let mut kvs: Vec<_> = cpus.iter_mut().collect();
                let want = batch!(cpu, &c, &cq, &ck, &cs, &mut kvs[..], &positions).unwrap();
                let label = format!("arena {kv:?} gpt-oss {gptoss} at positions {positions:?}");
                let same = together
                    .iter()
                    .zip(&each)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{label}: the arena's rows differ from each row's own cache's"
                );
                check_close(&label, &together, &want.data, |_| tol);
                let err = together
                    .iter()
                    .zip(&want.data)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                worst.push((label, err));
            }
            // Every region's rows up to its last position hold values, the rest the poison.
            gpu.flush().unwrap();
            let ctx = gpu.context().clone();
            let row_bytes = n_kv_heads * hd * kv.bytes();
            let k_and_v: Vec<&wgpu::Buffer> = arena[0].buffers().skip(2).collect();
            for buffer in k_and_v {
                let bytes = ctx.read_buffer(buffer, "arena").unwrap();
                for (i, (cache, &len)) in arena.iter().zip(&prompts).enumerate() {
                    let end = arena
                        .get(i + 1)
                        .map_or(bytes.len(), |c| c.row0() * row_bytes);
                    let region = &bytes[cache.row0() * row_bytes..end];
                    let (written, rest) = region.split_at((len + steps) * row_bytes);
                    let words = |b: &[u8]| -> Vec<u32> { bytemuck::cast_slice(b).to_vec() };
                    assert!(
                        words(written).iter().all(|&w| w != u32::MAX),
                        "{kv:?}: region {i} lacks a row it wrote"
                    );
                    assert!(
                        rest.iter().all(|&b| b == 0xff),
                        "{kv:?}: region {i} was written past position {}",
                        len + steps - 1
                    );
                }
            }
        }
    }
    for (label, err) in worst {
        println!("{label}: max |err| {err:.2e}");
    }
}

/// The route weights' tolerance: 1e-6 relative, but 1e-5 for sqrt-softplus gates, whose `log`
/// (of `1 + e^x` in [1.06, 2]) a conforming GPU computes to 2^-21 absolute only: up to 8e-6
/// of the softplus, halved by the square root, a few ulps more through the normalisation.
fn route_tolerance(gating: Gating) -> f64 {
    match gating {
        Gating::SqrtSoftplus => 1e-5,
        Gating::Softmax | Gating::Sigmoid => 1e-6,
    }
}

/// What the router ranks a row's experts by, in f64: the logits, or with `bias` (selection
/// `Biased`) each expert's gate plus its bias.
fn ranking_values(gating: Gating, row: &[f32], bias: Option<&[f32]>) -> Vec<f64> {
    let Some(bias) = bias else {
        return row.iter().map(|&v| v as f64).collect();
    };
    let max = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row.iter()
        .zip(bias)
        .map(|(&v, &b)| {
            let v = v as f64;
            let gate = match gating {
                Gating::Softmax => (v - max).exp() / sum,
                Gating::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                Gating::SqrtSoftplus => v.exp().ln_1p().sqrt(),
            };
            gate + b as f64
        })
        .collect()
}

/// Checks the GPU's chosen experts (`ids`, K a token) against the CPU's: equal, except where
/// two experts' ranking values (`ranked(token)`) are within 1e-5 of each other, which the
/// GPU's and the CPU's `exp` (a few ulps apart) may order either way. Exact ties must come out
/// as the CPU breaks them (the lower id first). Returns the tokens that differ that way (their
/// weights differ too: another expert, another normalisation); a few per case at most.
fn check_choice(
    label: &str,
    k: usize,
    ids: &[u32],
    want: &[u32],
    ranked: impl Fn(usize) -> Vec<f64>,
) -> Vec<usize> {
    assert_eq!(ids.len(), want.len(), "{label}: ids");
    let mut near_ties = Vec::new();
    for t in 0..ids.len() / k {
        let (got, exp) = (&ids[t * k..][..k], &want[t * k..][..k]);
        if got == exp {
            continue;
        }
        let values = ranked(t);
        for (&g, &c) in got.iter().zip(exp) {
            let tied = g != u32::MAX
                && c != u32::MAX
                && g != c
                && (values[g as usize] - values[c as usize]).abs() <= 1e-5
                && values[g as usize] != values[c as usize];
            assert!(
                g == c || tied,
                "{label}: token {t} chose {got:?}, the CPU {exp:?} (values {:?} vs {:?})",
                got.iter()
                    .map(|&e| values.get(e as usize))
                    .collect::<Vec<_>>(),
                exp.iter()
                    .map(|&e| values.get(e as usize))
                    .collect::<Vec<_>>(),
            );
        }
        near_ties.push(t);
    }
    assert!(
        near_ties.len() <= 2,
        "{label}: {} tokens differ",
        near_ties.len()
    );
    near_ties
}

#[test]
fn route_matches_cpu_including_ties() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("route_matches_cpu_including_ties");
    // The deepseek4 fixture's E 2, K 2 and Flash's E 256, K 6 among them.
    for (n_experts, k) in [(2, 2), (8, 2), (64, 8), (128, 1), (5, 5), (256, 6), (96, 8)] {
        for gating in [Gating::Softmax, Gating::Sigmoid, Gating::SqrtSoftplus] {
            for (normalize, weight_scale) in [(true, 1.5), (false, 2.5)] {
                let t = 50;
                let mut logits = uniform(&mut rng, t * n_experts, 4.0);
                // Rows with exact ties: all equal, and pairs equal to the row's maximum.
                logits[..n_experts].fill(0.5);
                let row = &mut logits[n_experts..2 * n_experts];
                let max = row.iter().cloned().fold(f32::MIN, f32::max);
                let last = n_experts - 1;
                row[last] = max;
                row[0] = max;
                // A row of gates far below the floor of their sum (but softmax's).
                logits[2 * n_experts..3 * n_experts].fill(-40.0);
                // Biases that move the choice, tied where the logits are.
                let mut bias = uniform(&mut rng, n_experts, 0.5);
                bias[last] = bias[0];
                let (gb, cb) =
                    upload_both(&mut gpu, &mut cpu, f32_data("bias", &[n_experts], &bias));
                let p = RouterParams {
                    n_experts_used: k,
                    gating,
                    normalize,
                    weight_scale,
                };
                let gl = gpu_act(&mut gpu, t, n_experts, &logits);
                let cl = cpu_act(t, n_experts, &logits);
                for (g_sel, c_sel) in [
                    (Selection::TopK, Selection::TopK),
                    (Selection::Biased(&gb), Selection::Biased(&cb)),
                ] {
                    let gr = gpu.route(&gl, g_sel, &p).unwrap();
                    let (ids, weights) = gpu.read_routing(&gr).unwrap();
                    let cr = cpu.route(&cl, c_sel, &p).unwrap();
                    let label = format!(
                        "route E={n_experts} K={k} {gating:?} norm {normalize} {}",
                        if matches!(c_sel, Selection::TopK) {
                            "top-K"
                        } else {
                            "biased"
                        }
                    );
                    let bias = match c_sel {
                        Selection::Biased(_) => Some(&bias[..]),
                        _ => None,
                    };
                    let ranked = |t: usize| {
                        ranking_values(gating, &logits[t * n_experts..][..n_experts], bias)
                    };
                    let near_ties = check_choice(&label, k, &ids, &cr.ids, ranked);
                    let tol = route_tolerance(gating);
                    check_close(&label, &weights, &cr.weights, |i| {
                        match near_ties.contains(&(i / k)) {
                            true => f64::INFINITY,
                            false => rel(&cr.weights, tol)(i),
                        }
                    });
                }
            }
        }
    }
    // NaN logits (a broken weight) are never selected: a row with two numbers picks them,
    // then no expert (u32::MAX, which the map skips); a NaN bias likewise. The CPU router
    // agrees.
    let mut logits = vec![f32::NAN; 2 * 16];
    (logits[3], logits[16 + 9]) = (1.0, -2.0);
    logits[16 + 12] = 0.5;
    let mut bias = vec![0.0; 16];
    bias[5] = f32::NAN;
    logits[5] = 3.0;
    let (gb, cb) = upload_both(&mut gpu, &mut cpu, f32_data("bias", &[16], &bias));
    let gl = gpu_act(&mut gpu, 2, 16, &logits);
    let cl = cpu_act(2, 16, &logits);
    for gating in [Gating::Sigmoid, Gating::SqrtSoftplus] {
        let p = RouterParams {
            n_experts_used: 3,
            gating,
            normalize: false,
            weight_scale: 1.0,
        };
        let gr = gpu.route(&gl, Selection::Biased(&gb), &p).unwrap();
        let (ids, _) = gpu.read_routing(&gr).unwrap();
        let want = [3, u32::MAX, u32::MAX, 12, 9, u32::MAX];
        assert_eq!(ids, want, "{gating:?}");
        let cr = cpu.route(&cl, Selection::Biased(&cb), &p).unwrap();
        assert_eq!(cr.ids, want, "{gating:?} on the CPU");
        assert_eq!(cr.weights[1..3], [0.0, 0.0], "{gating:?} on the CPU");
    }
}

/// A hash-routed selection, for either backend.
fn hashed<'a, W>(table: &'a [u32], tokens: &'a [u32]) -> Selection<'a, W> {
    Selection::Hashed { table, tokens }
}

/// Hash routing (deepseek4's first layers): each token's experts are its row of the table,
/// in the table's order, weighted by their sqrt-softplus gates as the CPU reference weighs
/// them; a token past the table is refused.
#[test]
fn hash_routing_takes_the_token_row_and_weighs_it_like_cpu() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("hash_routing_takes_the_token_row_and_weighs_it_like_cpu");
    for (n_experts, k, n_vocab) in [(2, 2, 128), (256, 6, 1000)] {
        // Distinct experts per row, as in the file.
        let table: Vec<u32> = (0..n_vocab)
            .flat_map(|_| {
                let mut row: Vec<u32> = (0..n_experts as u32).collect();
                for i in 0..k {
                    let j = rng.random_range(i..n_experts);
                    row.swap(i, j);
                }
                row.truncate(k);
                row
            })
            .collect();
        let t = 40;
        let mut tokens: Vec<u32> = (0..t)
            .map(|_| rng.random_range(0..n_vocab as u32))
            .collect();
        tokens[1] = tokens[0];
        let mut logits = uniform(&mut rng, t * n_experts, 4.0);
        logits[2 * n_experts..3 * n_experts].fill(-40.0);
        let p = RouterParams {
            n_experts_used: k,
            gating: Gating::SqrtSoftplus,
            normalize: true,
            weight_scale: 1.5,
        };
        let gl = gpu_act(&mut gpu, t, n_experts, &logits);
        let gr = gpu.route(&gl, hashed(&table, &tokens), &p).unwrap();
        let (ids, weights) = gpu.read_routing(&gr).unwrap();
        let cr = cpu
            .route(&cpu_act(t, n_experts, &logits), hashed(&table, &tokens), &p)
            .unwrap();
        let want: Vec<u32> = tokens
            .iter()
            .flat_map(|&tok| table[tok as usize * k..][..k].to_vec())
            .collect();
        let label = format!("hash route E={n_experts} K={k}");
        assert_eq!(ids, want, "{label}: ids");
        assert_eq!(cr.ids, want, "{label}: cpu ids");
        check_close(&label, &weights, &cr.weights, rel(&cr.weights, 1e-5));
        let past = [n_vocab as u32; 1];
        let one = gpu_act(&mut gpu, 1, n_experts, &logits[..n_experts]);
        let err = gpu
            .route(&one, hashed(&table, &past), &p)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("token {n_vocab}")), "{err}");
    }
}

/// A random hyper-connection over streams of `d` on both backends: `fn` scaled so the mixes
/// of unit-RMS streams are about 2 (sigmoids and softmaxes away from saturation, as in a
/// trained model), factors in [0.5, 1.5], bases in [-1, 1].
struct HyperCase {
    func: Vec<f32>,
    gpu: [moetile_wgpu::ExpertTensor; 3],
    cpu: [CpuWeight; 3],
}

impl HyperCase {
    fn random(rng: &mut StdRng, gpu: &mut WgpuBackend, cpu: &mut CpuBackend, d: usize) -> Self {
        let n = HC_STREAMS * d;
        let func = uniform(rng, HC_MIXES * n, 2.0 * (3.0 / n as f32).sqrt());
        let scale: Vec<f32> = (0..3).map(|_| rng.random_range(0.5..1.5)).collect();
        let base = uniform(rng, HC_MIXES, 1.0);
        let (gf, cf) = upload_both(gpu, cpu, f32_data("hc_fn", &[n, HC_MIXES], &func));
        let (gs, cs) = upload_both(gpu, cpu, f32_data("hc_scale", &[3], &scale));
        let (gb, cb) = upload_both(gpu, cpu, f32_data("hc_base", &[HC_MIXES], &base));
        HyperCase {
            func,
            gpu: [gf, gs, gb],
            cpu: [cf, cs, cb],
        }
    }

    fn weights<W>(w: &[W; 3]) -> HyperWeights<'_, W> {
        HyperWeights {
            func: &w[0],
            scale: &w[1],
            base: &w[2],
        }
    }
}

/// `hc_pre` and `hc_post` against the CPU reference (the reference model's own steps) at the
/// tiny fixture's dimensions (D 32, 3 Sinkhorn passes) and Flash's (D 4096, 20 passes), for a
/// decode token (mixes by mat-vec) and a prefill batch (tiled mixes), every output poisoned.
///
/// Tolerances, from the one step where the GPU rounds more than the reference, the f32 matmul
/// of the raw mixes over `4 D` values (16384 at Flash): f32 partial sums of a few hundred
/// products per lane joined by a tree, each rounding below `sum_i |fn_i x_i|`, adding as a
/// random walk (the worst case, 1e-5 relative as for `matmul`, would hide the coefficients'
/// errors): `2e-6 * sum_i |fn_i x_i|` (~30 ulps), times the RMS factor and the largest scale,
/// is `da`, the error budget of a token's mixes. Sigmoid has slope <= 1/4
/// (pre weights move by <= da / 4, post weights by <= da / 2), the comb softmax moves an entry
/// by <= da / 2, and the Sinkhorn passes divide by sums near 1 whose errors are of that size:
/// 4 da bounds every mixing value, plus 2e-6 for the f32 rounding of the ~100 operations from
/// the mixes on (values <= 2). The input `sum_s pre_s x_s` is off by `da * sum_s |x_s|` plus
/// 1e-6 relative rounding. `hc_post` gets the reference's mixing values, so it only rounds
/// five products and their sum: 1e-6 relative to `|post f| + sum |comb x|`, plus 1e-6. On
/// lavapipe the mixes and input use <= 0.01 of their bound and post 0.11; dropping the eps of
/// the Sinkhorn column sums fails by 30x the bound, a column left unwritten, or comb read
/// transposed in `hc_post`, fail too.
#[test]
fn hyper_connection_matches_cpu() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("hyper_connection_matches_cpu");
    // The epsilons of deepseek4 (1e-6) are below the tolerance; the large ones make a kernel
    // that puts them in the wrong place fail.
    let (real, large) = ((1e-6, 1e-6), (0.25, 0.01));
    for (d, sinkhorn_iterations, (rms_eps, eps), t) in [
        (32, 3, real, 1),
        (32, 3, large, 37),
        (4096, 20, real, 1),
        (4096, 20, large, 9),
    ] {
        let label = format!("hc D={d} T={t} eps {eps}");
        let n = HC_STREAMS * d;
        let case = HyperCase::random(&mut rng, &mut gpu, &mut cpu, d);
        let p = HyperParams {
            rms_eps,
            eps,
            sinkhorn_iterations,
        };
        // Streams of different sizes, so the RMS is not each stream's.
        let mut streams = uniform(&mut rng, t * n, 1.0);
        for (i, v) in streams.iter_mut().enumerate() {
            *v *= [0.5, 1.0, 2.0, 4.0][i / d % HC_STREAMS];
        }
        let out = uniform(&mut rng, t * d, 3.0);
        let (gx, cx) = (gpu_act(&mut gpu, t, n, &streams), cpu_act(t, n, &streams));
        let (g_input, g_mix) = gpu.hc_pre(&gx, HyperCase::weights(&case.gpu), &p).unwrap();
        let (c_input, c_mix) = cpu.hc_pre(&cx, HyperCase::weights(&case.cpu), &p).unwrap();
        let scale = &case.cpu[1].values;
        let da: Vec<f64> = streams
            .chunks(n)
            .zip(abs_dot(&streams, &case.func, n).chunks(HC_MIXES))
            .map(|(x, sums)| {
                let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
                let big = sums.iter().cloned().fold(0.0, f64::max);
                2e-6 * big / (ms + p.rms_eps as f64).sqrt()
                    * scale.iter().cloned().fold(0.0, f32::max) as f64
            })
            .collect();
        let got = gpu.read(&g_mix).unwrap();
        check_close(&format!("{label} mix"), &got, &c_mix.data, |i| {
            4.0 * da[i / HC_MIXES] + 2e-6
        });
        let got = gpu.read(&g_input).unwrap();
        check_close(&format!("{label} input"), &got, &c_input.data, |i| {
            let (tok, e) = (i / d, i % d);
            let x = &streams[tok * n..][..n];
            let (sum_x, sum_px) = (0..HC_STREAMS).fold((0.0, 0.0), |(a, b), s| {
                let (x, w) = (
                    x[s * d + e].abs() as f64,
                    c_mix.data[tok * HC_MIXES + s] as f64,
                );
                (a + x, b + w * x)
            });
            da[tok] * sum_x + 1e-6 * sum_px + 1e-6
        });

        // The post step from the same mixing values on both backends.
        let g_mix = gpu_act(&mut gpu, t, HC_MIXES, &c_mix.data);
        let g_out = gpu_act(&mut gpu, t, d, &out);
        let mut gy = gx;
        gpu.hc_post(&mut gy, &g_out, &g_mix).unwrap();
        let mut cy = cx;
        cpu.hc_post(&mut cy, &cpu_act(t, d, &out), &c_mix).unwrap();
        let got = gpu.read(&gy).unwrap();
        check_close(&format!("{label} post"), &got, &cy.data, |i| {
            let (tok, dst, e) = (i / n, i / d % HC_STREAMS, i % d);
            let m = &c_mix.data[tok * HC_MIXES..][..HC_MIXES];
            let size =
                (0..HC_STREAMS).fold((m[HC_STREAMS + dst] * out[tok * d + e]).abs(), |a, src| {
                    a + (m[2 * HC_STREAMS + HC_STREAMS * src + dst]
                        * streams[tok * n + src * d + e])
                        .abs()
                });
            1e-6 * size as f64 + 1e-6
        });
    }
    // Shapes that do not fit are refused, naming the op.
    let d = 32;
    let case = HyperCase::random(&mut rng, &mut gpu, &mut cpu, d);
    let p = HyperParams {
        rms_eps: 1e-6,
        eps: 1e-6,
        sinkhorn_iterations: 1,
    };
    let x = gpu_act(
        &mut gpu,
        2,
        HC_STREAMS * d + 32,
        &vec![1.0; 2 * (HC_STREAMS * d + 32)],
    );
    let err = gpu
        .hc_pre(&x, HyperCase::weights(&case.gpu), &p)
        .unwrap_err();
    assert!(err.to_string().contains("hc_fn"), "{err}");
    let x = gpu_act(&mut gpu, 2, HC_STREAMS * d, &vec![1.0; 2 * HC_STREAMS * d]);
    let none = HyperParams {
        sinkhorn_iterations: 0,
        ..p
    };
    let err = gpu
        .hc_pre(&x, HyperCase::weights(&case.gpu), &none)
        .unwrap_err();
    assert!(err.to_string().contains("hc_pre"), "{err}");
    let (_, mix) = gpu.hc_pre(&x, HyperCase::weights(&case.gpu), &p).unwrap();
    let mut streams = x;
    let wide = gpu_act(&mut gpu, 2, 2 * d, &vec![1.0; 4 * d]);
    let err = gpu.hc_post(&mut streams, &wide, &mix).unwrap_err();
    assert!(err.to_string().contains("hc_post"), "{err}");
}

/// `hc_head` (the output head's stream mix) against the CPU reference (the reference model's
/// own step) at the tiny fixture's dimensions (D 32) and Flash's (D 4096), for a decode token
/// (mixes by mat-vec) and a prefill batch (tiled mixes), the output poisoned.
///
/// Tolerance: as `hc_pre`'s input at `hyper_connection_matches_cpu`, from the f32 matmul of
/// the HC raw mixes (`da`, the error of a token's mixes after the RMS factor and the scale);
/// a pre weight moves by <= da / 4 (sigmoid's slope), bounded here by da, so the row is off by
/// `da * sum_s |x_s|` plus 1e-6 relative rounding. On lavapipe it uses <= 0.01 of that; a
/// head kernel reading the mixes at hc_pre's stride (24) or the comb's factor fails.
#[test]
fn output_head_mix_matches_cpu() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("output_head_mix_matches_cpu");
    let (real, large) = ((1e-6, 1e-6), (0.25, 0.01));
    for (d, (rms_eps, eps), t) in [
        (32, real, 1),
        (32, large, 37),
        (4096, real, 1),
        (4096, large, 9),
    ] {
        let label = format!("hc_head D={d} T={t} eps {eps}");
        let n = HC_STREAMS * d;
        let func = uniform(&mut rng, HC_STREAMS * n, 2.0 * (3.0 / n as f32).sqrt());
        let scale = [rng.random_range(0.5..1.5)];
        let base = uniform(&mut rng, HC_STREAMS, 1.0);
        let (gf, cf) = upload_both(
            &mut gpu,
            &mut cpu,
            f32_data("output_hc_fn", &[n, HC_STREAMS], &func),
        );
        let (gs, cs) = upload_both(
            &mut gpu,
            &mut cpu,
            f32_data("output_hc_scale", &[1], &scale),
        );
        let (gb, cb) = upload_both(
            &mut gpu,
            &mut cpu,
            f32_data("output_hc_base", &[HC_STREAMS], &base),
        );
        let p = HyperParams {
            rms_eps,
            eps,
            sinkhorn_iterations: 1,
        };
        let mut streams = uniform(&mut rng, t * n, 1.0);
        for (i, v) in streams.iter_mut().enumerate() {
            *v *= [0.5, 1.0, 2.0, 4.0][i / d % HC_STREAMS];
        }
        let gx = gpu_act(&mut gpu, t, n, &streams);
        let gw = HyperWeights {
            func: &gf,
            scale: &gs,
            base: &gb,
        };
        let got = gpu.hc_head(&gx, gw, &p).unwrap();
        assert_eq!(gpu.shape(&got), (t, d));
        let got = gpu.read(&got).unwrap();
        let cw = HyperWeights {
            func: &cf,
            scale: &cs,
            base: &cb,
        };
        let want = cpu.hc_head(&cpu_act(t, n, &streams), cw, &p).unwrap();
        let da: Vec<f64> = streams
            .chunks(n)
            .zip(abs_dot(&streams, &func, n).chunks(HC_STREAMS))
            .map(|(x, sums)| {
                let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
                let big = sums.iter().cloned().fold(0.0, f64::max);
                2e-6 * big / (ms + rms_eps as f64).sqrt() * scale[0] as f64
            })
            .collect();
        check_close(&label, &got, &want.data, |i| {
            let (tok, e) = (i / d, i % d);
            let x = &streams[tok * n..][..n];
            let sum_x: f64 = (0..HC_STREAMS).map(|s| x[s * d + e].abs() as f64).sum();
            // Pre weights are below 1 + eps.
            da[tok] * sum_x + 1e-6 * (1.0 + eps as f64) * sum_x + 1e-6
        });
    }
    // A sub-block's 24-mix weight and streams that are not HC wide are refused, naming the
    // weight or the op.
    let d = 32;
    let case = HyperCase::random(&mut rng, &mut gpu, &mut cpu, d);
    let p = HyperParams {
        rms_eps: 1e-6,
        eps: 1e-6,
        sinkhorn_iterations: 1,
    };
    let x = gpu_act(&mut gpu, 2, HC_STREAMS * d, &vec![1.0; 2 * HC_STREAMS * d]);
    let err = gpu
        .hc_head(&x, HyperCase::weights(&case.gpu), &p)
        .unwrap_err()
        .to_string();
    assert!(err.contains("hc_head") && err.contains("hc_fn"), "{err}");
    let head = [
        f32_data(
            "output_hc_fn",
            &[HC_STREAMS * d, HC_STREAMS],
            &vec![0.0; 16 * d],
        ),
        f32_data("output_hc_scale", &[1], &[1.0]),
        f32_data("output_hc_base", &[HC_STREAMS], &[0.0; HC_STREAMS]),
    ]
    .map(|w| gpu.upload(w).unwrap());
    let w = HyperCase::weights(&head);
    let narrow = gpu_act(&mut gpu, 2, 2 * d, &vec![1.0; 4 * d]);
    let err = gpu.hc_head(&narrow, w, &p).unwrap_err().to_string();
    assert!(err.contains("matmul") || err.contains("hc_head"), "{err}");
    let wide_scale = gpu
        .upload(f32_data("output_hc_scale", &[3], &[1.0; 3]))
        .unwrap();
    let err = gpu
        .hc_head(
            &x,
            HyperWeights {
                scale: &wide_scale,
                ..w
            },
            &p,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hc_head") && err.contains("output_hc_scale"),
        "{err}"
    );
}

/// The bound of a sum of `cols` f32 products against its f64 value: a sequential f32 sum of
/// n terms is off by at most n half-ulps of `sum_i |w_i x_i|` (however the kernels split the
/// row over lanes, each partial sum is such a sum and the tree joining them adds fewer), so
/// `cols * 2^-24` relative to it on the register path; 2e-3 on cooperative paths (f16 tiles,
/// as for `matmul`). A group reading another group's slice, or a row of the wrong group, is
/// off by the size of the value itself.
fn sum_tolerance(path: Path, cols: usize) -> f64 {
    match path {
        Path::Reg => cols as f64 * f64::from(f32::EPSILON) / 2.0,
        _ => 2e-3,
    }
}

/// `grouped_matmul` (the grouped low-rank output, `attn_output_a`) against the CPU reference
/// (the reference model's own step) at the tiny fixture's dimensions (2 groups of 64 -> 16)
/// and Flash's (8 groups of 4096 -> 1024, Q8_0 as the original engine ships it), for decode
/// (mat-vec) and prefill (tiled), the output poisoned; then with the weight over several
/// buffers (each holding whole groups), and shapes that do not fit refused.
#[test]
fn grouped_matmul_matches_cpu() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("grouped_matmul_matches_cpu");
    let scale = |x: &[f32], w: &[f32], groups: usize, cols: usize| -> Vec<f64> {
        let rank = w.len() / cols / groups;
        x.chunks(groups * cols)
            .flat_map(|xt| {
                w.chunks(cols).enumerate().map(move |(r, wr)| {
                    let xg = &xt[r / rank * cols..][..cols];
                    xg.iter().zip(wr).map(|(a, b)| (a * b).abs() as f64).sum()
                })
            })
            .collect()
    };
    for (groups, cols, rank, ty, tokens) in [
        (2, 64, 16, WeightType::F32, &[1, 4, 5, 37][..]),
        (2, 64, 16, WeightType::Q8_0, &[1, 37]),
        (8, 4096, 1024, WeightType::Q8_0, &[1, 9]),
    ] {
        let w = Weights::random(&mut rng, ty, 1, groups * rank, cols);
        let data = w.matrix_data("attn_output_a");
        let (gw, cw) = upload_both(&mut gpu, &mut cpu, data);
        let path = dense_path(&gpu, ty);
        let tol = sum_tolerance(path, cols);
        for &t in tokens {
            let label = format!("grouped_matmul {groups}x{cols}->{rank} {ty} T={t}");
            let x = uniform(&mut rng, t * groups * cols, 1.0);
            let gx = gpu_act(&mut gpu, t, groups * cols, &x);
            let got = gpu.grouped_matmul(&gx, &gw, groups).unwrap();
            assert_eq!(gpu.shape(&got), (t, groups * rank), "{label}");
            let got = gpu.read(&got).unwrap();
            let want = cpu
                .grouped_matmul(&cpu_act(t, groups * cols, &x), &cw, groups)
                .unwrap();
            let s = scale(&x, &w.values, groups, cols);
            check_close(&label, &got, &want.data, |i| tol * s[i] + 1e-6);
        }
    }

    // 4 groups of 8 rows of 32 F32 values (128 bytes a row): under a 12-row binding limit the
    // upload cuts 4 slices of 8 rows, one per buffer; under 20 rows 2 slices of 16, one per
    // buffer (two groups each). Under 4 rows, buffers of 4 rows split every group: refused.
    let (groups, cols, rank) = (4, 32, 8);
    let w = Weights::random(&mut rng, WeightType::F32, 1, groups * rank, cols);
    let dims = [cols, groups * rank];
    let data = WeightData {
        name: "attn_output_a",
        ty: w.ty.ggml(),
        dims: &dims,
        bytes: &w.bytes,
    };
    let cw = cpu.upload(data).unwrap();
    for (limit_rows, buffers) in [(12, 4), (20, 2)] {
        let gw = gpu
            .context()
            .upload_experts_with_limit(&data, limit_rows * 128)
            .unwrap();
        assert_eq!(gw.chunks.len(), buffers);
        for t in [1, 37] {
            let x = uniform(&mut rng, t * groups * cols, 1.0);
            let gx = gpu_act(&mut gpu, t, groups * cols, &x);
            let got = gpu.grouped_matmul(&gx, &gw, groups).unwrap();
            let got = gpu.read(&got).unwrap();
            let want = cpu
                .grouped_matmul(&cpu_act(t, groups * cols, &x), &cw, groups)
                .unwrap();
            let s = scale(&x, &w.values, groups, cols);
            let tol = sum_tolerance(Path::Reg, cols);
            let label = format!("grouped_matmul in {buffers} buffers T={t}");
            check_close(&label, &got, &want.data, |i| tol * s[i] + 1e-6);
        }
    }
    let split = gpu
        .context()
        .upload_experts_with_limit(&data, 4 * 128)
        .unwrap();
    let x = gpu_act(&mut gpu, 1, groups * cols, &vec![1.0; groups * cols]);
    let err = gpu
        .grouped_matmul(&x, &split, groups)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("grouped_matmul") && err.contains("attn_output_a"),
        "{err}"
    );
    let whole = gpu.upload(data).unwrap();
    for (width, g) in [
        (groups * cols + 32, groups),
        (groups * cols, 3),
        (groups * cols, 0),
    ] {
        let x = gpu_act(&mut gpu, 2, width, &vec![1.0; 2 * width]);
        let err = gpu.grouped_matmul(&x, &whole, g).unwrap_err().to_string();
        assert!(err.contains("grouped_matmul"), "{err}");
        let err = cpu
            .grouped_matmul(&cpu_act(2, width, &vec![1.0; 2 * width]), &cw, g)
            .unwrap_err()
            .to_string();
        assert!(err.contains("grouped_matmul"), "{err}");
    }
}

/// `compressor_pool` (a compressor's softmax pooling and RMS norm) against the CPU reference
/// (the reference model's own step) at the tiny fixture's widths (keys 32, indexer 64) and
/// Flash's (512, 128), ratio 4 with the overlapping previous block (a sequence's first blocks,
/// and a later chunk whose first block is only the previous one) and ratio 128 without: one
/// row (the fewest an input makes: a decode step completes at most one block) and many, the
/// output poisoned.
///
/// Tolerance: each output column's values keep one sign over the window, |kv| in [0.5, 1.5], so the
/// pooled value is a mean of same-sign values and the output's error is relative: the scores
/// (|s| <= 4) are one f32 rounding off (2.4e-7 through exp), the GPU's exp is within 3 + 2|x|
/// ulps (Vulkan's bound: 1.1e-6 at |x| <= 8), the sums over the window and over the row's
/// squares at most one half-ulp per term: `4e-6 + (window + width) * 2^-24` of |want|. A
/// softmax that drops the previous block, the ape bias or the max, or a row not normed, is off
/// by far more. On lavapipe it uses <= 0.06 of the bound (12 seeds).
#[test]
fn compressor_pool_matches_cpu() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("compressor_pool_matches_cpu");
    for (width, ratio, overlap, previous, t) in [
        (32, 4, true, false, 4),
        (32, 4, true, false, 40),
        (32, 4, true, true, 8),
        (64, 4, true, true, 40),
        (32, 128, false, false, 128),
        (32, 128, false, false, 384),
        (512, 4, true, false, 36),
        (512, 4, true, true, 8),
        (128, 4, true, true, 36),
        (512, 128, false, false, 256),
    ] {
        let label = format!("compressor_pool {width} ratio {ratio} previous {previous} T={t}");
        let coff = if overlap { 2 } else { 1 };
        let cols = coff * width;
        // A sign per output column, the same in both halves of an overlapping projection.
        let sign: Vec<f32> = (0..width)
            .map(|_| if rng.random_bool(0.5) { 1.0 } else { -1.0 })
            .collect();
        let kv: Vec<f32> = (0..t * cols)
            .map(|i| sign[i % width] * rng.random_range(0.5..1.5))
            .collect();
        let score = uniform(&mut rng, t * cols, 3.0);
        let ape = uniform(&mut rng, ratio * cols, 1.0);
        let norm: Vec<f32> = (0..width).map(|_| rng.random_range(0.5..1.5)).collect();
        let (ga, ca) = upload_both(
            &mut gpu,
            &mut cpu,
            f32_data("compressor_ape", &[cols, ratio], &ape),
        );
        let (gn, cn) = upload_both(
            &mut gpu,
            &mut cpu,
            f32_data("compressor_norm", &[width], &norm),
        );
        let p = PoolParams {
            ratio,
            overlap,
            previous,
            rms_eps: 1e-6,
        };
        let (gk, gs) = (
            gpu_act(&mut gpu, t, cols, &kv),
            gpu_act(&mut gpu, t, cols, &score),
        );
        let w = PoolWeights {
            ape: &ga,
            norm: &gn,
        };
        let got = gpu.compressor_pool(&gk, &gs, w, &p).unwrap();
        let rows = t / ratio - usize::from(previous);
        assert_eq!(gpu.shape(&got), (rows, width), "{label}");
        let got = gpu.read(&got).unwrap();
        let w = PoolWeights {
            ape: &ca,
            norm: &cn,
        };
        let want = cpu
            .compressor_pool(&cpu_act(t, cols, &kv), &cpu_act(t, cols, &score), w, &p)
            .unwrap();
        let window = coff * ratio;
        let rel = 4e-6 + (window + width) as f64 * f64::from(f32::EPSILON) / 2.0;
        check_close(&label, &got, &want.data, |i| {
            rel * (want.data[i] as f64).abs() + 1e-7
        });
    }
    // Inputs that are not whole blocks, a previous block without overlap, an ape of the wrong
    // ratio: refused, naming the op.
    let (width, ratio) = (32, 4);
    let ape = gpu
        .upload(f32_data(
            "compressor_ape",
            &[2 * width, ratio],
            &vec![0.0; 8 * width],
        ))
        .unwrap();
    let norm = gpu
        .upload(f32_data("compressor_norm", &[width], &vec![1.0; width]))
        .unwrap();
    let w = PoolWeights {
        ape: &ape,
        norm: &norm,
    };
    let p = PoolParams {
        ratio,
        overlap: true,
        previous: false,
        rms_eps: 1e-6,
    };
    let x = gpu_act(&mut gpu, 6, 2 * width, &vec![1.0; 12 * width]);
    for p in [
        p,
        PoolParams { ratio: 2, ..p },
        PoolParams {
            overlap: false,
            previous: true,
            ..p
        },
    ] {
        let err = gpu.compressor_pool(&x, &x, w, &p).unwrap_err().to_string();
        assert!(err.contains("compressor_pool"), "{err}");
    }
}

/// `delta_net` (qwen35moe's Gated DeltaNet: `conv_silu`, then the gated delta rule with the
/// gated RMS norm, in its recurrent form and in its chunked form) against the CPU reference at
/// every head width with a kernel, key heads shared by several value heads or not, 1, 2 and 4
/// convolution taps, on a layer after an attention layer (so the state is found by layer
/// index), fed in calls of several sizes that continue the state: one token (as decode does,
/// always the recurrent form), chunks shorter and longer than the tail and than a chunk of the
/// chunked form, and a whole number of such chunks; the outputs, the scratch matrices and the
/// state buffers poisoned first (a first call clears the state).
///
/// Tolerance: the reference keeps f64 within a token and rounds the state to f32 between
/// tokens, the GPU computes in f32: each dot product of a head (`head_dim` terms, q and k
/// L2-normed so the terms are bounded by the state's size) is off by up to `head_dim` half-ulps,
/// and the state carries such errors from token to token, shrunk by the decay and the delta
/// rule's correction. The output is RMS-normed per head, so its error is relative to the head's
/// scale: `2e-5 * max(1, |want|)` for both forms. The chunked form adds the forward
/// substitution of a 16 x 16 unit triangular system (entries |L| <= 1) and decays taken as
/// differences of cumulative sums. On lavapipe the recurrent form uses <= 0.2 of the bound
/// over 40 tokens, the chunked <= 0.3; a wrong tail, decay, beta, norm, a dropped chunk term
/// or a wrong triangular solve is off by O(1).
#[test]
fn delta_net_matches_cpu() {
    for chunked in [false, true] {
        check_delta_net(chunked);
    }
}

fn check_delta_net(chunked: bool) {
    let Some(base) = backend(ActType::F32) else {
        return;
    };
    let options = BackendOptions {
        chunked_delta_net: chunked,
        ..*base.options()
    };
    let mut gpu = WgpuBackend::with_options(base.context().clone(), options).unwrap();
    let mut cpu = CpuBackend::new();
    let mut rng = rng(&format!("delta_net_matches_cpu chunked {chunked}"));
    let cases: [(usize, usize, usize, usize, &[usize]); 4] = [
        (32, 2, 4, 4, &[1, 7, 1, 40, 1, 16]),
        (64, 1, 2, 2, &[5, 1, 17]),
        (128, 2, 2, 4, &[3, 1, 20]),
        (32, 1, 1, 1, &[4, 1, 32]),
    ];
    for (head_dim, n_k_heads, n_v_heads, conv_taps, calls) in cases {
        let shape = DeltaNetConfig {
            conv_taps,
            head_dim,
            n_k_heads,
            n_v_heads,
        };
        let (cfg, gw, cw) = delta_layer(&mut gpu, &mut cpu, &mut rng, shape);
        let (ch, values) = (shape.conv_channels(), shape.value_width());
        let cols = ch + values + 2 * n_v_heads;
        let p = DeltaNetParams { shape, eps: 1e-6 };
        let mut gkv = gpu.qwen35moe_cache(&cfg, 96, 1, 32).unwrap();
        let mut ckv = cpu.qwen35moe_cache(&cfg, 96, 1, 32).unwrap();
        let mut pos0 = 0;
        for &t in calls {
            let label = format!(
                "delta_net (chunked {chunked}) h{head_dim} {n_k_heads}/{n_v_heads} heads, \
                 {conv_taps} taps, T={t} at {pos0}"
            );
            let proj = uniform(&mut rng, t * cols, 2.0);
            let gp = gpu_act(&mut gpu, t, cols, &proj);
            let got = gpu.delta_net(&gp, &gw, &mut gkv, 2, pos0, &p).unwrap();
            assert_eq!(gpu.shape(&got), (t, values), "{label}");
            let want = cpu
                .delta_net(&cpu_act(t, cols, &proj), &cw, &mut ckv, 2, pos0, &p)
                .unwrap();
            check_close(&label, &gpu.read(&got).unwrap(), &want.data, |i| {
                2e-5 * (want.data[i] as f64).abs().max(1.0)
            });
            pos0 += t;
        }
        // Another position than where the state stopped, an attention layer, and a
        // projection of the wrong width are refused, naming the op.
        let x = gpu_act(&mut gpu, 1, cols, &vec![0.0; cols]);
        let err = gpu.delta_net(&x, &gw, &mut gkv, 2, 1, &p).unwrap_err();
        assert!(err.to_string().contains("does not rewind"), "{err}");
        let err = gpu.delta_net(&x, &gw, &mut gkv, 1, pos0, &p).unwrap_err();
        assert!(err.to_string().contains("no DeltaNet state"), "{err}");
        let narrow = gpu_act(&mut gpu, 1, cols - 1, &vec![0.0; cols - 1]);
        let err = gpu
            .delta_net(&narrow, &gw, &mut gkv, 2, pos0, &p)
            .unwrap_err();
        assert!(err.to_string().contains("delta_net"), "{err}");
    }
}

/// A random DeltaNet layer of `shape` uploaded to both backends, as layer 2 of a config whose
/// layer 1 is attention (so the state is found by layer index): `(config, gpu, cpu)`.
fn delta_layer(
    gpu: &mut WgpuBackend,
    cpu: &mut CpuBackend,
    rng: &mut StdRng,
    shape: DeltaNetConfig,
) -> (
    Qwen35MoeConfig,
    DeltaNetWeights<moetile_wgpu::ExpertTensor>,
    DeltaNetWeights<CpuWeight>,
) {
    let DeltaNetConfig {
        conv_taps,
        head_dim,
        n_v_heads,
        ..
    } = shape;
    let cfg = Qwen35MoeConfig {
        mixers: vec![Mixer::DeltaNet, Mixer::Attention, Mixer::DeltaNet],
        delta_net: shape,
        shared_ff: 32,
    };
    let (ch, values) = (shape.conv_channels(), shape.value_width());
    let conv = uniform(rng, ch * conv_taps, 0.5);
    let dt_bias = uniform(rng, n_v_heads, 0.5);
    let a: Vec<f32> = (0..n_v_heads)
        .map(|_| -rng.random_range(0.2..1.5))
        .collect();
    let norm: Vec<f32> = (0..head_dim).map(|_| rng.random_range(0.8..1.2)).collect();
    let mut both = |name: &'static str, dims: &[usize], values: &[f32]| {
        upload_both(gpu, cpu, f32_data(name, dims, values))
    };
    let weights = [
        both("ssm_conv1d", &[conv_taps, ch], &conv),
        both("ssm_dt.bias", &[n_v_heads], &dt_bias),
        both("ssm_a", &[n_v_heads], &a),
        both("ssm_norm", &[head_dim], &norm),
        both("ssm_out", &[values, 32], &vec![0.0; values * 32]),
    ];
    let [(gc, cc), (gd, cd), (ga, ca), (gn, cn), (go, co)] = weights;
    let gw = DeltaNetWeights {
        in_proj: Vec::new(),
        conv: gc,
        dt_bias: gd,
        a: ga,
        norm: gn,
        out: go,
    };
    let cw = DeltaNetWeights {
        in_proj: Vec::new(),
        conv: cc,
        dt_bias: cd,
        a: ca,
        norm: cn,
        out: co,
    };
    (cfg, gw, cw)
}

/// Rows of different sequences, each the next token of its own DeltaNet state at its own
/// position (an empty cache among them, so that row restarts its state at position 0), run
/// like the CPU reference (whose `delta_net_batch` runs each row alone), over three steps so
/// each reads the tail and state the one before left in its own cache; a projection, output
/// and state poisoned first. Tolerance: `delta_net_matches_cpu`'s. A batch with a row at a
/// position its state cannot continue at is refused before any row runs, so the steps after
/// it still match.
#[test]
fn delta_net_batch_runs_each_row_on_its_own_state() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("delta_net_batch_runs_each_row_on_its_own_state");
    let shape = DeltaNetConfig {
        conv_taps: 4,
        head_dim: 32,
        n_k_heads: 2,
        n_v_heads: 4,
    };
    let (cfg, gw, cw) = delta_layer(&mut gpu, &mut cpu, &mut rng, shape);
    let cols = shape.conv_channels() + shape.value_width() + 2 * shape.n_v_heads;
    let p = DeltaNetParams { shape, eps: 1e-6 };
    let prompts = [5, 0, 23, 1];
    let mut gkvs = Vec::new();
    let mut ckvs = Vec::new();
    for &len in &prompts {
        let mut gkv = gpu.qwen35moe_cache(&cfg, 40, 1, 32).unwrap();
        let mut ckv = cpu.qwen35moe_cache(&cfg, 40, 1, 32).unwrap();
        if len > 0 {
            let proj = uniform(&mut rng, len * cols, 2.0);
            let g = gpu_act(&mut gpu, len, cols, &proj);
            gpu.delta_net(&g, &gw, &mut gkv, 2, 0, &p).unwrap();
            cpu.delta_net(&cpu_act(len, cols, &proj), &cw, &mut ckv, 2, 0, &p)
                .unwrap();
        }
        gkvs.push(gkv);
        ckvs.push(ckv);
    }
    let rows = prompts.len();
    let positions = |step: usize| -> Vec<usize> { prompts.iter().map(|&l| l + step).collect() };
    // Row 2 one position ahead of its state: refused before any row runs.
    let mut wrong = positions(0);
    wrong[2] += 1;
    let g = gpu_act(&mut gpu, rows, cols, &vec![0.0; rows * cols]);
    let mut gs: Vec<&mut KvCache> = gkvs.iter_mut().collect();
    let err = gpu
        .delta_net_batch(&g, &gw, &mut gs, &wrong, 2, &p)
        .unwrap_err();
    assert!(err.to_string().contains("does not rewind"), "{err}");
    for s in 0..3 {
        let at = positions(s);
        let proj = uniform(&mut rng, rows * cols, 2.0);
        let g = gpu_act(&mut gpu, rows, cols, &proj);
        let mut gs: Vec<&mut KvCache> = gkvs.iter_mut().collect();
        let got = gpu.delta_net_batch(&g, &gw, &mut gs, &at, 2, &p).unwrap();
        assert_eq!(gpu.shape(&got), (rows, shape.value_width()));
        let c = cpu_act(rows, cols, &proj);
        let mut cs: Vec<_> = ckvs.iter_mut().collect();
        let want = cpu.delta_net_batch(&c, &cw, &mut cs, &at, 2, &p).unwrap();
        let label = format!("delta_net_batch at positions {at:?}");
        check_close(&label, &gpu.read(&got).unwrap(), &want.data, |i| {
            2e-5 * (want.data[i] as f64).abs().max(1.0)
        });
    }
    // Fewer positions than rows, and a row past its cache: errors, not panics.
    let g = gpu_act(&mut gpu, 2, cols, &vec![0.0; 2 * cols]);
    let mut gs: Vec<&mut KvCache> = gkvs.iter_mut().take(2).collect();
    let short = gpu.delta_net_batch(&g, &gw, &mut gs, &[7], 2, &p);
    assert!(
        matches!(short, Err(moetile::Error::Shape { .. })),
        "{short:?}"
    );
    let full = gpu.delta_net_batch(&g, &gw, &mut gs, &[8, 40], 2, &p);
    assert!(
        matches!(full, Err(moetile::Error::ContextFull { .. })),
        "{full:?}"
    );
}

/// Opt-in timing of the two forms of the gated delta rule at Qwen3.6-35B-A3B's DeltaNet shape
/// (16 key heads and 32 value heads of 128, 4 taps): `cargo test --release -p moetile-wgpu
/// --test ops -- --ignored delta_net_forms_timing --nocapture` prints the wall time per layer
/// of a prefill of T tokens (the mean of 10 calls, recorded together and waited for once).
#[test]
#[ignore = "a timing, for GPUs: run with --ignored"]
fn delta_net_forms_timing() {
    let Some(base) = backend(ActType::F32) else {
        return;
    };
    let shape = DeltaNetConfig {
        conv_taps: 4,
        head_dim: 128,
        n_k_heads: 16,
        n_v_heads: 32,
    };
    let cfg = Qwen35MoeConfig {
        mixers: vec![Mixer::DeltaNet],
        delta_net: shape,
        shared_ff: 512,
    };
    let (ch, values, heads) = (shape.conv_channels(), shape.value_width(), shape.n_v_heads);
    let cols = ch + values + 2 * heads;
    let mut rng = rng("delta_net_forms_timing");
    for chunked in [false, true] {
        let options = BackendOptions {
            poison: false,
            chunked_delta_net: chunked,
            ..*base.options()
        };
        let mut gpu = WgpuBackend::with_options(base.context().clone(), options).unwrap();
        let mut upload = |name, dims: &[usize], values: &[f32]| {
            gpu.upload(f32_data(name, dims, values)).unwrap()
        };
        let w = DeltaNetWeights {
            in_proj: Vec::new(),
            conv: upload("ssm_conv1d", &[4, ch], &uniform(&mut rng, 4 * ch, 0.5)),
            dt_bias: upload("ssm_dt.bias", &[heads], &uniform(&mut rng, heads, 0.5)),
            a: upload("ssm_a", &[heads], &vec![-0.5; heads]),
            norm: upload("ssm_norm", &[128], &vec![1.0; 128]),
            out: upload("ssm_out", &[values, 32], &vec![0.0; values * 32]),
        };
        let p = DeltaNetParams { shape, eps: 1e-6 };
        let mut kv = gpu.qwen35moe_cache(&cfg, 4096, 1, 128).unwrap();
        for t in [1, 512, 2048] {
            let proj = gpu_act(&mut gpu, t, cols, &uniform(&mut rng, t * cols, 2.0));
            let y = gpu.delta_net(&proj, &w, &mut kv, 0, 0, &p).unwrap();
            gpu.read(&y).unwrap();
            let start = std::time::Instant::now();
            for _ in 0..9 {
                gpu.delta_net(&proj, &w, &mut kv, 0, 0, &p).unwrap();
            }
            let y = gpu.delta_net(&proj, &w, &mut kv, 0, 0, &p).unwrap();
            gpu.read(&y).unwrap();
            let per_call = start.elapsed() / 10;
            println!("delta_net chunked {chunked}, T={t}: {per_call:?} per layer");
        }
    }
}

#[test]
fn routing_from_host_round_trips() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let ids = [3, 1, 0, 2, 2, 3];
    let weights = [0.5, 0.25, 1.0, 0.0, 0.125, 2.0];
    let r = gpu.routing_from_host(4, 2, &ids, &weights).unwrap();
    assert_eq!(
        gpu.read_routing(&r).unwrap(),
        (ids.to_vec(), weights.to_vec())
    );
    let err = gpu.routing_from_host(3, 2, &ids, &weights).unwrap_err();
    assert!(err.to_string().contains("expert 3 of 3"), "{err}");
}

/// Random routed experts on both backends, the same values: Q4_K gate and up (interleaved by
/// the GPU at upload, separate on the CPU) `[d, f, e]`, Q8_0 down `[f, d, e]`.
struct BothExperts {
    gpu: (
        GateUp<moetile_wgpu::ExpertTensor>,
        moetile_wgpu::ExpertTensor,
    ),
    cpu: (GateUp<moetile_cpu::CpuWeight>, moetile_cpu::CpuWeight),
}

impl BothExperts {
    fn random(
        gpu: &mut WgpuBackend,
        cpu: &mut CpuBackend,
        rng: &mut StdRng,
        [d, f, e]: [usize; 3],
    ) -> BothExperts {
        let gate = Weights::random(rng, WeightType::Q4_K, e, f, d);
        let up = Weights::random(rng, WeightType::Q4_K, e, f, d);
        let down = Weights::random(rng, WeightType::Q8_0, e, d, f);
        let ggu = gpu
            .upload_gate_up(gate.data("gate"), up.data("up"))
            .unwrap();
        assert!(matches!(ggu, GateUp::Interleaved(_)));
        let cgu = cpu
            .upload_gate_up(gate.data("gate"), up.data("up"))
            .unwrap();
        let (gd, cd) = upload_both(gpu, cpu, down.data("down"));
        BothExperts {
            gpu: (ggu, gd),
            cpu: (cgu, cd),
        }
    }

    /// The CPU reference of `x (t, d)` routed to `ids`/`w`, normed by `norm` first when
    /// given: x after the layer added into it, and the RMS of what it added.
    fn reference(
        &self,
        cpu: &mut CpuBackend,
        x: &[f32],
        norm: Option<PreNorm<'_, CpuWeight>>,
        (ids, w): (&[u32], &[f32]),
        k: usize,
        params: &MoeParams,
    ) -> (Vec<f32>, f64) {
        let (t, e) = (ids.len() / k, self.cpu.1.experts());
        let routing = cpu.routing_from_host(e, k, ids, w).unwrap();
        let (gate_up, down) = (&self.cpu.0, &self.cpu.1);
        let mut out = cpu_act(t, x.len() / t, x);
        cpu.moe(
            &mut out,
            norm,
            &routing,
            ExpertWeights { gate_up, down },
            params,
        )
        .unwrap();
        let added = out
            .data
            .iter()
            .zip(x)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2));
        let rms = (added.sum::<f64>() / x.len() as f64).sqrt();
        (out.data, rms)
    }

    fn gpu_weights(&self) -> ExpertWeights<'_, moetile_wgpu::ExpertTensor> {
        ExpertWeights {
            gate_up: &self.gpu.0,
            down: &self.gpu.1,
        }
    }
}

/// The GPU layer's tolerance, in units of the reference's RMS: 5e-5 with f32 `mid`, 2e-3 with
/// f16 `mid` where the device default has it (see tests/kernels.rs), twice that on
/// cooperative paths.
fn moe_tolerance(gpu: &WgpuBackend) -> f64 {
    let mid = match gpu.options().mid {
        ActType::F32 => 5e-5,
        ActType::F16 => 2e-3,
    };
    mid * if gpu.options().path == Path::Reg {
        1.0
    } else {
        2.0
    }
}

#[test]
fn moe_honours_the_tile_and_matches_cpu() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let profiling = gpu.set_profiling(true).is_ok();
    let mut cpu = CpuBackend::new();
    let mut rng = rng("moe_honours_the_tile_and_matches_cpu");
    let (d, e, k, t) = (256, 8, 2, 150);
    let experts = BothExperts::random(&mut gpu, &mut cpu, &mut rng, [d, 96, e]);
    let x = uniform(&mut rng, t * d, 1.0);
    let ids = common::random_ids(&mut rng, t, k, e);
    let w: Vec<f32> = (0..t * k).map(|_| rng.random_range(0.0..1.0)).collect();
    let params = |tile| MoeParams {
        activation: ExpertActivation::SwiGlu,
        tile,
    };
    let (want, rms) = experts.reference(&mut cpu, &x, None, (&ids, &w), k, &params(TileWidth::T32));
    let tol = moe_tolerance(&gpu);
    let routing = gpu.routing_from_host(e, k, &ids, &w).unwrap();
    for tile in TileWidth::ALL {
        let mut gx = gpu_act(&mut gpu, t, d, &x);
        gpu.stage(Stage::Experts, Some(0));
        gpu.moe(
            &mut gx,
            None,
            &routing,
            experts.gpu_weights(),
            &params(tile),
        )
        .unwrap();
        let got = gpu.read(&gx).unwrap();
        check_close(&format!("moe tile {tile}"), &got, &want, |_| tol * rms);
        if profiling {
            let report = gpu.take_profile().unwrap();
            let kernels: HashSet<String> = report
                .rows
                .iter()
                .filter(|r| r.stage == Some(Stage::Experts) && r.detail == Some("gate_up"))
                .flat_map(|r| r.kernels.iter().cloned())
                .collect();
            assert!(
                kernels.iter().all(|k| k.contains(&format!("_t{tile}_"))),
                "tile {tile}: gate_up ran {kernels:?}"
            );
            assert!(!kernels.is_empty(), "the gate_up pass was timed");
        }
    }
}

/// Decode-sized batches take the mat-vec path: with gate and up interleaved at upload, the
/// routed experts are two kernels (`mv_glu`, `mv_sum`), and match the CPU reference with both
/// activations. Tolerance as in `moe_honours_the_tile_and_matches_cpu`.
#[test]
fn moe_decode_is_two_mat_vecs_and_matches_cpu() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let profiling = gpu.set_profiling(true).is_ok();
    let mut cpu = CpuBackend::new();
    let mut rng = rng("moe_decode_is_two_mat_vecs_and_matches_cpu");
    let (d, e, k) = (256, 8, 3);
    let experts = BothExperts::random(&mut gpu, &mut cpu, &mut rng, [d, 96, e]);
    let tol = moe_tolerance(&gpu);
    let norm_w = uniform(&mut rng, d, 1.0);
    let (gnorm, cnorm) = upload_both(&mut gpu, &mut cpu, f32_data("norm", &[d], &norm_w));
    for (t, activation, normed) in [
        (1, ExpertActivation::SwiGlu, false),
        (4, ExpertActivation::SwiGluClamped { limit: 1.0 }, false),
        (2, ExpertActivation::SwiGlu, true),
        (
            3,
            ExpertActivation::SwiGluOai {
                alpha: 1.702,
                limit: 1.0,
            },
            true,
        ),
    ] {
        let x = uniform(&mut rng, t * d, 2.0);
        let ids = common::random_ids(&mut rng, t, k, e);
        let w: Vec<f32> = (0..t * k).map(|_| rng.random_range(0.0..1.0)).collect();
        let params = MoeParams {
            activation,
            tile: TileWidth::T32,
        };
        let cpu_norm = normed.then(|| pre(&cnorm));
        let (want, rms) = experts.reference(&mut cpu, &x, cpu_norm, (&ids, &w), k, &params);
        let mut gx = gpu_act(&mut gpu, t, d, &x);
        let routing = gpu.routing_from_host(e, k, &ids, &w).unwrap();
        gpu.stage(Stage::Experts, Some(0));
        let gpu_norm = normed.then(|| pre(&gnorm));
        gpu.moe(&mut gx, gpu_norm, &routing, experts.gpu_weights(), &params)
            .unwrap();
        let got = gpu.read(&gx).unwrap();
        let label = format!("moe decode T={t} {activation:?} normed {normed}");
        check_close(&label, &got, &want, |_| tol * rms);
        if profiling {
            let report = gpu.take_profile().unwrap();
            let mut ran: Vec<(&str, Vec<String>)> = report
                .rows
                .iter()
                .filter(|r| r.stage == Some(Stage::Experts))
                .map(|r| (r.detail.unwrap_or(""), r.kernels.iter().cloned().collect()))
                .collect();
            ran.sort();
            let [(sum, sum_kernels), (glu, glu_kernels)] = &ran[..] else {
                panic!("T={t}: the experts ran {ran:?}, not two kernels");
            };
            assert_eq!((*sum, *glu), ("down_sum", "gate_up_act"), "T={t}");
            assert!(sum_kernels.len() == 1 && sum_kernels[0].starts_with("mv_sum_"));
            assert!(glu_kernels.len() == 1 && glu_kernels[0].starts_with("mv_glu_q4k_f32_"));
        }
    }
}

/// `moe_out` (deepseek4's experts, whose output goes through a hyper-connection rather than
/// into a residual) is what `moe` adds: on the mat-vec (T = 2) and tiled (T = 150) paths,
/// with and without the norm, and for a one-expert layer (the shared expert), it matches the
/// CPU's `moe_out` on fresh inputs into a poisoned output. Tolerance as in
/// `moe_honours_the_tile_and_matches_cpu`, in units of the output's RMS plus the value's own
/// magnitude: with f16 `mid` (the device default) each value is off by ~2^-11 of its size,
/// and the one-expert layer's outputs reach 5x their RMS (measured: up to 1.1x the RMS-only
/// bound there on lavapipe; a wrong kernel is off by the value itself).
#[test]
fn moe_out_matches_cpu_without_a_residual() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("moe_out_matches_cpu_without_a_residual");
    let (d, k) = (256, 2);
    let tol = moe_tolerance(&gpu);
    let norm_w = uniform(&mut rng, d, 1.0);
    let (gnorm, cnorm) = upload_both(&mut gpu, &mut cpu, f32_data("norm", &[d], &norm_w));
    for (e, k, t, normed) in [(8, k, 2, false), (8, k, 150, true), (1, 1, 150, false)] {
        let experts = BothExperts::random(&mut gpu, &mut cpu, &mut rng, [d, 96, e]);
        let x = uniform(&mut rng, t * d, 2.0);
        let ids = common::random_ids(&mut rng, t, k, e);
        let w: Vec<f32> = (0..t * k).map(|_| rng.random_range(0.0..1.0)).collect();
        let params = MoeParams {
            activation: ExpertActivation::SwiGluClamped { limit: 1.0 },
            tile: TileWidth::T32,
        };
        let routing = cpu.routing_from_host(e, k, &ids, &w).unwrap();
        let (gate_up, down) = (&experts.cpu.0, &experts.cpu.1);
        let want = cpu
            .moe_out(
                &cpu_act(t, d, &x),
                normed.then(|| pre(&cnorm)),
                &routing,
                ExpertWeights { gate_up, down },
                &params,
            )
            .unwrap()
            .data;
        let rms =
            (want.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / want.len() as f64).sqrt();
        let routing = gpu.routing_from_host(e, k, &ids, &w).unwrap();
        let gx = gpu_act(&mut gpu, t, d, &x);
        let out = gpu
            .moe_out(
                &gx,
                normed.then(|| pre(&gnorm)),
                &routing,
                experts.gpu_weights(),
                &params,
            )
            .unwrap();
        let got = gpu.read(&out).unwrap();
        let label = format!("moe_out E={e} K={k} T={t} normed {normed}");
        check_close(&label, &got, &want, |i| tol * (rms + want[i].abs() as f64));
        assert_eq!(
            gpu.read(&gx).unwrap(),
            x,
            "{label}: moe_out wrote its input"
        );
    }
}

/// `moe_biased` (gpt-oss's experts: per-expert gate and up biases before the clamped
/// activation, the down bias before the route weight) matches the CPU's on the mat-vec (T = 2)
/// and tiled (T = 150) sizes, normed and not, on fresh inputs added into the residual. Biases of
/// the size of the matmul outputs, so a bias added to the wrong expert or column is off by about
/// the value itself. Tolerance as in `moe_out_matches_cpu_without_a_residual`, in units of the
/// added RMS plus the value's own magnitude.
#[test]
fn moe_biased_matches_cpu_with_gate_up_and_down_biases() {
    let Some(mut gpu) = backend(ActType::F32) else {
        return;
    };
    let mut cpu = CpuBackend::new();
    let mut rng = rng("moe_biased_matches_cpu_with_gate_up_and_down_biases");
    let (d, f, e, k) = (256, 96, 8, 3);
    let tol = moe_tolerance(&gpu);
    let experts = BothExperts::random(&mut gpu, &mut cpu, &mut rng, [d, f, e]);
    let norm_w = uniform(&mut rng, d, 1.0);
    let (gnorm, cnorm) = upload_both(&mut gpu, &mut cpu, f32_data("norm", &[d], &norm_w));
    let mut bias = |name, cols| {
        let values = uniform(&mut rng, cols * e, 1.0);
        upload_both(&mut gpu, &mut cpu, f32_data(name, &[cols, e], &values))
    };
    let ((gg, cg), (gu, cu), (gd, cd)) = (bias("gate_b", f), bias("up_b", f), bias("down_b", d));
    let gpu_biases = ExpertBiases {
        gate: gg,
        up: gu,
        down: gd,
    };
    let cpu_biases = ExpertBiases {
        gate: cg,
        up: cu,
        down: cd,
    };
    let params = MoeParams {
        activation: ExpertActivation::SwiGluOai {
            alpha: 1.702,
            limit: 1.0,
        },
        tile: TileWidth::T32,
    };
    for (t, normed) in [(2, false), (2, true), (150, true)] {
        let x = uniform(&mut rng, t * d, 2.0);
        let ids = common::random_ids(&mut rng, t, k, e);
        let w: Vec<f32> = (0..t * k).map(|_| rng.random_range(0.0..1.0)).collect();
        let routing = cpu.routing_from_host(e, k, &ids, &w).unwrap();
        let (gate_up, down) = (&experts.cpu.0, &experts.cpu.1);
        let mut want = cpu_act(t, d, &x);
        cpu.moe_biased(
            &mut want,
            normed.then(|| pre(&cnorm)),
            &routing,
            ExpertWeights { gate_up, down },
            &cpu_biases,
            &params,
        )
        .unwrap();
        let added = want.data.iter().zip(&x).map(|(a, b)| (a - b) as f64);
        let rms = (added.map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt();
        let routing = gpu.routing_from_host(e, k, &ids, &w).unwrap();
        let mut gx = gpu_act(&mut gpu, t, d, &x);
        gpu.moe_biased(
            &mut gx,
            normed.then(|| pre(&gnorm)),
            &routing,
            experts.gpu_weights(),
            &gpu_biases,
            &params,
        )
        .unwrap();
        let got = gpu.read(&gx).unwrap();
        let label = format!("moe_biased T={t} normed {normed}");
        check_close(&label, &got, &want.data, |i| {
            tol * (rms + want.data[i].abs() as f64)
        });
    }
}

#[test]
fn limits_and_shapes_are_refused_with_names() {
    let Some(mut gpu) = backend(ActType::F16) else {
        return;
    };
    let ctx = gpu.context().clone();
    // A KV cache past the binding limit names itself and the limit.
    let err = gpu.kv_cache(1, 1 << 30, 8, 128).unwrap_err().to_string();
    assert!(err.contains("KV cache") && err.contains("max_"), "{err}");
    let err = gpu.kv_cache(1, 16, 2, 24).unwrap_err().to_string();
    assert!(err.contains("head width 24"), "{err}");
    let err = ctx.check_size("the logits", u64::MAX / 2).unwrap_err();
    assert!(matches!(err, WgpuError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("the logits"), "{err}");
    let w = gpu.upload(f32_data("w", &[32, 2], &[0.0; 64])).unwrap();
    let x = gpu_act(&mut gpu, 1, 64, &[0.0; 64]);
    let err = gpu.matmul(&x, &w).unwrap_err().to_string();
    assert!(err.contains("matmul") && err.contains('w'), "{err}");
    // An unsupported weight type lists the supported ones.
    let bytes = vec![0u8; 136];
    let err = gpu
        .upload(WeightData {
            name: "odd",
            ty: moetile::quant::GgmlType::IQ4_XS,
            dims: &[256, 1],
            bytes: &bytes,
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("odd") && err.contains("Q5_1"), "{err}");
}

/// Two backends on one context are two streams of work: a buffer one drops while its encoder
/// is still open must not be handed to the other, whose work would be submitted (and read)
/// before the first stream's earlier commands on that buffer run.
#[test]
fn two_backends_on_one_context_keep_their_buffers_apart() {
    let (Some(mut a), Some(mut b)) = (backend(ActType::F32), backend(ActType::F32)) else {
        return;
    };
    let (t, cols) = (4, 64);
    let ones = vec![1.0; t * cols];
    let dims = [cols];
    let (wa, wb) = (
        a.upload(f32_data("w", &dims, &vec![2.0; cols])).unwrap(),
        b.upload(f32_data("w", &dims, &vec![1.0; cols])).unwrap(),
    );
    // A records a norm (all 2s) and drops its output while A's encoder is still open.
    let xa = gpu_act(&mut a, t, cols, &vec![5.0; t * cols]);
    drop(a.rms_norm(&xa, &wa, 0.0).unwrap());
    // B computes a norm of its own (all 1s) and reads it: B's work is submitted first.
    let xb = gpu_act(&mut b, t, cols, &ones);
    let yb = b.rms_norm(&xb, &wb, 0.0).unwrap();
    let first = b.read(&yb).unwrap();
    // A's work runs now; then B's result must be unchanged.
    a.flush().unwrap();
    assert_eq!(b.read(&yb).unwrap(), first);
    assert!(first.iter().all(|&v| (v - 1.0).abs() < 1e-6), "{first:?}");
}
