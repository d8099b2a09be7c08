//! The IQ ("importance") formats moetile reads: IQ2_XXS and IQ2_XS (8-value groups picked from a
//! fixed grid, with sign masks) and IQ4_NL and IQ4_XS (4-bit codes into a non-linear codebook).
//! Layouts are ggml-common.h's `block_iq*`.
//!
//! IQ2 sign masks hold 7 bits: the eighth sign is implied by an even number of minus signs
//! (`KSIGNS_IQ2XS` restores it), so a quantizer must make every group's count of negatives even.

use std::sync::OnceLock;

use bytemuck::{Pod, Zeroable};

use crate::quant::block::{Block, F16Le, QK, QK_K, Quantize};
use crate::quant::fit::{GROUP_MAX_EPS, nearest_int};
use crate::quant::iq_tables::{IQ2XS_GRID, IQ2XXS_GRID};
use crate::quant::legacy::nibbles;

/// `ksigns_iq2xs` (ggml-common.h): a 7-bit sign index with bit 7 set when that makes the number
/// of set bits even.
pub const KSIGNS_IQ2XS: [u8; 128] = {
    let mut table = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        table[i] = i as u8 | (((i as u8).count_ones() as u8 & 1) << 7);
        i += 1;
    }
    table
};

/// `kmask_iq2xs` (ggml-common.h): bit `j` of a sign mask negates value `j` of its group.
pub const KMASK_IQ2XS: [u8; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// `kvalues_iq4nl` (ggml-common.h): the IQ4_NL / IQ4_XS codebook.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// IQ2_XXS (2.06 bits per value): 8 sub-blocks of 32 = 4 groups of 8.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIq2Xxs {
    /// Super-block scale.
    pub d: F16Le,
    /// Per sub-block, 8 bytes: four `IQ2XXS_GRID` indices, then a little-endian u32 holding
    /// four 7-bit sign indices (bits `7k..7k+7` for group `k`) and a 4-bit scale (bits 28..32).
    pub qs: [u8; QK_K / 4],
}
const _: () = assert!(size_of::<BlockIq2Xxs>() == 66);

/// IQ2_XS (2.31 bits per value): 16 groups of 16 with a 4-bit scale each.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIq2Xs {
    /// Super-block scale.
    pub d: F16Le,
    /// Per 8 values, a little-endian u16: `IQ2XS_GRID` index (low 9 bits), sign index (high 7).
    pub qs: [[u8; 2]; QK_K / 8],
    /// 4-bit scales, two per byte (low nibble first), one per 16 values.
    pub scales: [u8; QK_K / 32],
}
const _: () = assert!(size_of::<BlockIq2Xs>() == 74);

/// IQ4_NL: `d * KVALUES_IQ4NL[q]`, nibbles packed as in Q4_0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIq4Nl {
    /// Scale.
    pub d: F16Le,
    /// 4-bit codebook indices, two per byte.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockIq4Nl>() == 18);

/// IQ4_XS: 8 sub-blocks of 32 with 6-bit scales; `d * (ls - 32) * KVALUES_IQ4NL[q]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIq4Xs {
    /// Super-block scale.
    pub d: F16Le,
    /// Top 2 bits of the 8 sub-block scales, bits `2j..2j+2` of this little-endian u16.
    pub scales_h: [u8; 2],
    /// Low 4 bits of the sub-block scales, two per byte (low nibble first).
    pub scales_l: [u8; QK_K / 64],
    /// Per sub-block, 16 bytes of codebook indices packed as in IQ4_NL.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockIq4Xs>() == 136);

/// The IQ2 scale of a group from the super-block scale and a 4-bit code: `d * (0.5 + ls) / 4`.
fn iq2_scale(d: f32, ls: u32) -> f32 {
    d * (0.5 + ls as f32) * 0.25
}

/// Writes 8 values `db * grid byte * sign`, as ggml's IQ2 loops do.
fn iq2_group(out: &mut [f32], db: f32, grid: u64, sign_index: usize) {
    let signs = KSIGNS_IQ2XS[sign_index];
    for (j, o) in out.iter_mut().enumerate() {
        let magnitude = f32::from((grid >> (8 * j)) as u8);
        *o = db
            * magnitude
            * if signs & KMASK_IQ2XS[j] != 0 {
                -1.0
            } else {
                1.0
            };
    }
}

impl Block for BlockIq2Xxs {
    const VALUES: usize = QK_K;

    /// Mirrors `dequantize_row_iq2_xxs` in ggml-quants.c.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (sub, out) in self.qs.chunks_exact(8).zip(out.chunks_exact_mut(32)) {
            let aux = u32::from_le_bytes([sub[4], sub[5], sub[6], sub[7]]);
            let db = iq2_scale(d, aux >> 28);
            for (k, out) in out.chunks_exact_mut(8).enumerate() {
                let grid = IQ2XXS_GRID[usize::from(sub[k])];
                iq2_group(out, db, grid, (aux >> (7 * k)) as usize & 127);
            }
        }
    }
}

impl Block for BlockIq2Xs {
    const VALUES: usize = QK_K;

    /// Mirrors `dequantize_row_iq2_xs` in ggml-quants.c.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (g, out) in out.chunks_exact_mut(8).enumerate() {
            let ls = (self.scales[g / 4] >> (4 * (g / 2 % 2))) & 0xf;
            let q = u16::from_le_bytes(self.qs[g]);
            let grid = IQ2XS_GRID[usize::from(q & 511)];
            iq2_group(out, iq2_scale(d, u32::from(ls)), grid, usize::from(q >> 9));
        }
    }
}

impl Block for BlockIq4Nl {
    const VALUES: usize = QK;

    /// Mirrors `dequantize_row_iq4_nl` in ggml-quants.c.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, q) in out.iter_mut().zip(nibbles(&self.qs)) {
            *o = d * f32::from(KVALUES_IQ4NL[usize::from(q)]);
        }
    }
}

impl Block for BlockIq4Xs {
    const VALUES: usize = QK_K;

    /// Mirrors `dequantize_row_iq4_xs` in ggml-quants.c.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let scales_h = u16::from_le_bytes(self.scales_h);
        let (sub_blocks, _) = self.qs.as_chunks::<{ QK / 2 }>();
        for (ib, (out, qs)) in out.chunks_exact_mut(QK).zip(sub_blocks).enumerate() {
            let low = (self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf;
            let high = ((scales_h >> (2 * ib)) & 3) as u8;
            let dl = d * (i32::from(low | (high << 4)) - 32) as f32;
            for (o, q) in out.iter_mut().zip(nibbles(qs)) {
                *o = dl * f32::from(KVALUES_IQ4NL[usize::from(q)]);
            }
        }
    }
}

/// The magnitudes IQ2 grids are made of.
const IQ2_LEVELS: [f32; 3] = [8.0, 25.0, 43.0];

/// `amax / scale` ratios tried per sub-block: the largest magnitude lands on or past the top
/// level (43), where clipping a few outliers pays for finer steps everywhere else. Measured on
/// Gaussian data: 15 ratios from 32 to 60 gain 0.1% relative RMSE over these 3 at 2.5x the time.
const IQ2XXS_TRIALS: [f32; 3] = [38.0, 46.0, 54.0];

/// Nearest-grid lookup for IQ2_XXS: each value of a group is rounded to the nearest level on
/// its own, giving one of 3^8 level vectors; the grid points nearest that vector (all points
/// within its two smallest distinct distances, as ggml's `iq2xs_init_impl` keeps) are then
/// compared against the unrounded target. On Gaussian data this gives 33.3% relative RMSE where
/// trying all 256 points gives 32.8% at 15 times the cost.
struct Iq2xxsSearch {
    /// The grid points' magnitudes.
    points: [[f32; 8]; 256],
    /// Sum of squares of each grid point.
    norms: [f32; 256],
    /// Candidates for level vector `c` (base 3, value 0 least significant) are
    /// `candidates[starts[c]..starts[c + 1]]`; a vector on the grid has only itself.
    starts: Vec<u32>,
    candidates: Vec<u8>,
}

impl Iq2xxsSearch {
    fn get() -> &'static Self {
        static SEARCH: OnceLock<Iq2xxsSearch> = OnceLock::new();
        SEARCH.get_or_init(Self::build)
    }

    fn build() -> Self {
        let points: [[f32; 8]; 256] = std::array::from_fn(|g| {
            std::array::from_fn(|j| f32::from((IQ2XXS_GRID[g] >> (8 * j)) as u8))
        });
        let norms = points.map(|p| p.iter().map(|v| v * v).sum());
        let mut starts = Vec::with_capacity(6562);
        let mut candidates = Vec::new();
        let mut distances = Vec::with_capacity(256);
        for code in 0..6561u32 {
            starts.push(candidates.len() as u32);
            let target: [f32; 8] =
                std::array::from_fn(|j| IQ2_LEVELS[(code / 3u32.pow(j as u32) % 3) as usize]);
            distances.clear();
            distances.extend(points.iter().enumerate().map(|(g, p)| {
                let d2: f32 = p.iter().zip(&target).map(|(a, b)| (a - b) * (a - b)).sum();
                (d2, g as u8)
            }));
            distances.sort_by(|a, b| a.0.total_cmp(&b.0));
            let first = distances[0].0;
            if first == 0.0 {
                candidates.push(distances[0].1);
                continue;
            }
            let second = distances
                .iter()
                .map(|d| d.0)
                .find(|&d| d > first)
                .unwrap_or(first);
            candidates.extend(distances.iter().take_while(|d| d.0 <= second).map(|d| d.1));
        }
        starts.push(candidates.len() as u32);
        Self {
            points,
            norms,
            starts,
            candidates,
        }
    }

    /// The grid point nearest `scale * point ≈ target` among the rounded vector's candidates.
    fn nearest(&self, target: &[f32], scale: f32) -> u8 {
        let inv = 1.0 / scale;
        let mut code = 0;
        for &t in target.iter().rev() {
            let v = t * inv;
            code = 3 * code
                + if v < 16.5 {
                    0
                } else if v < 34.0 {
                    1
                } else {
                    2
                };
        }
        let candidates =
            &self.candidates[self.starts[code] as usize..self.starts[code + 1] as usize];
        if let [only] = candidates {
            return *only;
        }
        // |scale * p - t|² = scale² |p|² - 2 scale p·t + |t|²: compare scale |p|² - 2 p·t.
        let cost = |g: u8| {
            let p = &self.points[usize::from(g)];
            let dot: f32 = p.iter().zip(target).map(|(a, b)| a * b).sum();
            scale * self.norms[usize::from(g)] - 2.0 * dot
        };
        let mut best = (f32::INFINITY, 0);
        for &g in candidates {
            let c = cost(g);
            if c < best.0 {
                best = (c, g);
            }
        }
        best.1
    }

    /// Grid indices for the four groups of `target` at `scale`, with the least-squares scale
    /// for them and how much of `|target|²` that explains (higher is better).
    fn assign(&self, target: &[f32; 32], scale: f32) -> ([u8; 4], f32, f32) {
        let mut indices = [0u8; 4];
        let (mut sum_tg, mut sum_g2) = (0.0f32, 0.0f32);
        for (k, index) in indices.iter_mut().enumerate() {
            let group = &target[8 * k..8 * k + 8];
            *index = self.nearest(group, scale);
            let p = &self.points[usize::from(*index)];
            sum_tg += p.iter().zip(group).map(|(a, b)| a * b).sum::<f32>();
            sum_g2 += self.norms[usize::from(*index)];
        }
        if sum_tg <= 0.0 {
            return (indices, 0.0, 0.0);
        }
        (indices, sum_tg / sum_g2, sum_tg * sum_tg / sum_g2)
    }

    /// The best scale for a sub-block of targets: the best of `IQ2XXS_TRIALS`, refined once.
    fn fit(&self, target: &[f32; 32]) -> f32 {
        let amax = target.iter().fold(0.0f32, |m, &t| m.max(t));
        if amax < GROUP_MAX_EPS {
            return 0.0;
        }
        let mut best = (0.0, 0.0);
        for ratio in IQ2XXS_TRIALS {
            let (_, scale, explained) = self.assign(target, amax / ratio);
            if explained > best.1 {
                best = (scale, explained);
            }
        }
        if best.0 > 0.0 {
            let (_, scale, explained) = self.assign(target, best.0);
            if explained > best.1 {
                best = (scale, explained);
            }
        }
        best.0
    }
}

impl Quantize for BlockIq2Xxs {
    /// Our own quantizer, not ggml's (`quantize_row_iq2_xxs_impl` needs an importance matrix and
    /// is slow): plain least squares with a nearest-grid search. Per 8-value group the signs are
    /// taken from the values; if the count of negatives is odd, the sign of the smallest
    /// magnitude is flipped (its target magnitude becomes `-|x|`, as in ggml). Per 32-value
    /// sub-block the scale is the best of a few trial scales refined by least squares; the
    /// super-block scale maps the largest sub-block scale to code 15, and every group is
    /// searched again against its quantized scale.
    fn quantize(x: &[f32]) -> Self {
        let search = Iq2xxsSearch::get();
        let mut targets = [[0f32; 32]; QK_K / 32];
        let mut signs = [[0u8; 4]; QK_K / 32];
        for (i, (target, signs)) in targets.iter_mut().zip(&mut signs).enumerate() {
            for (k, sign) in signs.iter_mut().enumerate() {
                let xs = &x[32 * i + 8 * k..32 * i + 8 * k + 8];
                let t = &mut target[8 * k..8 * k + 8];
                let mut mask = 0u8;
                for (j, (&v, t)) in xs.iter().zip(t.iter_mut()).enumerate() {
                    *t = v.abs();
                    mask |= u8::from(v < 0.0) << j;
                }
                if mask.count_ones() % 2 == 1 {
                    let (smallest, _) =
                        t.iter().enumerate().fold((0, f32::INFINITY), |m, (j, &a)| {
                            if a < m.1 { (j, a) } else { m }
                        });
                    t[smallest] = -t[smallest];
                    mask ^= 1 << smallest;
                }
                *sign = mask & 127;
            }
        }
        let scales = targets.map(|t| search.fit(&t));
        let max_scale = scales.iter().fold(0.0f32, |m, &s| m.max(s));
        let d = F16Le::from_f32(max_scale / (15.5 * 0.25));
        let d32 = d.to_f32();
        if d32 == 0.0 {
            return Self::zeroed();
        }
        let mut qs = [0u8; QK_K / 4];
        for (i, sub) in qs.chunks_exact_mut(8).enumerate() {
            let ls = nearest_int(scales[i] / (d32 * 0.25) - 0.5).clamp(0, 15) as u32;
            let indices = search.assign(&targets[i], iq2_scale(d32, ls)).0;
            sub[..4].copy_from_slice(&indices);
            let aux = (0..4).fold(ls << 28, |a, k| a | u32::from(signs[i][k]) << (7 * k));
            sub[4..].copy_from_slice(&aux.to_le_bytes());
        }
        Self { d, qs }
    }
}
