//! Tensor table entries and the one shape check the reader and the writer share, so a file the
//! writer accepts is a file the reader accepts.

use super::GgufError;
use crate::quant::GgmlType;

/// Most dimensions a ggml tensor has (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// One tensor of a GGUF file: name, shape, type and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.ffn_gate_exps.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (contiguous), at most
    /// [`MAX_DIMS`], none zero.
    pub dims: Vec<usize>,
    /// Element type.
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file, a multiple of the file's alignment.
    pub offset: usize,
    /// Byte length of the data.
    pub len: usize,
}

impl TensorInfo {
    /// Number of values (product of the dims).
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product()
    }
}

/// Checks a dimension count, before the reader reads that many dims.
pub(crate) fn check_n_dims(tensor: &str, n_dims: usize) -> Result<(), GgufError> {
    if n_dims > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: tensor.to_owned(),
            n_dims,
            max: MAX_DIMS,
        });
    }
    Ok(())
}

/// Byte length of a tensor of type `ty` and `dims` (ggml order), after checking the shape:
/// at most [`MAX_DIMS`] dims, none zero, rows of whole blocks, no overflow.
pub(crate) fn tensor_len(tensor: &str, ty: GgmlType, dims: &[u64]) -> Result<usize, GgufError> {
    check_n_dims(tensor, dims.len())?;
    if dims.contains(&0) {
        return Err(GgufError::ZeroDim {
            tensor: tensor.to_owned(),
            dims: dims.to_vec(),
        });
    }
    let overflow = || GgufError::DimsOverflow {
        tensor: tensor.to_owned(),
        dims: dims.to_vec(),
    };
    let mut sizes = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| overflow()));
    let row_len = sizes.next().transpose()?.unwrap_or(1);
    // `row_bytes` computes row_len / block_values * block_bytes unchecked; this bound keeps
    // that product from overflowing.
    if row_len.checked_mul(ty.block_bytes()).is_none() {
        return Err(overflow());
    }
    let row_bytes = ty
        .row_bytes(row_len)
        .ok_or_else(|| GgufError::BlockMismatch {
            tensor: tensor.to_owned(),
            ty,
            row_len,
            block_values: ty.block_values(),
        })?;
    // ggml counts elements in i64: the element count must fit there as well as the byte count.
    let mut elements = row_len;
    let mut bytes = row_bytes;
    for d in sizes {
        let d = d?;
        elements = elements.checked_mul(d).ok_or_else(overflow)?;
        bytes = bytes.checked_mul(d).ok_or_else(overflow)?;
    }
    if i64::try_from(elements).is_err() || i64::try_from(bytes).is_err() {
        return Err(overflow());
    }
    Ok(bytes)
}
