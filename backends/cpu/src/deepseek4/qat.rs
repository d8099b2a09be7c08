//! The low precision DeepSeek V4 was trained with, simulated as the original engine does
//! (antirez/ds4, `ds4.c`): values keep their f64 storage but are rounded to what FP8 or FP4
//! with a power-of-two block scale can hold. llama.cpp does not simulate it; the reference does
//! by default ([`Deepseek4Options::qat_sim`](super::Deepseek4Options::qat_sim)).
//!
//! Where the engine rounds (its CPU path; the Metal kernels `kernel_dsv4_fp8_kv_quantize_f32`
//! and `kernel_dsv4_indexer_hadamard_fp4_f32` in `metal/dsv4_kv.metal` do the same):
//! - **Attention keys, FP8 E4M3** (`dsv4_fp8_kv_quantize_row_inplace_cpu`): the non-RoPE dims
//!   (the first `head_dim - n_rot`) of every key after its RoPE, in blocks of 64, both the raw
//!   window's keys (`layer_attention_raw_swa_one`, before `kv_cache_push_raw`: a query sees its
//!   own key rounded) and the compressed rows of both ratios (`compressor_decode_one`, after the
//!   norm and RoPE). The rotated dims stay exact. Queries are never rounded.
//! - **Indexer, Hadamard then FP4 E2M1** (`dsv4_indexer_qat_row_inplace_cpu`): each indexer
//!   query head after its RoPE (`indexer_allowed_decode_one`) and each indexer compressed key
//!   (`compressor_decode_one`), rotated by the normalised Hadamard transform over the whole
//!   head, then rounded in blocks of 32. The rotation alone moves no score (it is orthogonal);
//!   it spreads outliers over the block before the coarse rounding.
//!
//! The engine's Metal graph also keeps its raw window in F16 (`kernel_dsv4_kv_fp8_store_f32`)
//! where its CPU path keeps f32: a storage choice, like llama.cpp's F16 caches, left out.
//!
//! Both block roundings take `scale = 2^ceil(log2(amax / max))` (FP8: max 448, amax floored
//! at 1e-4; FP4: max 6, amax floored at 6 · 2^-126), divide, clamp to `±max`, round to the
//! nearest value of the format (ties to the even code) and multiply back. The engine computes
//! in f32 with `log2f`; here the power of two is the exact smallest one with
//! `amax <= max · scale`, and the input is the f64 value itself, so the two agree except where
//! `amax / max` lies within an f32 rounding of a power of two or an f32 rounding of the input
//! crosses a tie (the engine's f32 product of `x / scale` is exact: the scale is a power of 2).
//!
//! The engine's formats are fixed by Flash's dimensions (448 non-RoPE dims = 7 blocks of 64;
//! indexer heads of 128, which it refuses to differ from). For other dimensions the reference
//! generalises: the last FP8 block of a row may be shorter (the tiny fixture: one block of 16),
//! and the Hadamard transform has the head's size, which must be a power of two of at least 32
//! (checked at load; llama.cpp also requires 64 · 2^k indexer heads).

/// Largest finite FP8 E4M3 ("fn": no infinities, only 0x7f/0xff are NaN) magnitude.
pub const E4M3_MAX: f64 = 448.0;
/// Largest FP4 E2M1 magnitude.
pub const E2M1_MAX: f64 = 6.0;
/// Values sharing one FP8 scale.
pub const FP8_BLOCK: usize = 64;
/// Values sharing one FP4 scale.
pub const FP4_BLOCK: usize = 32;

/// `2^e`, exactly (f64 holds every power of two used here as a normal number).
fn pow2(e: i32) -> f64 {
    2f64.powi(e)
}

/// The binary exponent of a positive normal f64: `floor(log2(a))`, exactly.
fn exponent(a: f64) -> i32 {
    ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023
}

/// Rounds `|x|` clamped to `max` to a multiple of the format's step at its exponent, ties to
/// even (the step's multiple is even exactly when the code's last mantissa bit is 0), with the
/// sign put back. `mantissa_bits` and `min_normal_exp` define the format.
fn round_minifloat(x: f64, max: f64, mantissa_bits: i32, min_normal_exp: i32) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs().min(max);
    let e = if a == 0.0 {
        min_normal_exp
    } else {
        exponent(a).max(min_normal_exp)
    };
    let step = pow2(e - mantissa_bits);
    ((a / step).round_ties_even() * step).copysign(x)
}

/// `x` rounded to FP8 E4M3 (exponent bias 7, 3 mantissa bits, subnormal step 2^-9), nearest
/// with ties to even, magnitudes above 448 saturated to 448: the value of
/// `dsv4_e4m3fn_dequant_cpu` in `ds4.c`.
pub fn round_e4m3(x: f64) -> f64 {
    round_minifloat(x, E4M3_MAX, 3, -6)
}

/// `x` rounded to FP4 E2M1 (values 0, 0.5, 1, 1.5, 2, 3, 4, 6), nearest with ties to even,
/// saturated at 6: the value of `dsv4_e2m1fn_dequant_cpu` in `ds4.c`.
pub fn round_e2m1(x: f64) -> f64 {
    round_minifloat(x, E2M1_MAX, 1, 0)
}

/// Rounds each block of `block` values of `x` (the last may be shorter) through `round`, a
/// format of largest value `max`, under its own scale: the smallest power of two with
/// `max(amax, floor) <= max · scale`.
fn round_blocks(x: &mut [f64], block: usize, max: f64, floor: f64, round: fn(f64) -> f64) {
    for b in x.chunks_mut(block) {
        let amax = b.iter().fold(floor, |m, v| m.max(v.abs()));
        let mut e = (amax / max).log2().ceil() as i32;
        // log2 may be off by an ulp next to a power of two: settle e exactly.
        while max * pow2(e) < amax {
            e += 1;
        }
        while max * pow2(e - 1) >= amax {
            e -= 1;
        }
        let scale = pow2(e);
        for v in b {
            *v = round((*v / scale).clamp(-max, max)) * scale;
        }
    }
}

/// `x` through FP8 E4M3 in blocks of 64 with a power-of-two scale each (amax floored at
/// 1e-4): `dsv4_fp8_kv_quantize_row_inplace_cpu`'s loop body, on the slice it is given.
pub fn round_fp8_blocks(x: &mut [f64]) {
    round_blocks(x, FP8_BLOCK, E4M3_MAX, 1e-4, round_e4m3);
}

/// `x` through FP4 E2M1 in blocks of 32 with a power-of-two scale each (amax floored at
/// 6 · 2^-126): `dsv4_fp4_act_quantize_row_inplace_cpu`.
pub fn round_fp4_blocks(x: &mut [f64]) {
    round_blocks(x, FP4_BLOCK, E2M1_MAX, E2M1_MAX * pow2(-126), round_e2m1);
}

/// `x <- H x / sqrt(n)`, H the Sylvester Hadamard matrix of order n = `x.len()` (a power of
/// two; `H[i][j] = (-1)^popcount(i & j)`): the butterfly of `dsv4_hadamard128_inplace_cpu`
/// for any n. Orthogonal and its own inverse.
pub fn hadamard(x: &mut [f64]) {
    let n = x.len();
    assert!(n.is_power_of_two(), "Hadamard transform of {n} values");
    let mut stride = 1;
    while stride < n {
        for base in (0..n).step_by(2 * stride) {
            for i in base..base + stride {
                let (a, b) = (x[i], x[i + stride]);
                x[i] = a + b;
                x[i + stride] = a - b;
            }
        }
        stride *= 2;
    }
    let norm = 1.0 / (n as f64).sqrt();
    x.iter_mut().for_each(|v| *v *= norm);
}

/// What the simulation does to one kind of row before it is stored or scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rounding {
    /// Nothing: the simulation is off.
    Exact,
    /// An attention key: its first `len - n_rot` dims through [`round_fp8_blocks`].
    KeyFp8 {
        /// The rotated tail, kept exact.
        n_rot: usize,
    },
    /// An indexer head (query or key): [`hadamard`] then [`round_fp4_blocks`].
    IndexerFp4,
}

impl Rounding {
    /// The rounding of attention keys and of indexer heads under `qat_sim`.
    pub(crate) fn pair(qat_sim: bool, n_rot: usize) -> (Rounding, Rounding) {
        if qat_sim {
            (Rounding::KeyFp8 { n_rot }, Rounding::IndexerFp4)
        } else {
            (Rounding::Exact, Rounding::Exact)
        }
    }

    /// Rounds `row` (one key, or one indexer head) in place.
    pub(crate) fn apply(self, row: &mut [f64]) {
        match self {
            Rounding::Exact => {}
            Rounding::KeyFp8 { n_rot } => {
                let n_nope = row.len() - n_rot;
                round_fp8_blocks(&mut row[..n_nope]);
            }
            Rounding::IndexerFp4 => {
                hadamard(row);
                round_fp4_blocks(row);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values worked out by hand from the format (E4M3: `(1 + m/8) · 2^(e-7)`, subnormals
    /// `m · 2^-9`; even codes have an even mantissa): nearest value, ties to the even code.
    #[test]
    fn e4m3_rounds_to_nearest_even_saturates_and_keeps_subnormals() {
        let p = |e: i32| 2f64.powi(e);
        let cases = [
            (0.0, 0.0),
            (1.0, 1.0),
            (1.07, 1.125),    // 0.055 from 1.125, 0.07 from 1
            (1.0625, 1.0),    // tie 1 (m0) / 1.125 (m1)
            (1.1875, 1.25),   // tie 1.125 (m1) / 1.25 (m2)
            (-1.1875, -1.25), // the sign is kept
            (0.3, 0.3125),    // step 2^-5 in [0.25, 0.5): 9.6 steps -> 10
            (232.0, 224.0),   // tie 224 (m6) / 240 (m7)
            (248.0, 256.0),   // tie 240 (m7) / 256 (m0 of the next exponent)
            (432.0, 448.0),   // tie 416 (m5) / 448 (m6)
            (448.0, 448.0),   // the largest value
            (460.0, 448.0),   // saturated, not NaN
            (1e9, 448.0),
            (-1e9, -448.0),
            (f64::INFINITY, 448.0),
            (p(-6), p(-6)),             // the smallest normal
            (p(-6) + p(-10), p(-6)),    // tie 2^-6 (m0) / 2^-6 + 2^-9 (m1)
            (15.0 * p(-10), p(-6)),     // tie 7 · 2^-9 (largest subnormal, m7) / 2^-6
            (7.0 * p(-9), 7.0 * p(-9)), // the largest subnormal
            (3.0 * p(-10), p(-8)),      // tie 2^-9 (m1) / 2^-8 (m2)
            (p(-9), p(-9)),             // the smallest subnormal
            (p(-10), 0.0),              // tie 0 / 2^-9: to zero
            (1.5 * p(-10), p(-9)),
            (-p(-11), 0.0),
        ];
        for (x, want) in cases {
            assert_eq!(round_e4m3(x), want, "{x:e}");
        }
    }

    /// E2M1 holds 0, 0.5, 1, 1.5 (codes 0-3), 2, 3, 4, 6 (codes 4-7).
    #[test]
    fn e2m1_rounds_to_nearest_even_and_saturates() {
        let cases = [
            (0.0, 0.0),
            (0.2, 0.0),
            (0.25, 0.0), // tie 0 / 0.5
            (0.3, 0.5),
            (0.75, 1.0), // tie 0.5 (code 1) / 1 (code 2)
            (1.25, 1.0), // tie 1 (code 2) / 1.5 (code 3)
            (1.75, 2.0),
            (2.5, 2.0),
            (-2.6, -3.0),
            (3.5, 4.0), // tie 3 (code 5) / 4 (code 6)
            (5.0, 4.0), // tie 4 (code 6) / 6 (code 7)
            (5.5, 6.0),
            (7.0, 6.0),
            (-100.0, -6.0),
        ];
        for (x, want) in cases {
            assert_eq!(round_e2m1(x), want, "{x}");
        }
    }

    #[test]
    fn fp8_blocks_scale_each_block_by_a_power_of_two() {
        // amax 1.75 = 448 · 2^-8 exactly: scale 2^-8 (the boundary belongs to the smaller
        // scale); 0.3 -> 76.8 · 2^-8 -> 80 · 2^-8.
        let mut x = vec![0.0; 70];
        x[0] = 1.75;
        x[1] = 0.3;
        x[2] = -1.0;
        // The second block (6 values) has its own scale: amax 1e-6 is below the 1e-4 floor,
        // so its scale is 2^-22 (1e-4 / 448 = 2^-22.1) and 1e-6 = 4.19 · 2^-22 -> 4 · 2^-22.
        x[64] = 1e-6;
        round_fp8_blocks(&mut x);
        assert_eq!(&x[..3], &[1.75, 80.0 / 256.0, -1.0]);
        assert_eq!(x[64], 4.0 * 2f64.powi(-22));
        assert!(x[3..64].iter().chain(&x[65..]).all(|&v| v == 0.0));
        // Just above 1.75 the scale doubles: 1.7500001 / 2^-7 = 224.0000128 -> 224.
        let mut y = [1.750_000_1, 0.3];
        round_fp8_blocks(&mut y);
        assert_eq!(y, [1.75, 80.0 / 256.0]);
    }

    #[test]
    fn fp4_blocks_scale_each_block_by_a_power_of_two() {
        // amax 3: scale 2^ceil(log2 0.5) = 0.5; 1.3 / 0.5 = 2.6 -> 3 -> 1.5.
        // amax 7 (second block): scale 2; 7 / 2 = 3.5 -> 4 (tie to the even code) -> 8.
        let mut x = vec![0.0; 64];
        x[0] = 3.0;
        x[1] = 1.3;
        x[2] = -0.2; // 0.4 -> 0.5 -> 0.25
        x[32] = 7.0;
        x[33] = 1.0; // 0.5 -> 0.5 -> 1
        round_fp4_blocks(&mut x);
        assert_eq!(&x[..3], &[3.0, 1.5, -0.25]);
        assert_eq!(&x[32..34], &[8.0, 1.0]);
    }

    #[test]
    fn key_rounding_leaves_the_rotated_tail_exact() {
        let row: Vec<f64> = (0..32).map(|i| 0.1 * i as f64 + 0.01).collect();
        let mut got = row.clone();
        Rounding::KeyFp8 { n_rot: 16 }.apply(&mut got);
        assert_eq!(got[16..], row[16..]);
        let mut head = row[..16].to_vec();
        round_fp8_blocks(&mut head);
        assert_eq!(got[..16], head[..]);
        assert_ne!(head[..], row[..16]);
        let mut exact = row.clone();
        Rounding::Exact.apply(&mut exact);
        assert_eq!(exact, row);
    }

    #[test]
    fn hadamard_is_sylvester_order_and_orthogonal() {
        // H4 = [[1,1,1,1],[1,-1,1,-1],[1,1,-1,-1],[1,-1,-1,1]] / 2.
        let mut x = [1.0, 2.0, 3.0, 4.0];
        hadamard(&mut x);
        assert_eq!(x, [5.0, -1.0, -2.0, 0.0]);
        for n in [64, 128] {
            let columns: Vec<Vec<f64>> = (0..n)
                .map(|j| {
                    let mut e = vec![0.0; n];
                    e[j] = 1.0;
                    hadamard(&mut e);
                    e
                })
                .collect();
            let norm = 1.0 / (n as f64).sqrt();
            for (j, c) in columns.iter().enumerate() {
                for (i, &v) in c.iter().enumerate() {
                    let sign = if (i & j).count_ones() % 2 == 0 {
                        1.0
                    } else {
                        -1.0
                    };
                    assert_eq!(v, sign * norm, "H{n}[{i}][{j}]");
                }
                // Orthonormal columns: n products of ±1/n, exact up to the rounding of
                // 1/sqrt(n)² (n = 128: 1e-16 per term).
                for (k, d) in columns.iter().enumerate() {
                    let dot: f64 = c.iter().zip(d).map(|(a, b)| a * b).sum();
                    let want = if j == k { 1.0 } else { 0.0 };
                    assert!(
                        (dot - want).abs() < 1e-14,
                        "n {n}: column {j} · {k} = {dot}"
                    );
                }
            }
            // Its own inverse, to the same rounding.
            let v: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let mut w = v.clone();
            hadamard(&mut w);
            hadamard(&mut w);
            assert!(v.iter().zip(&w).all(|(a, b)| (a - b).abs() < 1e-14));
        }
    }

    #[test]
    fn indexer_rounding_rotates_then_rounds() {
        let head: Vec<f64> = (0..64).map(|i| (i as f64 * 0.7).cos()).collect();
        let mut want = head.clone();
        hadamard(&mut want);
        round_fp4_blocks(&mut want);
        let mut got = head;
        Rounding::IndexerFp4.apply(&mut got);
        assert_eq!(got, want);
    }
}
