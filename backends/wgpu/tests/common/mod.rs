//! Shared by the GPU test binaries: one device per binary, seeded random data, quantized
//! weights with their exact dequantization, and the f64 reference of a grouped matmul.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use moetile::RuntimeConfig;
use moetile::gguf::GgufFile;
use moetile::model::{Logits, Model, WeightData};
use moetile::session::Session;
use moetile_wgpu::{
    BackendOptions, ContextOptions, GgmlWeight, WeightType, WgpuBackend, WgpuContext,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The test device: `None` (test skipped) when no adapter exists, unless
/// `MOETILE_REQUIRE_GPU=1`, which makes that a failure.
pub fn ctx() -> Option<&'static WgpuContext> {
    shared_ctx().map(|c| &**c)
}

/// The test device as the shared handle a `WgpuBackend` takes.
pub fn shared_ctx() -> Option<&'static Arc<WgpuContext>> {
    static CTX: OnceLock<Option<Arc<WgpuContext>>> = OnceLock::new();
    CTX.get_or_init(
        || match ContextOptions::from_env().and_then(|o| WgpuContext::new(&o)) {
            Ok(ctx) => {
                eprintln!(
                    "GPU tests on {} (paths {:?})",
                    ctx.profile().describe(),
                    ctx.profile().paths()
                );
                Some(Arc::new(ctx))
            }
            Err(e) => {
                moetile_tests::skip_without_gpu(&format_args!("no device: {e}"));
                None
            }
        },
    )
    .as_ref()
}

/// A generator seeded by [`moetile_tests::seed`] (printed, so a failure reproduces).
pub fn rng(test: &str) -> StdRng {
    StdRng::seed_from_u64(moetile_tests::seed(test))
}

/// `n` values uniform in `[-scale, scale]`.
pub fn uniform(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..=scale)).collect()
}

/// Random weights `[cols, rows, experts]` quantized to `ty`: `(GGUF bytes, exact dequantized
/// values)`.
pub struct Weights {
    pub ty: WeightType,
    pub dims: [usize; 3],
    pub bytes: Vec<u8>,
    pub values: Vec<f32>,
}

impl Weights {
    pub fn random(
        rng: &mut StdRng,
        ty: WeightType,
        experts: usize,
        rows: usize,
        cols: usize,
    ) -> Self {
        let n = experts * rows * cols;
        let bytes = random_blocks(rng, ty, n);
        let mut values = vec![0.0; n];
        moetile::quant::dequantize(ty.ggml(), &bytes, &mut values).expect("dequantizable");
        Weights {
            ty,
            dims: [cols, rows, experts],
            bytes,
            values,
        }
    }

    pub fn data<'a>(&'a self, name: &'a str) -> WeightData<'a> {
        WeightData {
            name,
            ty: self.ty.ggml(),
            dims: &self.dims,
            bytes: &self.bytes,
        }
    }

    /// The first expert as a dense `[cols, rows]` matrix (what a one-expert `random` is).
    pub fn matrix_data<'a>(&'a self, name: &'a str) -> WeightData<'a> {
        WeightData {
            dims: &self.dims[..2],
            ..self.data(name)
        }
    }

    pub fn row(&self, expert: usize, row: usize) -> &[f32] {
        let [cols, rows, _] = self.dims;
        let start = (expert * rows + row) * cols;
        &self.values[start..start + cols]
    }
}

/// `n` values of `ty` (a whole number of blocks): uniform values in [-1, 1] quantized where
/// moetile has a quantizer; otherwise random blocks whose f16 scale fields are set so values
/// stay around [-1, 1] (every code pattern occurs, which tests the bit layout thoroughly).
pub fn random_blocks(rng: &mut StdRng, ty: WeightType, n: usize) -> Vec<u8> {
    let raw = uniform(rng, n, 1.0);
    let mut bytes = Vec::new();
    if moetile::quant::quantize(ty.ggml(), &raw, &mut bytes).is_ok() {
        return bytes;
    }
    // (byte offset, low, high) of each f16 field: scales positive, mins either sign.
    let fields: &[(usize, f32, f32)] = match ty {
        WeightType::Q4_0 => &[(0, 0.02, 0.12)],
        WeightType::Q4_1 => &[(0, 0.02, 0.12), (2, -1.0, 0.0)],
        WeightType::Q5_0 => &[(0, 0.01, 0.06)],
        WeightType::Q5_1 => &[(0, 0.01, 0.06), (2, -1.0, 0.0)],
        WeightType::Q3_K => &[(108, 0.002, 0.01)],
        other => panic!("no quantizer and no random block recipe for {other}"),
    };
    let block = ty.gguf_block_bytes() as usize;
    let blocks = n / ty.block_values() as usize;
    let mut bytes: Vec<u8> = (0..blocks * block).map(|_| rng.random()).collect();
    for b in bytes.chunks_exact_mut(block) {
        for &(at, lo, hi) in fields {
            let v = half::f16::from_f32(rng.random_range(lo..hi));
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    bytes
}

/// `values` rounded through f16, as an f16 activation buffer holds them.
pub fn round_f16(values: &[f32]) -> Vec<f32> {
    values
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect()
}

/// Reference grouped matmul in f64: for pair p, `(W[ids[p]] @ act[p / div], sum_i |w_i x_i|)`
/// per row; the second is the scale rounding errors are measured against.
pub fn grouped_matmul_ref(w: &Weights, ids: &[u32], act: &[f32], div: usize) -> Vec<(f64, f64)> {
    let [cols, rows, _] = w.dims;
    let mut out = Vec::with_capacity(ids.len() * rows);
    for (p, &e) in ids.iter().enumerate() {
        let x = &act[(p / div) * cols..(p / div + 1) * cols];
        for r in 0..rows {
            let (mut s, mut a) = (0f64, 0f64);
            for (&wi, &xi) in w.row(e as usize, r).iter().zip(x) {
                let prod = wi as f64 * xi as f64;
                s += prod;
                a += prod.abs();
            }
            out.push((s, a));
        }
    }
    out
}

/// [`grouped_matmul_ref`] of the activations as the int8 mat-vec quantizes them
/// (`moetile_cpu::int8_quantize`), for [`check`] at `rel`. A quant may round the other way on
/// the GPU where `x / d` lies within an ulp of a half (the GPU's division may be 2.5 ulp off,
/// a norm computed in f32 moves x by an ulp): each such flip moves a dot product by at most
/// `d |w_i|`, so each output's scale allows two of the largest.
pub fn int8_matmul_ref(
    w: &Weights,
    ids: &[u32],
    act: &[f32],
    div: usize,
    rel: f64,
) -> Vec<(f64, f64)> {
    let [cols, rows, _] = w.dims;
    let (quants, scales) = moetile_cpu::int8_quantize(act);
    let values: Vec<f32> = quants
        .iter()
        .enumerate()
        .map(|(i, &q)| q as f32 * scales[i / 32])
        .collect();
    let mut out = grouped_matmul_ref(w, ids, &values, div);
    for (p, &e) in ids.iter().enumerate() {
        let x0 = (p / div) * cols;
        for r in 0..rows {
            let largest_flip = w
                .row(e as usize, r)
                .iter()
                .enumerate()
                .map(|(c, &wi)| (wi as f64 * scales[(x0 + c) / 32] as f64).abs())
                .fold(0.0, f64::max);
            out[p * rows + r].1 += 2.0 * largest_flip / rel;
        }
    }
    out
}

/// Checks `got` against `want` element-wise: `|got - value| <= rel * scale + 1e-6`; NaN (an
/// element never written over the poison) always fails. Prints the first mismatches.
pub fn check(label: &str, got: &[f32], want: &[(f64, f64)], rel: f64, cols: usize) {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let mut bad = Vec::new();
    let mut worst = 0f64;
    for (i, (&g, &(v, scale))) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - v).abs();
        let bound = rel * scale + 1e-6;
        if g.is_nan() || err > bound {
            bad.push((i / cols, i % cols, g, v, bound));
        } else {
            worst = worst.max(err / bound);
        }
    }
    if !bad.is_empty() {
        for (row, col, g, v, bound) in bad.iter().take(8) {
            eprintln!("{label}: [{row}][{col}] got {g}, want {v:.6} (bound {bound:.3e})");
        }
        panic!("{label}: {} of {} elements wrong", bad.len(), got.len());
    }
    assert!(worst <= 1.0);
}

/// Ids `(T, K)`: expert 0 takes exactly `load` tokens (the first `load`, slot 0), every other
/// slot a random expert of `1..busy` distinct within its token; experts `busy..E` stay empty.
pub fn ids_with_load(
    rng: &mut StdRng,
    n_tokens: usize,
    k: usize,
    busy: usize,
    load: usize,
) -> Vec<u32> {
    let mut ids = Vec::with_capacity(n_tokens * k);
    for t in 0..n_tokens {
        let mut row: Vec<u32> = Vec::with_capacity(k);
        if t < load {
            row.push(0);
        }
        while row.len() < k {
            let e = rng.random_range(1..busy as u32);
            if !row.contains(&e) {
                row.push(e);
            }
        }
        ids.extend(row);
    }
    ids
}

/// Random top-K ids `(T, K)`: K distinct experts of E per token.
pub fn random_ids(rng: &mut StdRng, n_tokens: usize, k: usize, n_experts: usize) -> Vec<u32> {
    let mut ids = Vec::with_capacity(n_tokens * k);
    for _ in 0..n_tokens {
        let mut row: Vec<u32> = Vec::with_capacity(k);
        while row.len() < k {
            let e = rng.random_range(0..n_experts as u32);
            if !row.contains(&e) {
                row.push(e);
            }
        }
        ids.extend(row);
    }
    ids
}

/// The tests' tiny model (`moetile_tests::tiny_model(seed)`, 2 layers, Q8_0) on a backend that
/// takes the mat-vec path for batches of up to 32 tokens, as GPUs do for decode (CPU adapters
/// never take it by default).
pub fn mat_vec_model(ctx: &Arc<WgpuContext>, seed: u64) -> (WgpuBackend, Model<WgpuBackend>) {
    let file = GgufFile::from_bytes(moetile_tests::tiny_model(seed)).unwrap();
    let options = BackendOptions {
        mat_vec_max_tokens: 32,
        ..BackendOptions::for_device(ctx)
    };
    let mut gpu = WgpuBackend::with_options(ctx.clone(), options).unwrap();
    let model = Model::load(&file, &mut gpu, &mut |_| {}).unwrap();
    (gpu, model)
}

/// A session of 64 positions that has prefilled `prompt`.
pub fn prefilled_session(
    model: &Model<WgpuBackend>,
    gpu: &mut WgpuBackend,
    prompt: &[u32],
) -> Session<WgpuBackend> {
    let config = RuntimeConfig {
        ctx: Some(64),
        ..RuntimeConfig::default()
    };
    let mut session = Session::new(model, gpu, &config).unwrap();
    session.prefill(model, gpu, prompt, Logits::Last).unwrap();
    session
}
