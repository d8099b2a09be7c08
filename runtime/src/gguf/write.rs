//! The GGUF writer: metadata and tensor declarations up front, tensor data streamed.
//!
//! `moetile synth` writes models of tens of gigabytes, so the writer never holds tensor data:
//! the tensor table (names, types, dims) is declared first, which fixes every offset, and each
//! tensor's bytes are produced on demand by a callback, checked against the declared length.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use super::tensor::tensor_len;
use super::value::LeScalar;
use super::{
    ALIGNMENT_KEY, Array, DEFAULT_ALIGNMENT, GgufError, MAGIC, MAX_ARRAY_DEPTH, Value,
    WRITE_VERSION,
};
use crate::quant::GgmlType;

/// Builds a GGUF version 3 file: add metadata and declare tensors, then write once with
/// [`write_to`](Self::write_to), [`write_file`](Self::write_file) or
/// [`to_bytes`](Self::to_bytes).
///
/// Every declaration is validated as the reader would validate it (duplicate keys and names,
/// tensor shapes, array nesting, alignment), so whatever this writes, [`super::GgufFile`]
/// reads back.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    alignment: usize,
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<Declared>,
    names: HashSet<String>,
}

/// A declared tensor: what the header needs, and the byte count its data must have.
#[derive(Debug, Clone)]
struct Declared {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
    len: usize,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }
}

impl GgufWriter {
    /// An empty file with the default alignment (32).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata entry; entries are written in the order added.
    ///
    /// `general.alignment` sets the alignment of tensor data; it must be a u32 (llama.cpp
    /// reads it as u32), a non-zero power of two.
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> Result<(), GgufError> {
        let (key, value) = (key.into(), value.into());
        if self.keys.contains(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        if let Value::Array(a) = &value
            && a.depth() > MAX_ARRAY_DEPTH
        {
            return Err(GgufError::ArrayTooDeep {
                key,
                max: MAX_ARRAY_DEPTH,
            });
        }
        if key == ALIGNMENT_KEY {
            self.alignment = match value {
                Value::U32(a) if a.is_power_of_two() => a as usize,
                Value::U32(a) => return Err(GgufError::BadAlignment { value: a.into() }),
                ref other => {
                    return Err(GgufError::WrongType {
                        key,
                        expected: "u32",
                        found: other.type_description(),
                    });
                }
            };
        }
        self.keys.insert(key.clone());
        self.metadata.push((key, value));
        Ok(())
    }

    /// Declares a tensor of type `ty` and `dims` (ggml order: `dims[0]` is the row length);
    /// returns its index, the one the data callback of [`write_to`](Self::write_to) receives.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        dims: &[usize],
    ) -> Result<usize, GgufError> {
        let name = name.into();
        let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        let len = tensor_len(&name, ty, &dims)?;
        if !self.names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor { name });
        }
        self.tensors.push(Declared {
            name,
            ty,
            dims,
            len,
        });
        Ok(self.tensors.len() - 1)
    }

    /// Writes the file to `out` (buffered internally) and returns the bytes written.
    ///
    /// `tensor_data(index, sink)` is called once per declared tensor, in declaration order,
    /// and must write exactly that tensor's byte length to `sink` (in as many writes as it
    /// likes); the writer adds the alignment padding. Writing more than declared fails at
    /// the write that overflows, writing less fails after the callback returns; both are
    /// [`GgufError::TensorLength`] naming the tensor.
    pub fn write_to<W: Write>(
        &self,
        out: W,
        mut tensor_data: impl FnMut(usize, &mut dyn Write) -> io::Result<()>,
    ) -> Result<u64, GgufError> {
        let io_err = |context: String| move |error| GgufError::Io { context, error };
        let mut out = BufWriter::with_capacity(1 << 20, out);
        let header = self.header()?;
        out.write_all(&header)
            .map_err(io_err("writing the GGUF header".into()))?;
        let mut written = header.len() as u64;
        for (i, t) in self.tensors.iter().enumerate() {
            let mut sink = TensorSink {
                out: &mut out,
                remaining: t.len,
                refused: 0,
            };
            let result = tensor_data(i, &mut sink);
            let produced = t.len - sink.remaining + sink.refused;
            let wrong_length = GgufError::TensorLength {
                tensor: t.name.clone(),
                expected: t.len,
                written: produced,
            };
            if sink.refused > 0 {
                return Err(wrong_length);
            }
            result.map_err(io_err(format!("writing the data of tensor `{}`", t.name)))?;
            if produced != t.len {
                return Err(wrong_length);
            }
            let padded = t.len.next_multiple_of(self.alignment);
            io::copy(&mut io::repeat(0).take((padded - t.len) as u64), &mut out)
                .map_err(io_err(format!("padding tensor `{}`", t.name)))?;
            written += padded as u64;
        }
        out.flush()
            .map_err(io_err("flushing the GGUF file".into()))?;
        Ok(written)
    }

    /// Creates (or truncates) the file at `path` and writes to it as
    /// [`write_to`](Self::write_to) does. On failure the partial file is removed.
    pub fn write_file(
        &self,
        path: &Path,
        tensor_data: impl FnMut(usize, &mut dyn Write) -> io::Result<()>,
    ) -> Result<u64, GgufError> {
        let file = File::create(path).map_err(|error| GgufError::Io {
            context: format!("creating {}", path.display()),
            error,
        })?;
        let result = self.write_to(file, tensor_data);
        if result.is_err() {
            // Best effort: the write error is the one to report, not a failed cleanup.
            let _ = std::fs::remove_file(path);
        }
        result
    }

    /// The whole file in memory, for small files: `data[i]` is the data of tensor `i`.
    pub fn to_bytes(&self, data: &[&[u8]]) -> Result<Vec<u8>, GgufError> {
        if data.len() != self.tensors.len() {
            return Err(GgufError::TensorCount {
                declared: self.tensors.len(),
                given: data.len(),
            });
        }
        let mut out = Vec::new();
        self.write_to(&mut out, |i, sink| sink.write_all(data[i]))?;
        Ok(out)
    }

    /// Everything before the first tensor's data: preamble, metadata, tensor infos, padding.
    fn header(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        WRITE_VERSION.put_le(&mut out);
        (self.tensors.len() as u64).put_le(&mut out);
        (self.metadata.len() as u64).put_le(&mut out);
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            value.value_type().id().put_le(&mut out);
            put_value(&mut out, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            (t.dims.len() as u32).put_le(&mut out);
            for &d in &t.dims {
                d.put_le(&mut out);
            }
            t.ty.id().put_le(&mut out);
            offset.put_le(&mut out);
            offset = offset
                .checked_add(t.len.next_multiple_of(self.alignment) as u64)
                .ok_or_else(|| GgufError::DimsOverflow {
                    tensor: t.name.clone(),
                    dims: t.dims.clone(),
                })?;
        }
        out.resize(out.len().next_multiple_of(self.alignment), 0);
        Ok(out)
    }
}

/// The `Write` a data callback gets: forwards to the file and refuses bytes past the
/// tensor's declared length.
struct TensorSink<'a> {
    out: &'a mut dyn Write,
    remaining: usize,
    refused: usize,
}

impl Write for TensorSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.remaining {
            self.refused += buf.len();
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "more bytes than the tensor's declared length",
            ));
        }
        let n = self.out.write(buf)?;
        self.remaining -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    (s.len() as u64).put_le(out);
    out.extend_from_slice(s.as_bytes());
}

/// A value's payload (its type id is written by the caller).
fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => v.put_le(out),
        Value::I8(v) => v.put_le(out),
        Value::U16(v) => v.put_le(out),
        Value::I16(v) => v.put_le(out),
        Value::U32(v) => v.put_le(out),
        Value::I32(v) => v.put_le(out),
        Value::F32(v) => v.put_le(out),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(v) => put_str(out, v),
        Value::U64(v) => v.put_le(out),
        Value::I64(v) => v.put_le(out),
        Value::F64(v) => v.put_le(out),
        Value::Array(a) => put_array(out, a),
    }
}

/// An array: element type id, count, elements (inner arrays carry their own type and count).
fn put_array(out: &mut Vec<u8>, array: &Array) {
    fn scalars<T: LeScalar>(out: &mut Vec<u8>, v: &[T]) {
        v.iter().for_each(|x| x.put_le(out));
    }
    array.elem_type().id().put_le(out);
    (array.len() as u64).put_le(out);
    match array {
        Array::U8(v) => scalars(out, v),
        Array::I8(v) => scalars(out, v),
        Array::U16(v) => scalars(out, v),
        Array::I16(v) => scalars(out, v),
        Array::U32(v) => scalars(out, v),
        Array::I32(v) => scalars(out, v),
        Array::F32(v) => scalars(out, v),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::U64(v) => scalars(out, v),
        Array::I64(v) => scalars(out, v),
        Array::F64(v) => scalars(out, v),
        Array::Array(v) => v.iter().for_each(|a| put_array(out, a)),
    }
}
