//! MXFP4, the OCP microscaling FP4 format (ggml-common.h `block_mxfp4`): 32 FP4 E2M1 codes
//! sharing one E8M0 (power-of-two) exponent byte.
//!
//! ggml stores the E2M1 values doubled, as the integers of [`KVALUES_MXFP4`], and halves the
//! scale to match: a block is `KVALUES_MXFP4[q] * 2^(e - 128)`, which is the OCP value
//! `e2m1(q) * 2^(e - 127)`. Codes are packed as in Q4_0 (value `j` in the low nibble of
//! `qs[j]`, value `j + 16` in its high nibble).

use bytemuck::{Pod, Zeroable};

use crate::quant::block::{Block, QK, Quantize};
use crate::quant::legacy::nibbles;

/// `kvalues_mxfp4` (ggml-common.h): the FP4 E2M1 values doubled, so they are integers; the
/// sign is the code's top bit (code 8 is a negative zero, read as 0).
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// MXFP4: `KVALUES_MXFP4[q] * 2^(e - 128)`, q in 0..16.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockMxfp4 {
    /// E8M0 exponent: the block scale is `2^(e - 127)` for the undoubled E2M1 values.
    pub e: u8,
    /// 4-bit E2M1 codes, two per byte (see the module docs for the order).
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockMxfp4>() == 17);

/// Half the E8M0 scale, `2^(e - 128)`, exactly (`ggml_e8m0_to_fp32_half` in ggml-impl.h): the
/// f32 subnormals `2^-128` and `2^-127` for `e` 0 and 1. ggml has no NaN: `e = 255` (which its
/// row validation rejects) is read as `2^127`, so codes beyond +-1 overflow to infinity.
fn e8m0_to_f32_half(e: u8) -> f32 {
    if e < 2 {
        f32::from_bits(0x0020_0000 << e)
    } else {
        f32::from_bits(u32::from(e - 1) << 23)
    }
}

impl Block for BlockMxfp4 {
    const VALUES: usize = QK;

    /// Mirrors `dequantize_row_mxfp4` in ggml-quants.c.
    fn dequantize(&self, out: &mut [f32]) {
        let d = e8m0_to_f32_half(self.e);
        for (o, q) in out.iter_mut().zip(nibbles(&self.qs)) {
            *o = f32::from(KVALUES_MXFP4[usize::from(q)]) * d;
        }
    }
}

/// The code whose value `KVALUES_MXFP4[q] * d` is nearest `x`, the first on a tie
/// (`best_index_mxfp4` in ggml-quants.c): so an exact zero is code 0, never the negative 8.
fn nearest_code(x: f32, d: f32) -> u8 {
    let mut best = (0, (f32::from(KVALUES_MXFP4[0]) * d - x).abs());
    for (q, &k) in KVALUES_MXFP4.iter().enumerate().skip(1) {
        let err = (f32::from(k) * d - x).abs();
        if err < best.1 {
            best = (q as u8, err);
        }
    }
    best.0
}

impl Quantize for BlockMxfp4 {
    /// Mirrors `quantize_row_mxfp4_ref` in ggml-quants.c bit for bit (also gguf-py's
    /// `MXFP4.quantize_blocks`): `e = floor(log2(max|x|)) + 125`, so the largest magnitude lands
    /// on code 8 or 12 (values from 1.5x its power of two saturate at 12), then each value takes
    /// its nearest code. ggml's cast of `e` to a byte is undefined below 0; ours saturates, so a
    /// block whose largest magnitude is under `2^-125` gets `e = 0`.
    fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let e = if amax > 0.0 {
            (amax.log2().floor() - 2.0 + 127.0) as u8
        } else {
            0
        };
        let d = e8m0_to_f32_half(e);
        let mut qs = [0; QK / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            *q = nearest_code(x[j], d) | nearest_code(x[j + QK / 2], d) << 4;
        }
        Self { e, qs }
    }
}
