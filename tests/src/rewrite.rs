//! Copies of a GGUF with keys and tensors edited: how the tests make the malformed files a
//! loader must refuse, and the variants a fixture does not ship.

use moetile::gguf::{GgufFile, GgufWriter, Value};
use moetile::quant::GgmlType;

/// A tensor of a rewritten file.
pub struct Tensor {
    /// Its name.
    pub name: String,
    /// Its storage type.
    pub ty: GgmlType,
    /// GGML order dims.
    pub dims: Vec<usize>,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Tensor {
    /// Replaces every f32 value of the tensor.
    ///
    /// # Panics
    /// When the tensor is not F32.
    pub fn map_f32(&mut self, f: impl Fn(f32) -> f32) {
        assert_eq!(self.ty, GgmlType::F32, "{}", self.name);
        for v in self.bytes.chunks_exact_mut(4) {
            let x = f32::from_le_bytes(v.try_into().unwrap());
            v.copy_from_slice(&f(x).to_le_bytes());
        }
    }
}

/// `src` with each key's value replaced by `meta(key, value)` (dropped on `None`) and its
/// tensors edited by `edit`.
///
/// # Panics
/// When the result is not a valid GGUF.
pub fn rewrite(
    src: &GgufFile,
    meta: impl Fn(&str, &Value) -> Option<Value>,
    edit: impl FnOnce(&mut Vec<Tensor>),
) -> GgufFile {
    rewrite_adding(src, meta, &[], edit)
}

/// [`rewrite`], with the keys of `added` (absent from `src`) appended.
///
/// # Panics
/// When the result is not a valid GGUF.
pub fn rewrite_adding(
    src: &GgufFile,
    meta: impl Fn(&str, &Value) -> Option<Value>,
    added: &[(&str, Value)],
    edit: impl FnOnce(&mut Vec<Tensor>),
) -> GgufFile {
    GgufFile::from_bytes(rewrite_to_bytes(src, meta, added, edit)).unwrap()
}

/// [`rewrite_adding`], as the bytes of the file (to write where a command reads it).
///
/// # Panics
/// When a key or tensor cannot be written.
pub fn rewrite_to_bytes(
    src: &GgufFile,
    meta: impl Fn(&str, &Value) -> Option<Value>,
    added: &[(&str, Value)],
    edit: impl FnOnce(&mut Vec<Tensor>),
) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (key, value) in src.metadata() {
        if let Some(v) = meta(key, value) {
            w.add_metadata(key, v).unwrap();
        }
    }
    for (key, value) in added {
        w.add_metadata(*key, value.clone()).unwrap();
    }
    let mut tensors: Vec<Tensor> = src
        .tensors()
        .iter()
        .map(|t| Tensor {
            name: t.name.clone(),
            ty: t.ty,
            dims: t.dims.clone(),
            bytes: src.tensor_bytes(t).to_vec(),
        })
        .collect();
    edit(&mut tensors);
    for t in &tensors {
        w.add_tensor(t.name.clone(), t.ty, &t.dims).unwrap();
    }
    let data: Vec<&[u8]> = tensors.iter().map(|t| t.bytes.as_slice()).collect();
    w.to_bytes(&data).unwrap()
}
