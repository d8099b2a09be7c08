//! GGML tensor element types: block geometry, `#[repr(C)]` block layouts, CPU dequantization
//! (bit-exact with ggml / gguf-py) and the quantizers `moetile synth` needs.
//!
//! The type table mirrors `ggml_type` in ggml.h (ids are part of the GGUF format); ids that ggml
//! retired are absent, so reading one is an "unknown type" error.
//!
//! Formats live by family: `float` (F32, F16, BF16), `legacy` (Q4_0..Q8_0), `kquants`
//! (Q2_K..Q6_K), `iquants` (IQ2_XXS, IQ2_XS, IQ4_NL, IQ4_XS) and `mxfp4` (MXFP4). Each block
//! struct is public and byte-aligned so upload code can cast GGUF bytes to blocks and repack
//! them.
//!
//! ```
//! use moetile::quant::{GgmlType, dequantize, quantize};
//! let x: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
//! let mut bytes = Vec::new();
//! quantize(GgmlType::Q4_K, &x, &mut bytes)?;
//! let mut y = vec![0.0; 256];
//! dequantize(GgmlType::Q4_K, &bytes, &mut y)?;
//! // 15 steps over [-1, 1]: every value lands within about half a step (0.067).
//! assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 0.08));
//! # Ok::<(), moetile::Error>(())
//! ```

mod block;
mod fit;
#[cfg(test)]
mod fixtures;
mod float;
mod iq_tables;
mod iquants;
mod kquants;
mod legacy;
mod mxfp4;
#[cfg(test)]
mod tests;

pub use block::{F16Le, QK, QK_K};
pub use iq_tables::{IQ2XS_GRID, IQ2XXS_GRID};
pub use iquants::{
    BlockIq2Xs, BlockIq2Xxs, BlockIq4Nl, BlockIq4Xs, KMASK_IQ2XS, KSIGNS_IQ2XS, KVALUES_IQ4NL,
};
pub use kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
pub use mxfp4::{BlockMxfp4, KVALUES_MXFP4};

use block::{dequantize_blocks, quantize_blocks};

use crate::{Error, Result};

/// A GGML element type id as stored in a GGUF tensor info.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// 4-bit, 32-value blocks, scale only.
    Q4_0,
    /// 4-bit, 32-value blocks, scale and min.
    Q4_1,
    /// 5-bit, 32-value blocks, scale only.
    Q5_0,
    /// 5-bit, 32-value blocks, scale and min.
    Q5_1,
    /// 8-bit, 32-value blocks, scale only.
    Q8_0,
    /// 8-bit with a precomputed block sum (an activation format).
    Q8_1,
    /// 2-bit K-quant (2.625 bits per value).
    Q2_K,
    /// 3-bit K-quant (3.4375 bits per value).
    Q3_K,
    /// 4-bit K-quant (4.5 bits per value).
    Q4_K,
    /// 5-bit K-quant (5.5 bits per value).
    Q5_K,
    /// 6-bit K-quant (6.5625 bits per value).
    Q6_K,
    /// 8-bit K-quant (an activation format).
    Q8_K,
    /// 2.0625-bit grid quant.
    IQ2_XXS,
    /// 2.3125-bit grid quant.
    IQ2_XS,
    /// 3.0625-bit grid quant.
    IQ3_XXS,
    /// 1.5625-bit grid quant.
    IQ1_S,
    /// 4-bit non-linear codebook, 32-value blocks.
    IQ4_NL,
    /// 3.4375-bit grid quant.
    IQ3_S,
    /// 2.5625-bit grid quant.
    IQ2_S,
    /// 4.25-bit non-linear codebook, 256-value super-blocks.
    IQ4_XS,
    /// 8-bit integer.
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// IEEE binary64.
    F64,
    /// 1.75-bit grid quant.
    IQ1_M,
    /// bfloat16: the top half of an f32.
    BF16,
    /// Ternary, 1.6875 bits per value.
    TQ1_0,
    /// Ternary, 2.0625 bits per value.
    TQ2_0,
    /// OCP microscaling FP4 (E2M1 with an E8M0 block scale).
    MXFP4,
}

/// `(type, ggml id, name, values per block, bytes per block)`: the one table every lookup uses.
const TYPES: [(GgmlType, u32, &str, usize, usize); 32] = [
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", 256, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::IQ1_M, 29, "IQ1_M", 256, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, 39, "MXFP4", 32, 17),
];

impl GgmlType {
    fn row(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        TYPES
            .iter()
            .find(|r| r.0 == self)
            .expect("every variant is in TYPES")
    }

    /// Looks up a GGUF type id; `None` for ids ggml never had or retired.
    pub fn from_id(id: u32) -> Option<Self> {
        TYPES.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    /// Every type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TYPES.iter().map(|r| r.0)
    }

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// ggml's name for the type (`"Q4_K"`).
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Values per block (1 for plain scalar types).
    pub fn block_values(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.row().4
    }

    /// Bytes of a row of `n` values, or `None` when `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        n.is_multiple_of(self.block_values())
            .then(|| n / self.block_values() * self.block_bytes())
    }
}

/// Dequantizes whole blocks of `ty` into f32: `bytes` holds exactly `out.len() /
/// ty.block_values()` blocks. Bit-exact with ggml's `dequantize_row_*` (and gguf-py) for every
/// supported type: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ2_XXS, IQ2_XS,
/// IQ4_NL, IQ4_XS, MXFP4.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let blocks = out.len() / ty.block_values();
    if !out.len().is_multiple_of(ty.block_values()) || bytes.len() != blocks * ty.block_bytes() {
        return Err(Error::BlockMismatch {
            ty,
            values: out.len(),
            bytes: bytes.len(),
        });
    }
    let read: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => float::dequantize_f32,
        GgmlType::F16 => float::dequantize_f16,
        GgmlType::BF16 => float::dequantize_bf16,
        GgmlType::Q4_0 => dequantize_blocks::<BlockQ4_0>,
        GgmlType::Q4_1 => dequantize_blocks::<BlockQ4_1>,
        GgmlType::Q5_0 => dequantize_blocks::<BlockQ5_0>,
        GgmlType::Q5_1 => dequantize_blocks::<BlockQ5_1>,
        GgmlType::Q8_0 => dequantize_blocks::<BlockQ8_0>,
        GgmlType::Q2_K => dequantize_blocks::<BlockQ2K>,
        GgmlType::Q3_K => dequantize_blocks::<BlockQ3K>,
        GgmlType::Q4_K => dequantize_blocks::<BlockQ4K>,
        GgmlType::Q5_K => dequantize_blocks::<BlockQ5K>,
        GgmlType::Q6_K => dequantize_blocks::<BlockQ6K>,
        GgmlType::IQ2_XXS => dequantize_blocks::<BlockIq2Xxs>,
        GgmlType::IQ2_XS => dequantize_blocks::<BlockIq2Xs>,
        GgmlType::IQ4_NL => dequantize_blocks::<BlockIq4Nl>,
        GgmlType::IQ4_XS => dequantize_blocks::<BlockIq4Xs>,
        GgmlType::MXFP4 => dequantize_blocks::<BlockMxfp4>,
        _ => {
            return Err(Error::UnsupportedType {
                ty,
                op: "CPU dequantization",
            });
        }
    };
    read(bytes, out);
    Ok(())
}

/// Quantizes `values` to `ty` and appends the blocks to `out`; `values` must be finite and a
/// whole number of blocks. Types: F32, F16, BF16, Q8_0, Q2_K, Q4_K, Q5_K, Q6_K and MXFP4
/// (ggml's reference quantizers, bit-exact with `quantize_row_*_ref`), IQ2_XXS (our
/// nearest-grid search, see [`BlockIq2Xxs`]). Each block depends only on its own values, so
/// callers may split a tensor across threads at block boundaries. Block scales are f16, as in
/// ggml (MXFP4's a power of two): values beyond about 65504 times a format's largest code
/// overflow them to infinity.
pub fn quantize(ty: GgmlType, values: &[f32], out: &mut Vec<u8>) -> Result<()> {
    let write: fn(&[f32], &mut Vec<u8>) = match ty {
        GgmlType::F32 => float::quantize_f32,
        GgmlType::F16 => float::quantize_f16,
        GgmlType::BF16 => float::quantize_bf16,
        GgmlType::Q8_0 => quantize_blocks::<BlockQ8_0>,
        GgmlType::Q2_K => quantize_blocks::<BlockQ2K>,
        GgmlType::Q4_K => quantize_blocks::<BlockQ4K>,
        GgmlType::Q5_K => quantize_blocks::<BlockQ5K>,
        GgmlType::Q6_K => quantize_blocks::<BlockQ6K>,
        GgmlType::IQ2_XXS => quantize_blocks::<BlockIq2Xxs>,
        GgmlType::MXFP4 => quantize_blocks::<BlockMxfp4>,
        _ => {
            return Err(Error::UnsupportedType {
                ty,
                op: "quantization",
            });
        }
    };
    if !values.len().is_multiple_of(ty.block_values()) {
        return Err(Error::PartialBlock {
            ty,
            values: values.len(),
            block: ty.block_values(),
        });
    }
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            ty,
            index,
            value: values[index],
        });
    }
    write(values, out);
    Ok(())
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
