//! ggml's scale searches for the K-quant reference quantizers (ggml-quants.c), ported so that
//! every float sum runs in ggml's order without fused multiply-adds: our blocks are
//! `llama-quantize`'s (no imatrix) byte for byte, which the `llama_quantized` fixtures check.
//!
//! For speed, the per-value work of each search step (rounding, clamping, products) is done over
//! fixed-size arrays, where the compiler vectorizes it; only the sums stay sequential, as their
//! rounding depends on order.

/// Groups whose largest magnitude is below this are all zero (`GROUP_MAX_EPS`).
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// Rounds to the nearest integer, ties to even, by ggml's magic-number trick (`nearest_int`).
/// Exact for `|v| <= 4194303`; beyond that the result is wrong but in range, and every caller
/// clamps it.
pub(crate) fn nearest_int(v: f32) -> i32 {
    let shifted = v + 12_582_912.0;
    (shifted.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// A sequential sum, as ggml's loops compute it.
fn sum<const N: usize>(terms: &[f32; N]) -> f32 {
    terms.iter().fold(0.0, |s, &t| s + t)
}

/// How `make_qkx2_quants` weighs an error: absolute (`use_mad`) or squared.
fn error(diff: f32, use_mad: bool) -> f32 {
    if use_mad { diff.abs() } else { diff * diff }
}

/// The search `make_qkx2_quants` runs: its shape parameters.
pub(crate) struct Qkx2 {
    /// Largest code.
    pub nmax: i32,
    /// Offset of the first inverse scale tried: `(nmax + rmin + rdelta * is) / (max - min)`.
    pub rmin: f32,
    /// Step between inverse scales tried.
    pub rdelta: f32,
    /// Inverse scales tried: `is` in `0..=nstep`.
    pub nstep: i32,
    /// Minimise absolute rather than squared error.
    pub use_mad: bool,
}

impl Qkx2 {
    /// Fits `x ≈ scale * l - the_min` with `l` in `0..=nmax` under `weights`, trying each
    /// inverse scale and refitting scale and min by weighted least squares for each
    /// (`make_qkx2_quants` in ggml-quants.c). Writes the codes; returns `(scale, the_min)`.
    pub(crate) fn fit<const N: usize>(
        &self,
        x: &[f32; N],
        weights: &[f32; N],
        codes: &mut [u8; N],
    ) -> (f32, f32) {
        let nmax = self.nmax;
        let mut min = x[0];
        let mut max = x[0];
        let mut sum_w = weights[0];
        let mut sum_x = sum_w * x[0];
        for i in 1..N {
            min = if x[i] < min { x[i] } else { min };
            max = if x[i] > max { x[i] } else { max };
            sum_w += weights[i];
            sum_x += weights[i] * x[i];
        }
        if min > 0.0 {
            min = 0.0;
        }
        if max == min {
            *codes = [0; N];
            return (0.0, -min);
        }
        // Levels for one inverse scale; `min` moves whenever a step improves the fit, as in ggml.
        let quantize = |iscale: f32, min: f32| -> [f32; N] {
            std::array::from_fn(|i| nearest_int(iscale * (x[i] - min)).clamp(0, nmax) as f32)
        };
        let mut iscale = nmax as f32 / (max - min);
        let mut scale = 1.0 / iscale;
        let levels = quantize(iscale, min);
        let errors: [f32; N] = std::array::from_fn(|i| {
            weights[i] * error(scale * levels[i] + min - x[i], self.use_mad)
        });
        let mut best_error = sum(&errors);
        *codes = levels.map(|l| l as u8);
        for is in 0..=self.nstep {
            iscale = (self.rmin + self.rdelta * is as f32 + nmax as f32) / (max - min);
            let levels = quantize(iscale, min);
            let wl: [f32; N] = std::array::from_fn(|i| weights[i] * levels[i]);
            let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
            for i in 0..N {
                sum_l += wl[i];
                sum_l2 += wl[i] * levels[i];
                sum_xl += wl[i] * x[i];
            }
            let det = sum_w * sum_l2 - sum_l * sum_l;
            if det > 0.0 {
                let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
                let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
                if this_min > 0.0 {
                    this_min = 0.0;
                    this_scale = sum_xl / sum_l2;
                }
                let errors: [f32; N] = std::array::from_fn(|i| {
                    weights[i] * error(this_scale * levels[i] + this_min - x[i], self.use_mad)
                });
                let cur_error = sum(&errors);
                if cur_error < best_error {
                    *codes = levels.map(|l| l as u8);
                    best_error = cur_error;
                    scale = this_scale;
                    min = this_min;
                }
            }
        }
        (scale, -min)
    }
}

/// Fits `x ≈ scale * (l - nmax)` with `l` in `0..2 * nmax`, weighting each value by `x²`, over
/// 19 inverse scales around `-nmax / max` (`make_qx_quants` in ggml-quants.c with
/// `rmse_type == 1` and no importance weights, the only form the reference quantizers use).
/// Writes the codes; returns the scale (negative when the largest magnitude is negative).
pub(crate) fn make_qx_quants<const N: usize>(nmax: i32, x: &[f32; N], codes: &mut [u8; N]) -> f32 {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        *codes = [0; N];
        return 0.0;
    }
    let weights: [f32; N] = x.map(|v| v * v);
    let wx: [f32; N] = std::array::from_fn(|i| weights[i] * x[i]);
    let quantize = |iscale: f32| -> [f32; N] {
        x.map(|v| nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32)
    };
    // (sum of w·x·l, sum of w·l²) for the levels of one inverse scale.
    let sums = |levels: &[f32; N]| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for i in 0..N {
            sumlx += wx[i] * levels[i];
            suml2 += weights[i] * levels[i] * levels[i];
        }
        (sumlx, suml2)
    };
    let to_codes = |levels: &[f32; N]| levels.map(|l| (l as i32 + nmax) as u8);
    let levels = quantize(-(nmax as f32) / max);
    *codes = to_codes(&levels);
    let (sumlx, suml2) = sums(&levels);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let levels = quantize(-(nmax as f32 + 0.1 * is as f32) / max);
        let (sumlx, suml2) = sums(&levels);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            *codes = to_codes(&levels);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}
