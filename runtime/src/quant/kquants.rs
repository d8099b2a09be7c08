//! The K-quants Q2_K..Q6_K: 256-value super-blocks of 16- or 32-value sub-blocks, each with its
//! own quantized scale (and min), under an f16 super-block scale (ggml-common.h `block_q*_K`).
//!
//! Dequantization writes value `i` from a closed-form position instead of ggml's pointer walks;
//! the arithmetic per value is ggml's, in its order, so results are bit-identical. The quantizers
//! are ggml's reference ones (`quantize_row_q*_K_ref`: no importance matrix), which is what
//! `llama-quantize` runs when given no imatrix.

use bytemuck::{Pod, Zeroable};

use crate::quant::block::{Block, F16Le, QK_K, Quantize};
use crate::quant::fit::{GROUP_MAX_EPS, Qkx2, make_qx_quants, nearest_int};

/// Q2_K: 16 sub-blocks of 16; value `d * sc * q - dmin * m` with 4-bit `sc`, `m` and 2-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ2K {
    /// Per sub-block: scale in the low nibble, min in the high nibble.
    pub scales: [u8; QK_K / 16],
    /// 2-bit codes: value `i` is bits `2 * (i % 128 / 32)` of `qs[32 * (i / 128) + i % 32]`.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the scales.
    pub d: F16Le,
    /// Super-block scale of the mins.
    pub dmin: F16Le,
}
const _: () = assert!(size_of::<BlockQ2K>() == 84);

/// Q3_K: 16 sub-blocks of 16; value `d * (sc - 32) * (q - 4 * !hbit)` with 6-bit `sc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ3K {
    /// High bits: value `i` uses bit `i / 32` of `hmask[i % 32]` (set means no `-4`).
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits, packed as in Q2_K.
    pub qs: [u8; QK_K / 4],
    /// 16 six-bit scales: low nibbles in bytes 0..8, top 2 bits in bytes 8..12.
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: F16Le,
}
const _: () = assert!(size_of::<BlockQ3K>() == 110);

/// Q4_K: 8 sub-blocks of 32; value `d * sc * q - dmin * m` with 6-bit `sc`, `m`, 4-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4K {
    /// Super-block scale of the scales.
    pub d: F16Le,
    /// Super-block scale of the mins.
    pub dmin: F16Le,
    /// 8 six-bit scales and 8 six-bit mins (`get_scale_min_k4` order).
    pub scales: [u8; 12],
    /// 4-bit codes: 64-value chunks of 32 bytes, low nibbles first.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ4K>() == 144);

/// Q5_K: Q4_K plus a fifth bit per value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5K {
    /// Super-block scale of the scales.
    pub d: F16Le,
    /// Super-block scale of the mins.
    pub dmin: F16Le,
    /// 8 six-bit scales and 8 six-bit mins (`get_scale_min_k4` order).
    pub scales: [u8; 12],
    /// Fifth bits: value `i` uses bit `i / 32` of `qh[i % 32]`.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, packed as in Q4_K.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ5K>() == 176);

/// Q6_K: 16 sub-blocks of 16; value `d * sc * (q - 32)` with i8 `sc` and 6-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ6K {
    /// Low 4 bits: per 128-value half, 64 bytes; value quadrant `k` uses byte `l + 32 * (k % 2)`,
    /// nibble `k / 2`.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits: per 128-value half, 32 bytes; quadrant `k` uses bits `2k..2k+2`.
    pub qh: [u8; QK_K / 4],
    /// Signed sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: F16Le,
}
const _: () = assert!(size_of::<BlockQ6K>() == 210);

/// The 2-bit code of value `i` in the Q2_K / Q3_K `qs` layout.
fn two_bit_code(qs: &[u8; QK_K / 4], i: usize) -> u8 {
    (qs[32 * (i / 128) + i % 32] >> (2 * (i % 128 / 32))) & 3
}

/// The 4-bit code of value `i` in the Q4_K / Q5_K `qs` layout.
fn four_bit_code(qs: &[u8; QK_K / 2], i: usize) -> u8 {
    let byte = qs[32 * (i / 64) + i % 32];
    if i % 64 < 32 { byte & 0xf } else { byte >> 4 }
}

/// Scale and min of sub-block `j` of a Q4_K / Q5_K block (`get_scale_min_k4` in ggml-quants.c).
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs 6-bit scales and mins in the order `scale_min_k4` reads them.
fn pack_scale_min_k4(scales: &[u8; 8], mins: &[u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..8 {
        let (ls, lm) = (scales[j], mins[j]);
        if j < 4 {
            q[j] = ls;
            q[j + 4] = lm;
        } else {
            q[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            q[j - 4] |= (ls >> 4) << 6;
            q[j] |= (lm >> 4) << 6;
        }
    }
    q
}

/// The `N`-value sub-blocks of the super-block `x`, each with its codes.
fn sub_blocks<'a, const N: usize>(
    x: &'a [f32],
    codes: &'a mut [u8; QK_K],
) -> impl Iterator<Item = (&'a [f32; N], &'a mut [u8; N])> {
    x.as_chunks::<N>()
        .0
        .iter()
        .zip(codes.as_chunks_mut::<N>().0)
}

impl Block for BlockQ2K {
    const VALUES: usize = QK_K;

    /// Mirrors `dequantize_row_q2_K` in ggml-quants.c.
    fn dequantize(&self, out: &mut [f32]) {
        let (d, min) = (self.d.to_f32(), self.dmin.to_f32());
        for (i, o) in out.iter_mut().enumerate() {
            let sc = self.scales[i / 16];
            let (dl, ml) = (d * f32::from(sc & 0xf), min * f32::from(sc >> 4));
            *o = dl * f32::from(two_bit_code(&self.qs, i)) - ml;
        }
    }
}

impl Block for BlockQ3K {
    const VALUES: usize = QK_K;

    /// Mirrors `dequantize_row_q3_K` in ggml-quants.c (its `kmask1`/`kmask2` scale unpacking
    /// written per scale).
    fn dequantize(&self, out: &mut [f32]) {
        let d_all = self.d.to_f32();
        for (i, o) in out.iter_mut().enumerate() {
            let j = i / 16;
            let low = if j < 8 {
                self.scales[j] & 0xf
            } else {
                self.scales[j - 8] >> 4
            };
            let high = (self.scales[8 + j % 4] >> (2 * (j / 4))) & 3;
            let dl = d_all * (i32::from(low | (high << 4)) - 32) as f32;
            let hbit = (self.hmask[i % 32] >> (i / 32)) & 1;
            let q = i32::from(two_bit_code(&self.qs, i)) - if hbit == 1 { 0 } else { 4 };
            *o = dl * q as f32;
        }
    }
}

/// Value `i` of a Q4_K / Q5_K block: `d * sc * q - dmin * m` with the 6-bit scale and min of
/// its sub-block and `q` the 4-bit code plus `high(i)` (Q5_K's fifth bit, as 16 or 0).
fn dequantize_scale_min_k4(
    d: F16Le,
    dmin: F16Le,
    scales: &[u8; 12],
    qs: &[u8; QK_K / 2],
    high: impl Fn(usize) -> u8,
    out: &mut [f32],
) {
    let (d, min) = (d.to_f32(), dmin.to_f32());
    for (j, sub_block) in out.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(j, scales);
        let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
        for (l, o) in sub_block.iter_mut().enumerate() {
            let i = 32 * j + l;
            *o = d1 * f32::from(four_bit_code(qs, i) + high(i)) - m1;
        }
    }
}

impl Block for BlockQ4K {
    const VALUES: usize = QK_K;

    /// Mirrors `dequantize_row_q4_K` in ggml-quants.c.
    fn dequantize(&self, out: &mut [f32]) {
        dequantize_scale_min_k4(self.d, self.dmin, &self.scales, &self.qs, |_| 0, out);
    }
}

impl Block for BlockQ5K {
    const VALUES: usize = QK_K;

    /// Mirrors `dequantize_row_q5_K` in ggml-quants.c.
    fn dequantize(&self, out: &mut [f32]) {
        let high = |i| ((self.qh[i % 32] >> (i / 32)) & 1) << 4;
        dequantize_scale_min_k4(self.d, self.dmin, &self.scales, &self.qs, high, out);
    }
}

impl Block for BlockQ6K {
    const VALUES: usize = QK_K;

    /// Mirrors `dequantize_row_q6_K` in ggml-quants.c.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (i, o) in out.iter_mut().enumerate() {
            let (half, quadrant, l) = (i / 128, i % 128 / 32, i % 32);
            let low = self.ql[64 * half + l + 32 * (quadrant % 2)] >> (4 * (quadrant / 2)) & 0xf;
            let high = (self.qh[32 * half + l] >> (2 * quadrant)) & 3;
            let q = i32::from(low | (high << 4)) - 32;
            *o = d * f32::from(self.scales[i / 16]) * q as f32;
        }
    }
}

impl Quantize for BlockQ2K {
    /// Mirrors `quantize_row_q2_K_ref` in ggml-quants.c.
    fn quantize(x: &[f32]) -> Self {
        const Q4SCALE: f32 = 15.0;
        const FIT: Qkx2 = Qkx2 {
            nmax: 3,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: true,
        };
        let mut codes = [0u8; QK_K];
        let (mut scales, mut mins) = ([0f32; QK_K / 16], [0f32; QK_K / 16]);
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for (j, (xs, codes)) in sub_blocks::<16>(x, &mut codes).enumerate() {
            (scales[j], mins[j]) = FIT.fit(xs, &xs.map(f32::abs), codes);
            max_scale = max_scale.max(scales[j]);
            max_min = max_min.max(mins[j]);
        }
        let mut packed = [0u8; QK_K / 16];
        let mut d = F16Le::from_f32(0.0);
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for (p, &s) in packed.iter_mut().zip(&scales) {
                *p = nearest_int(iscale * s) as u8;
            }
            d = F16Le::from_f32(max_scale / Q4SCALE);
        }
        let mut dmin = F16Le::from_f32(0.0);
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for (p, &m) in packed.iter_mut().zip(&mins) {
                *p |= (nearest_int(iscale * m) << 4) as u8;
            }
            dmin = F16Le::from_f32(max_min / Q4SCALE);
        }
        for (&sc, (xs, codes)) in packed.iter().zip(sub_blocks::<16>(x, &mut codes)) {
            let dl = d.to_f32() * f32::from(sc & 0xf);
            if dl == 0.0 {
                continue;
            }
            let ml = dmin.to_f32() * f32::from(sc >> 4);
            for (c, &v) in codes.iter_mut().zip(xs) {
                *c = nearest_int((v + ml) / dl).clamp(0, 3) as u8;
            }
        }
        let mut qs = [0u8; QK_K / 4];
        for (b, q) in qs.iter_mut().enumerate() {
            let base = 128 * (b / 32) + b % 32;
            *q = (0..4).fold(0, |acc, k| acc | (codes[base + 32 * k] << (2 * k)));
        }
        Self {
            scales: packed,
            qs,
            d,
            dmin,
        }
    }
}

/// The part `quantize_row_q4_K_ref` and `quantize_row_q5_K_ref` share: fit each 32-value
/// sub-block with `make_qkx2_quants`, quantize the scales and mins to 6 bits, then recompute
/// the codes (in `0..=nmax`) against the quantized scales.
struct SubBlockFit {
    d: F16Le,
    dmin: F16Le,
    scales: [u8; 12],
    codes: [u8; QK_K],
}

impl SubBlockFit {
    fn new(x: &[f32], fit: &Qkx2) -> Self {
        let nmax = fit.nmax;
        let mut codes = [0u8; QK_K];
        let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for (j, (xs, codes)) in sub_blocks::<32>(x, &mut codes).enumerate() {
            let sum_x2 = xs.iter().fold(0.0f32, |s, &v| s + v * v);
            let av_x = (sum_x2 / 32.0).sqrt();
            (scales[j], mins[j]) = fit.fit(xs, &xs.map(|v| av_x + v.abs()), codes);
            max_scale = max_scale.max(scales[j]);
            max_min = max_min.max(mins[j]);
        }
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let ls = scales.map(|s| (nearest_int(inv_scale * s) as u8).min(63));
        let lm = mins.map(|m| (nearest_int(inv_min * m) as u8).min(63));
        let packed = pack_scale_min_k4(&ls, &lm);
        let d = F16Le::from_f32(max_scale / 63.0);
        let dmin = F16Le::from_f32(max_min / 63.0);
        for j in 0..QK_K / 32 {
            let (sc, m) = scale_min_k4(j, &packed);
            let dl = d.to_f32() * f32::from(sc);
            if dl == 0.0 {
                continue;
            }
            let dm = dmin.to_f32() * f32::from(m);
            for i in 32 * j..32 * j + 32 {
                codes[i] = nearest_int((x[i] + dm) / dl).clamp(0, nmax) as u8;
            }
        }
        Self {
            d,
            dmin,
            scales: packed,
            codes,
        }
    }

    /// The low 4 bits of the codes in the Q4_K / Q5_K `qs` layout (all of a Q4_K code).
    fn low_nibbles(&self) -> [u8; QK_K / 2] {
        let mut qs = [0u8; QK_K / 2];
        for (b, q) in qs.iter_mut().enumerate() {
            let base = 64 * (b / 32) + b % 32;
            *q = (self.codes[base] & 0xf) | ((self.codes[base + 32] & 0xf) << 4);
        }
        qs
    }
}

impl Quantize for BlockQ4K {
    /// Mirrors `quantize_row_q4_K_ref` in ggml-quants.c.
    fn quantize(x: &[f32]) -> Self {
        let fit = SubBlockFit::new(
            x,
            &Qkx2 {
                nmax: 15,
                rmin: -1.0,
                rdelta: 0.1,
                nstep: 20,
                use_mad: false,
            },
        );
        Self {
            d: fit.d,
            dmin: fit.dmin,
            scales: fit.scales,
            qs: fit.low_nibbles(),
        }
    }
}

impl Quantize for BlockQ5K {
    /// Mirrors `quantize_row_q5_K_ref` in ggml-quants.c.
    fn quantize(x: &[f32]) -> Self {
        let fit = SubBlockFit::new(
            x,
            &Qkx2 {
                nmax: 31,
                rmin: -0.5,
                rdelta: 0.1,
                nstep: 15,
                use_mad: false,
            },
        );
        let mut qh = [0u8; QK_K / 8];
        for (i, &c) in fit.codes.iter().enumerate() {
            qh[i % 32] |= (c >> 4) << (i / 32);
        }
        Self {
            d: fit.d,
            dmin: fit.dmin,
            scales: fit.scales,
            qh,
            qs: fit.low_nibbles(),
        }
    }
}

impl Quantize for BlockQ6K {
    /// Mirrors `quantize_row_q6_K_ref` in ggml-quants.c.
    fn quantize(x: &[f32]) -> Self {
        let mut codes = [0u8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for (scale, (xs, codes)) in scales.iter_mut().zip(sub_blocks::<16>(x, &mut codes)) {
            *scale = make_qx_quants(32, xs, codes);
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = *scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            return Self::zeroed();
        }
        let iscale = -128.0 / max_scale;
        let d = F16Le::from_f32(1.0 / iscale);
        let packed = scales.map(|s| nearest_int(iscale * s).min(127) as i8);
        for (&sc, (xs, codes)) in packed.iter().zip(sub_blocks::<16>(x, &mut codes)) {
            let dl = d.to_f32() * f32::from(sc);
            if dl == 0.0 {
                continue;
            }
            for (c, &v) in codes.iter_mut().zip(xs) {
                *c = (nearest_int(v / dl).clamp(-32, 31) + 32) as u8;
            }
        }
        let (mut ql, mut qh) = ([0u8; QK_K / 2], [0u8; QK_K / 4]);
        for (i, &c) in codes.iter().enumerate() {
            let (half, quadrant, l) = (i / 128, i % 128 / 32, i % 32);
            ql[64 * half + l + 32 * (quadrant % 2)] |= (c & 0xf) << (4 * (quadrant / 2));
            qh[32 * half + l] |= (c >> 4) << (2 * quadrant);
        }
        Self {
            ql,
            qh,
            scales: packed,
            d,
        }
    }
}
