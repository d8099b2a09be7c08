//! Partial interleaved RoPE with optional YaRN, as ggml's `rope_f32` computes it (mode NORM)
//! with `ggml_rope_set_offset`: only the last `n_rot` dims of a head rotate, in pairs
//! `(off + 2k, off + 2k + 1)`.
//!
//! deepseek4 passes `attn_factor = 1 / (1 + 0.1 ln(1 / freq_scale))` whenever YaRN is on, which
//! cancels the magnitude factor YaRN multiplies in, so the rotation here has magnitude 1.

/// One rotation: the angle per position of each rotated pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// Radians per position of pair k, k in `0..n_rot / 2`.
    freqs: Vec<f64>,
}

/// YaRN's correction dims `[lo, hi]` (`ggml_rope_yarn_corr_dims`): pairs below `lo` keep the
/// unscaled frequency, pairs above `hi` take the scaled one, a linear ramp between.
fn yarn_corr_dims(n_rot: usize, n_ctx_orig: usize, base: f64) -> (f64, f64) {
    const BETA_FAST: f64 = 32.0;
    const BETA_SLOW: f64 = 1.0;
    let dim = |beta: f64| {
        n_rot as f64 * (n_ctx_orig as f64 / (beta * 2.0 * std::f64::consts::PI)).ln()
            / (2.0 * base.ln())
    };
    (
        dim(BETA_FAST).floor().max(0.0),
        dim(BETA_SLOW).ceil().min(n_rot as f64 - 1.0),
    )
}

/// The share of the unscaled (extrapolated) frequency in pair k: 1 below `lo`, 0 above `hi`.
fn yarn_ramp(k: usize, (lo, hi): (f64, f64)) -> f64 {
    let y = (k as f64 - lo) / (hi - lo).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}

impl Rope {
    /// Plain RoPE over `n_rot` dims with base `base`.
    pub fn plain(n_rot: usize, base: f64) -> Rope {
        Rope::scaled(n_rot, base, 1.0, None)
    }

    /// RoPE with frequencies scaled by `freq_scale`; with `yarn_orig_ctx` YaRN blends each
    /// pair between the scaled and the unscaled frequency.
    pub fn scaled(n_rot: usize, base: f64, freq_scale: f64, yarn_orig_ctx: Option<usize>) -> Rope {
        let theta_scale = base.powf(-2.0 / n_rot as f64);
        let corr = yarn_orig_ctx.map(|ctx| yarn_corr_dims(n_rot, ctx, base));
        let freqs = (0..n_rot / 2)
            .map(|k| {
                let ramp = corr.map_or(0.0, |c| yarn_ramp(k, c));
                theta_scale.powi(k as i32) * (freq_scale * (1.0 - ramp) + ramp)
            })
            .collect();
        Rope { freqs }
    }

    /// Rotates the tail of `head` to position `pos`.
    pub fn rotate(&self, head: &mut [f64], pos: usize) {
        self.apply(head, pos, 1.0);
    }

    /// Undoes [`rotate`](Self::rotate) (ggml's `rope_ext_back`: the sine negated).
    pub fn unrotate(&self, head: &mut [f64], pos: usize) {
        self.apply(head, pos, -1.0);
    }

    fn apply(&self, head: &mut [f64], pos: usize, sin_sign: f64) {
        let off = head.len() - 2 * self.freqs.len();
        for (k, freq) in self.freqs.iter().enumerate() {
            let (sin, cos) = (pos as f64 * freq).sin_cos();
            let sin = sin * sin_sign;
            let (i, j) = (off + 2 * k, off + 2 * k + 1);
            let (x0, x1) = (head[i], head[j]);
            head[i] = x0 * cos - x1 * sin;
            head[j] = x0 * sin + x1 * cos;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yarn_ramp_blends_from_unscaled_to_scaled() {
        // n_rot 32, base 160000, original context 64:
        // corr(32) = 32 ln(64 / 64π) / (2 ln 160000) = -1.53 -> lo = 0;
        // corr(1)  = 32 ln(64 / 2π)  / (2 ln 160000) =  3.10 -> hi = 4.
        let (lo, hi) = yarn_corr_dims(32, 64, 160000.0);
        assert_eq!((lo, hi), (0.0, 4.0));
        let ramps: Vec<f64> = (0..6).map(|k| yarn_ramp(k, (lo, hi))).collect();
        assert_eq!(ramps, [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]);
        // Pair 0 keeps its frequency, pair 2 is halfway, pairs from 4 on are scaled.
        let rope = Rope::scaled(32, 160000.0, 0.25, Some(64));
        let theta = 160000f64.powf(-2.0 / 32.0);
        assert_eq!(rope.freqs[0], 1.0);
        assert!((rope.freqs[2] - theta.powi(2) * 0.625).abs() < 1e-15);
        assert!((rope.freqs[5] - theta.powi(5) * 0.25).abs() < 1e-15);
    }

    #[test]
    fn rotates_only_the_tail_pairs_and_unrotate_inverts() {
        let rope = Rope::plain(2, 10000.0);
        let mut head = [5.0, 1.0, 0.0];
        rope.rotate(&mut head, 1);
        assert_eq!(head[0], 5.0);
        assert!((head[1] - 1f64.cos()).abs() < 1e-15 && (head[2] - 1f64.sin()).abs() < 1e-15);
        rope.unrotate(&mut head, 1);
        assert!((head[1] - 1.0).abs() < 1e-15 && head[2].abs() < 1e-15);
    }
}
