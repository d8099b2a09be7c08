//! The GGUF reader: parses and validates the whole header once, at open, so that nothing later
//! (config, tokenizer, upload) meets a malformed count, offset or string.
//!
//! Every count read from the file is checked against the bytes left before anything is
//! allocated for it, so a corrupt or hostile file costs at most its own size in memory.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::ops::Deref;
use std::path::Path;

use memmap2::Mmap;

use super::tensor::{check_n_dims, tensor_len};
use super::value::LeScalar;
use super::{
    Array, DEFAULT_ALIGNMENT, GgufError, MAGIC, MAX_ARRAY_DEPTH, TensorInfo, Value, ValueType,
};
use crate::quant::GgmlType;

/// Smallest metadata entry: key length (8), value type (4), a one-byte value.
const MIN_KV_BYTES: usize = 13;
/// Smallest tensor info: name length (8), dim count (4), type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: usize = 24;
/// Smallest array element that is itself an array: element type (4) and count (8).
const MIN_INNER_ARRAY_BYTES: usize = 12;
/// Smallest string: its u64 length.
const MIN_STRING_BYTES: usize = 8;

/// A parsed, validated GGUF file (version 2 or 3) with its bytes: metadata, tensor table and
/// the tensors' data.
///
/// All validation happens in [`open`](Self::open) / [`from_bytes`](Self::from_bytes) /
/// [`from_buffer`](Self::from_buffer); every tensor range of [`tensors`](Self::tensors) lies
/// inside the file, aligned and disjoint.
pub struct GgufFile {
    bytes: Bytes,
    version: u32,
    alignment: usize,
    data_offset: usize,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

/// The file's bytes: a read-only map of the file, or a buffer an embedder or test passed in
/// (a `Vec`, a `&'static [u8]` from `include_bytes!`, an `Arc<[u8]>`, its own map...).
struct Bytes(Box<dyn AsRef<[u8]> + Send + Sync>);

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

/// Generates `get_X` (error when absent) and `get_X_opt` (`Ok(None)` when absent) from the
/// matching `Value::as_X` conversion, so every typed accessor reports errors the same way.
macro_rules! accessors {
    ($($get:ident, $get_opt:ident, $as:ident -> $ty:ty, $expected:literal;)*) => {$(
        #[doc = concat!("The value of `key` as ", $expected, "; an error naming the key when it is")]
        #[doc = concat!("absent or of another type. See [`Value::", stringify!($as), "`] for the")]
        #[doc = "types accepted."]
        pub fn $get(&self, key: &str) -> Result<$ty, GgufError> {
            self.$get_opt(key)?.ok_or_else(|| GgufError::MissingKey { key: key.to_owned() })
        }

        #[doc = concat!("Like [`", stringify!($get), "`](Self::", stringify!($get), "), but")]
        #[doc = "`Ok(None)` when the key is absent."]
        pub fn $get_opt(&self, key: &str) -> Result<Option<$ty>, GgufError> {
            self.get(key)
                .map(|v| v.$as().ok_or_else(|| mismatch(key, $expected, v)))
                .transpose()
        }
    )*};
}

impl GgufFile {
    /// Maps and validates the file at `path`.
    ///
    /// The file is memory-mapped read-only; as with every mmap-based loader (llama.cpp
    /// included), it must not be truncated or rewritten while this value lives.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |error| GgufError::Io {
            context: format!("opening {}", path.display()),
            error,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this value. Soundness requires that no
        // one truncates or modifies the file while it is mapped, which the doc comment above
        // states as the caller's contract (the same one llama.cpp and gguf-py rely on).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(Bytes(Box::new(map)))
    }

    /// Validates a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::from_buffer(bytes)
    }

    /// Validates a GGUF file in any buffer, without copying it: a `&'static [u8]` from
    /// `include_bytes!`, an `Arc<[u8]>` shared with the application, a `memmap2::Mmap` it
    /// made itself (under the contract of [`open`](Self::open)). The buffer is kept, and
    /// dropped with this value.
    pub fn from_buffer(
        buffer: impl AsRef<[u8]> + Send + Sync + 'static,
    ) -> Result<Self, GgufError> {
        Self::parse(Bytes(Box::new(buffer)))
    }

    fn parse(bytes: Bytes) -> Result<Self, GgufError> {
        let mut cur = Cursor {
            bytes: &bytes,
            pos: 0,
        };
        let version = read_preamble(&mut cur)?;
        let n_tensors = cur.count(MIN_TENSOR_INFO_BYTES, Ctx::Header("tensor_count"))?;
        let n_kv = cur.count(MIN_KV_BYTES, Ctx::Header("metadata_kv_count"))?;

        let mut metadata: Vec<(String, Value)> = cur.vec_for(n_kv);
        let mut key_index = HashMap::with_capacity(metadata.capacity());
        for i in 0..n_kv {
            let key = cur.string(Ctx::KeyName(i))?;
            let ty = cur.value_type(Ctx::Key(&key))?;
            let value = cur.value(ty, &key)?;
            if key_index.insert(key.clone(), i).is_some() {
                return Err(GgufError::DuplicateKey { key });
            }
            metadata.push((key, value));
        }
        let alignment = match key_index.get(super::ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => checked_alignment(&metadata[i].1)?,
        };

        // Tensor infos hold offsets relative to the data section, which starts after them.
        let mut infos: Vec<RawInfo> = cur.vec_for(n_tensors);
        let mut tensor_index = HashMap::with_capacity(infos.capacity());
        for i in 0..n_tensors {
            let name = cur.string(Ctx::TensorName(i))?;
            if tensor_index.insert(name.clone(), i).is_some() {
                return Err(GgufError::DuplicateTensor { name });
            }
            let n_dims: u32 = cur.scalar(Ctx::Tensor(&name))?;
            check_n_dims(&name, n_dims as usize)?;
            let dims = (0..n_dims)
                .map(|_| cur.scalar::<u64>(Ctx::Tensor(&name)))
                .collect::<Result<Vec<_>, _>>()?;
            let type_id: u32 = cur.scalar(Ctx::Tensor(&name))?;
            let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
                tensor: name.clone(),
                id: type_id,
            })?;
            let len = tensor_len(&name, ty, &dims)?;
            let rel_offset: u64 = cur.scalar(Ctx::Tensor(&name))?;
            infos.push(RawInfo {
                name,
                dims,
                ty,
                rel_offset,
                len,
            });
        }
        // Vocabulary-only files may end before the padding, so `data_offset` can exceed the
        // file length when there are no tensors; tensor ranges are checked below either way.
        let data_offset =
            cur.pos
                .checked_next_multiple_of(alignment)
                .ok_or(GgufError::BadAlignment {
                    value: alignment as i128,
                })?;

        let file_len = bytes.len();
        let mut tensors = Vec::with_capacity(infos.len());
        for RawInfo {
            name,
            dims,
            ty,
            rel_offset,
            len,
        } in infos
        {
            if !rel_offset.is_multiple_of(alignment as u64) {
                return Err(GgufError::UnalignedTensor {
                    tensor: name,
                    offset: rel_offset,
                    alignment,
                });
            }
            // Saturation only makes an out-of-range tensor look further out of range.
            let start = (data_offset as u64).saturating_add(rel_offset);
            let end = start.saturating_add(len as u64);
            if end > file_len as u64 {
                return Err(GgufError::TensorOutOfBounds {
                    tensor: name,
                    start,
                    end,
                    file_len,
                });
            }
            tensors.push(TensorInfo {
                name,
                dims: dims.into_iter().map(|d| d as usize).collect(),
                ty,
                offset: start as usize,
                len,
            });
        }
        check_disjoint(&tensors)?;

        Ok(GgufFile {
            bytes,
            version,
            alignment,
            data_offset,
            metadata,
            key_index,
            tensors,
            tensor_index,
        })
    }

    /// The format version, 2 or 3 (identical layouts for little-endian files).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// `general.alignment`, or 32 when absent: tensor offsets are multiples of it.
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Absolute offset of the data section (the end of the header, rounded up to the
    /// alignment). Vocabulary-only files may be shorter than this.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    accessors! {
        get_u32, get_u32_opt, as_u32 -> u32, "u32";
        get_u64, get_u64_opt, as_u64 -> u64, "u64";
        get_i32, get_i32_opt, as_i32 -> i32, "i32";
        get_f32, get_f32_opt, as_f32 -> f32, "f32";
        get_bool, get_bool_opt, as_bool -> bool, "bool";
        get_str, get_str_opt, as_str -> &str, "string";
        get_str_array, get_str_array_opt, as_str_array -> &[String], "array of string";
        get_f32_array, get_f32_array_opt, as_f32_array -> &[f32], "array of f32";
        get_i32_array, get_i32_array_opt, as_i32_array -> &[i32], "array of i32";
        get_u32_array, get_u32_array_opt, as_u32_array -> &[u32], "array of u32";
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The data of `t`, `t.len` bytes.
    ///
    /// # Panics
    /// If `t` does not lie inside this file (it was not obtained from this file).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        &self.bytes[t.offset..t.offset + t.len]
    }
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("len", &self.bytes.len())
            .field("metadata_entries", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// The `expected` names of accessors that take any integer whose value fits.
const INTEGER_ACCESSORS: [&str; 3] = ["u32", "u64", "i32"];

/// The error for a present key whose value an accessor cannot return.
fn mismatch(key: &str, expected: &'static str, found: &Value) -> GgufError {
    match found.integer() {
        Some(value) if INTEGER_ACCESSORS.contains(&expected) => GgufError::IntegerOutOfRange {
            key: key.to_owned(),
            expected,
            value,
        },
        _ => GgufError::WrongType {
            key: key.to_owned(),
            expected,
            found: found.type_description(),
        },
    }
}

/// Reads magic and version; returns the version.
fn read_preamble(cur: &mut Cursor<'_>) -> Result<u32, GgufError> {
    let magic = cur.take(4, Ctx::Header("magic"))?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic {
            found: [magic[0], magic[1], magic[2], magic[3]],
        });
    }
    let version: u32 = cur.scalar(Ctx::Header("version"))?;
    match version {
        2 | 3 => Ok(version),
        v if matches!(v.swap_bytes(), 2 | 3) => Err(GgufError::BigEndian { raw: v }),
        v => Err(GgufError::UnsupportedVersion { version: v }),
    }
}

/// `general.alignment` as an alignment: any integer type (the reader is lenient), non-zero,
/// a power of two.
fn checked_alignment(value: &Value) -> Result<usize, GgufError> {
    let Some(raw) = value.integer() else {
        return Err(mismatch(super::ALIGNMENT_KEY, "u32", value));
    };
    match usize::try_from(raw) {
        Ok(a) if a.is_power_of_two() => Ok(a),
        _ => Err(GgufError::BadAlignment { value: raw }),
    }
}

/// Fails on the first pair of tensors whose byte ranges intersect.
fn check_disjoint(tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let mut by_start: Vec<&TensorInfo> = tensors.iter().collect();
    by_start.sort_by_key(|t| t.offset);
    for pair in by_start.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.offset < a.offset + a.len {
            return Err(GgufError::OverlappingTensors {
                first: a.name.clone(),
                first_end: a.offset + a.len,
                second: b.name.clone(),
                second_start: b.offset,
            });
        }
    }
    Ok(())
}

/// A tensor info as read, before its offset is placed in the file and checked.
struct RawInfo {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    rel_offset: u64,
    len: usize,
}

/// Where the parser is, for error messages; formatted only when an error is built.
#[derive(Clone, Copy)]
enum Ctx<'a> {
    Header(&'static str),
    KeyName(usize),
    Key(&'a str),
    Element(&'a str, usize),
    TensorName(usize),
    Tensor(&'a str),
}

impl fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ctx::Header(field) => write!(f, "header field `{field}`"),
            Ctx::KeyName(i) => write!(f, "name of metadata entry #{i}"),
            Ctx::Key(key) => write!(f, "metadata key `{key}`"),
            Ctx::Element(key, i) => write!(f, "element {i} of metadata key `{key}`"),
            Ctx::TensorName(i) => write!(f, "name of tensor info #{i}"),
            Ctx::Tensor(name) => write!(f, "tensor info of `{name}`"),
        }
    }
}

/// A bounds-checked position in the file.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, ctx: Ctx<'_>) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: ctx.to_string(),
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn scalar<T: LeScalar>(&mut self, ctx: Ctx<'_>) -> Result<T, GgufError> {
        self.take(T::SIZE, ctx).map(T::from_le)
    }

    /// A u64 count of items that each take at least `min_item_bytes`, checked against the
    /// bytes left so that allocating `count` items is bounded by the file size.
    fn count(&mut self, min_item_bytes: usize, ctx: Ctx<'_>) -> Result<usize, GgufError> {
        let count: u64 = self.scalar(ctx)?;
        let fits = (self.remaining() / min_item_bytes) as u64;
        if count > fits {
            return Err(GgufError::CountTooLarge {
                what: ctx.to_string(),
                count,
                min_item_bytes,
                available: self.remaining(),
            });
        }
        Ok(count as usize)
    }

    /// A vector for `count` items (already checked by [`count`](Self::count)), preallocated
    /// only as far as the bytes left could fill it: items can take more memory than their
    /// encoding, and a hostile count must not reserve more memory than the file's size.
    fn vec_for<T>(&self, count: usize) -> Vec<T> {
        Vec::with_capacity(count.min(self.remaining() / size_of::<T>().max(1)))
    }

    fn string(&mut self, ctx: Ctx<'_>) -> Result<String, GgufError> {
        let len: u64 = self.scalar(ctx)?;
        if len > self.remaining() as u64 {
            return Err(GgufError::StringTooLong {
                what: ctx.to_string(),
                len,
                available: self.remaining(),
            });
        }
        let start = self.pos;
        let bytes = self.take(len as usize, ctx)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| GgufError::InvalidUtf8 {
            what: ctx.to_string(),
            offset: start + e.utf8_error().valid_up_to(),
        })
    }

    fn value_type(&mut self, ctx: Ctx<'_>) -> Result<ValueType, GgufError> {
        let id: u32 = self.scalar(ctx)?;
        ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
            what: ctx.to_string(),
            id,
        })
    }

    fn bool(&mut self, ctx: Ctx<'_>) -> Result<bool, GgufError> {
        match self.scalar::<u8>(ctx)? {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(GgufError::InvalidBool {
                what: ctx.to_string(),
                byte,
            }),
        }
    }

    /// One value of type `ty` (its type id already read) for metadata key `key`.
    fn value(&mut self, ty: ValueType, key: &str) -> Result<Value, GgufError> {
        let ctx = Ctx::Key(key);
        Ok(match ty {
            ValueType::U8 => Value::U8(self.scalar(ctx)?),
            ValueType::I8 => Value::I8(self.scalar(ctx)?),
            ValueType::U16 => Value::U16(self.scalar(ctx)?),
            ValueType::I16 => Value::I16(self.scalar(ctx)?),
            ValueType::U32 => Value::U32(self.scalar(ctx)?),
            ValueType::I32 => Value::I32(self.scalar(ctx)?),
            ValueType::F32 => Value::F32(self.scalar(ctx)?),
            ValueType::Bool => Value::Bool(self.bool(ctx)?),
            ValueType::String => Value::String(self.string(ctx)?),
            ValueType::U64 => Value::U64(self.scalar(ctx)?),
            ValueType::I64 => Value::I64(self.scalar(ctx)?),
            ValueType::F64 => Value::F64(self.scalar(ctx)?),
            ValueType::Array => Value::Array(self.array(key, 1)?),
        })
    }

    /// An array (element type, count, elements) at nesting level `depth` (1 = outermost).
    fn array(&mut self, key: &str, depth: usize) -> Result<Array, GgufError> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(GgufError::ArrayTooDeep {
                key: key.to_owned(),
                max: MAX_ARRAY_DEPTH,
            });
        }
        let ctx = Ctx::Key(key);
        let elem = self.value_type(ctx)?;
        Ok(match elem {
            ValueType::U8 => Array::U8(self.scalars(ctx)?),
            ValueType::I8 => Array::I8(self.scalars(ctx)?),
            ValueType::U16 => Array::U16(self.scalars(ctx)?),
            ValueType::I16 => Array::I16(self.scalars(ctx)?),
            ValueType::U32 => Array::U32(self.scalars(ctx)?),
            ValueType::I32 => Array::I32(self.scalars(ctx)?),
            ValueType::F32 => Array::F32(self.scalars(ctx)?),
            ValueType::U64 => Array::U64(self.scalars(ctx)?),
            ValueType::I64 => Array::I64(self.scalars(ctx)?),
            ValueType::F64 => Array::F64(self.scalars(ctx)?),
            ValueType::Bool => {
                let n = self.count(1, ctx)?;
                Array::Bool(
                    (0..n)
                        .map(|i| self.bool(Ctx::Element(key, i)))
                        .collect::<Result<_, _>>()?,
                )
            }
            ValueType::String => {
                let n = self.count(MIN_STRING_BYTES, ctx)?;
                let mut v = self.vec_for(n);
                for i in 0..n {
                    v.push(self.string(Ctx::Element(key, i))?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let n = self.count(MIN_INNER_ARRAY_BYTES, ctx)?;
                let mut v = self.vec_for(n);
                for _ in 0..n {
                    v.push(self.array(key, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }

    /// The count and elements of a numeric array.
    fn scalars<T: LeScalar>(&mut self, ctx: Ctx<'_>) -> Result<Vec<T>, GgufError> {
        let n = self.count(T::SIZE, ctx)?;
        let bytes = self.take(n * T::SIZE, ctx)?;
        Ok(bytes.chunks_exact(T::SIZE).map(T::from_le).collect())
    }
}
