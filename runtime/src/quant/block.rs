//! What every block format shares: the [`Block`] and [`Quantize`] traits, the byte-aligned f16
//! field, and the loops that run a block type over a whole buffer.
//!
//! Every block struct has alignment 1 (f16 and u16 fields are stored as byte pairs), so any byte
//! slice of whole blocks casts to a block slice, whatever its address: GGUF only aligns tensor
//! starts, and callers hand us sub-slices.

use bytemuck::{Pod, Zeroable};

/// Values per K-quant / IQ super-block (`QK_K` in ggml).
pub const QK_K: usize = 256;

/// Values per legacy block (`QK4_0`, `QK8_0`, `QK4_NL` in ggml).
pub const QK: usize = 32;

/// A little-endian IEEE half stored as two bytes, so blocks holding it stay byte-aligned.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct F16Le(pub [u8; 2]);

impl F16Le {
    /// The value as f32 (exact, like `GGML_FP16_TO_FP32`).
    pub fn to_f32(self) -> f32 {
        half::f16::from_le_bytes(self.0).to_f32()
    }

    /// Rounds `v` to the nearest half, ties to even (like `GGML_FP32_TO_FP16`).
    pub fn from_f32(v: f32) -> Self {
        Self(half::f16::from_f32(v).to_le_bytes())
    }
}

/// A ggml block layout: `#[repr(C)]`, alignment 1, `size_of` equal to the type's block bytes.
/// Crate-private: outside callers go through [`crate::quant::dequantize`], which checks lengths.
pub(crate) trait Block: Pod {
    /// Values per block.
    const VALUES: usize;

    /// Writes the block's values to `out` (`out.len() == Self::VALUES`), bit-exactly as ggml's
    /// `dequantize_row_*` does.
    fn dequantize(&self, out: &mut [f32]);
}

/// A block type moetile can write from f32 values (through [`crate::quant::quantize`]).
pub(crate) trait Quantize: Block {
    /// Quantizes `x` (`x.len() == Self::VALUES`, finite) into one block.
    fn quantize(x: &[f32]) -> Self;
}

/// Dequantizes `bytes` (whole blocks, as many as `out` has room for) into `out`.
pub(crate) fn dequantize_blocks<B: Block>(bytes: &[u8], out: &mut [f32]) {
    // The caller has checked the lengths; alignment 1 means the cast cannot fail on the address.
    let blocks: &[B] = bytemuck::cast_slice(bytes);
    for (block, out) in blocks.iter().zip(out.chunks_exact_mut(B::VALUES)) {
        block.dequantize(out);
    }
}

/// Quantizes `values` (whole blocks) and appends the blocks to `out`.
pub(crate) fn quantize_blocks<B: Quantize>(values: &[f32], out: &mut Vec<u8>) {
    out.reserve(values.len() / B::VALUES * size_of::<B>());
    for x in values.chunks_exact(B::VALUES) {
        out.extend_from_slice(bytemuck::bytes_of(&B::quantize(x)));
    }
}
