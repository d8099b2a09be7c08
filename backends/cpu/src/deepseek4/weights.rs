//! Tensor lookup by name with shape checks: every weight is dequantized exactly to f32 (by the
//! CPU backend's upload, through [`moetile::quant::dequantize`]) and every error names the
//! tensor and what the config implies.

use moetile::gguf::GgufFile;
use moetile::model::{Backend, WeightData};
use moetile::quant::GgmlType;
use moetile::{Error, Result};

use crate::{CpuBackend, CpuWeight};

/// The tensors of one file.
pub(super) struct Tensors<'a> {
    pub(super) file: &'a GgufFile,
}

impl Tensors<'_> {
    fn info(&self, name: &str) -> Result<&moetile::gguf::TensorInfo> {
        self.file.tensor(name).ok_or_else(|| {
            Error::InvalidModel(format!("tensor {name} is missing from the deepseek4 file"))
        })
    }

    fn wrong_dims(name: &str, dims: &[usize], want: &[usize]) -> Error {
        Error::InvalidModel(format!(
            "tensor {name} has dims {dims:?}, the config implies {want:?}"
        ))
    }

    /// Tensor `name` with ggml dims `dims` (`[cols, rows, experts]`), dequantized.
    pub(super) fn weight(&self, name: &str, dims: &[usize]) -> Result<CpuWeight> {
        let info = self.info(name)?;
        if info.dims != dims {
            return Err(Self::wrong_dims(name, &info.dims, dims));
        }
        CpuBackend::new()
            .upload(WeightData {
                name,
                ty: info.ty,
                dims: &info.dims,
                bytes: self.file.tensor_bytes(info),
            })
            .map_err(|e| Error::InvalidModel(format!("tensor {name}: {e}")))
    }

    /// A vector of `len` values.
    pub(super) fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        Ok(self.weight(name, &[len])?.values)
    }

    /// An I32 table of `rows` rows of `cols` ids, each below `bound`.
    pub(super) fn ids(
        &self,
        name: &str,
        cols: usize,
        rows: usize,
        bound: usize,
    ) -> Result<Vec<usize>> {
        let info = self.info(name)?;
        if info.dims != [cols, rows] {
            return Err(Self::wrong_dims(name, &info.dims, &[cols, rows]));
        }
        if info.ty != GgmlType::I32 {
            return Err(Error::InvalidModel(format!(
                "tensor {name} is {}; expert ids are I32",
                info.ty.name()
            )));
        }
        self.file
            .tensor_bytes(info)
            .chunks_exact(4)
            .map(|b| {
                let id = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                usize::try_from(id)
                    .ok()
                    .filter(|&id| id < bound)
                    .ok_or_else(|| {
                        Error::InvalidModel(format!(
                            "tensor {name} holds id {id}, outside 0..{bound}"
                        ))
                    })
            })
            .collect()
    }
}
