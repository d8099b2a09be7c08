//! Metadata values as GGUF stores them: thirteen value types, arrays kept as typed vectors.
//!
//! Arrays are homogeneous in GGUF, so each is one `Vec` of its element type rather than a
//! `Vec<Value>`: a 150K-token vocabulary costs its strings and nothing per element beyond them.

use std::fmt;

/// A metadata value type id (`gguf_metadata_value_type` in the GGUF specification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// 8-bit unsigned integer (id 0).
    U8,
    /// 8-bit signed integer (id 1).
    I8,
    /// 16-bit unsigned integer (id 2).
    U16,
    /// 16-bit signed integer (id 3).
    I16,
    /// 32-bit unsigned integer (id 4).
    U32,
    /// 32-bit signed integer (id 5).
    I32,
    /// 32-bit IEEE float (id 6).
    F32,
    /// Boolean stored as one byte, 0 or 1 (id 7).
    Bool,
    /// UTF-8 string with a u64 byte length (id 8).
    String,
    /// Array: element type, u64 count, elements (id 9).
    Array,
    /// 64-bit unsigned integer (id 10).
    U64,
    /// 64-bit signed integer (id 11).
    I64,
    /// 64-bit IEEE float (id 12).
    F64,
}

/// `(type, id, name)`: the one table every id and name lookup uses.
const VALUE_TYPES: [(ValueType, u32, &str); 13] = [
    (ValueType::U8, 0, "u8"),
    (ValueType::I8, 1, "i8"),
    (ValueType::U16, 2, "u16"),
    (ValueType::I16, 3, "i16"),
    (ValueType::U32, 4, "u32"),
    (ValueType::I32, 5, "i32"),
    (ValueType::F32, 6, "f32"),
    (ValueType::Bool, 7, "bool"),
    (ValueType::String, 8, "string"),
    (ValueType::Array, 9, "array"),
    (ValueType::U64, 10, "u64"),
    (ValueType::I64, 11, "i64"),
    (ValueType::F64, 12, "f64"),
];

impl ValueType {
    fn row(self) -> &'static (ValueType, u32, &'static str) {
        VALUE_TYPES
            .iter()
            .find(|r| r.0 == self)
            .expect("every variant is in VALUE_TYPES")
    }

    /// Looks up a GGUF value type id; `None` for ids the format does not define.
    pub fn from_id(id: u32) -> Option<Self> {
        VALUE_TYPES.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    /// The GGUF value type id.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// Short lower-case name (`"u32"`, `"string"`), used in error messages.
    pub fn name(self) -> &'static str {
        self.row().2
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // one variant per `ValueType`, documented there
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(Array),
}

/// A homogeneous metadata array; arrays of arrays may mix element types between inner arrays.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // one variant per `ValueType`, documented there
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
    Array(Vec<Array>),
}

impl Value {
    /// The value's GGUF type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
            Value::Array(_) => ValueType::Array,
        }
    }

    /// The type as a phrase for messages: `"u32"`, `"array of string"`.
    pub fn type_description(&self) -> String {
        match self {
            Value::Array(a) => format!("array of {}", a.elem_type()),
            v => v.value_type().name().to_owned(),
        }
    }

    /// Any integer variant, widened; `None` for floats, bools, strings and arrays.
    pub(crate) fn integer(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as u32 if it is an integer of any width whose value fits (real files store
    /// the same key as u32, i32 or u64 depending on the converter).
    pub fn as_u32(&self) -> Option<u32> {
        self.integer().and_then(|v| v.try_into().ok())
    }

    /// The value as u64 if it is an integer of any width whose value fits.
    pub fn as_u64(&self) -> Option<u64> {
        self.integer().and_then(|v| v.try_into().ok())
    }

    /// The value as i64 if it is an integer of any width whose value fits.
    pub fn as_i64(&self) -> Option<i64> {
        self.integer().and_then(|v| v.try_into().ok())
    }

    /// The value as i32 if it is an integer of any width whose value fits.
    pub fn as_i32(&self) -> Option<i32> {
        self.integer().and_then(|v| v.try_into().ok())
    }

    /// The value if it is an f32 (no conversion from f64 or integers).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The value if it is a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The value if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(v) => Some(v),
            _ => None,
        }
    }

    /// The value if it is an array of strings.
    pub fn as_str_array(&self) -> Option<&[String]> {
        match self {
            Value::Array(Array::String(v)) => Some(v),
            _ => None,
        }
    }

    /// The value if it is an array of f32.
    pub fn as_f32_array(&self) -> Option<&[f32]> {
        match self {
            Value::Array(Array::F32(v)) => Some(v),
            _ => None,
        }
    }

    /// The value if it is an array of i32 (no conversion from other integer arrays).
    pub fn as_i32_array(&self) -> Option<&[i32]> {
        match self {
            Value::Array(Array::I32(v)) => Some(v),
            _ => None,
        }
    }

    /// The value if it is an array of u32 (no conversion from other integer arrays).
    pub fn as_u32_array(&self) -> Option<&[u32]> {
        match self {
            Value::Array(Array::U32(v)) => Some(v),
            _ => None,
        }
    }
}

impl Array {
    /// The values of an array of integers of any width, or `None` for another element type.
    pub fn integers(&self) -> Option<Vec<i128>> {
        fn all<T: Copy + Into<i128>>(v: &[T]) -> Vec<i128> {
            v.iter().map(|&x| x.into()).collect()
        }
        Some(match self {
            Array::U8(v) => all(v),
            Array::I8(v) => all(v),
            Array::U16(v) => all(v),
            Array::I16(v) => all(v),
            Array::U32(v) => all(v),
            Array::I32(v) => all(v),
            Array::U64(v) => all(v),
            Array::I64(v) => all(v),
            _ => return None,
        })
    }

    /// 0/1 flags from an array of booleans or integers (per-layer switches such as
    /// `attention.recurrent_layers`), or `None` for another element type.
    pub fn flags(&self) -> Option<Vec<bool>> {
        match self {
            Array::Bool(v) => Some(v.clone()),
            _ => self
                .integers()
                .map(|v| v.into_iter().map(|x| x != 0).collect()),
        }
    }

    /// The element type ([`ValueType::Array`] for arrays of arrays).
    pub fn elem_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
            Array::Array(_) => ValueType::Array,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Array(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nesting depth: 1 for an array of scalars, 1 + the deepest inner array otherwise.
    pub fn depth(&self) -> usize {
        match self {
            Array::Array(inner) => 1 + inner.iter().map(Array::depth).max().unwrap_or(0),
            _ => 1,
        }
    }
}

macro_rules! conversions {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(v)
            }
        }
        impl From<Vec<$t>> for Array {
            fn from(v: Vec<$t>) -> Self {
                Array::$variant(v)
            }
        }
    )*};
}

conversions!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, u64 => U64, i64 => I64, f64 => F64, Array => Array,
);

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}

/// Fixed-size little-endian scalars: the numeric value types, read and written one way.
pub(crate) trait LeScalar: Sized + Copy {
    /// Bytes per value.
    const SIZE: usize;
    /// Decodes from exactly `SIZE` bytes.
    fn from_le(bytes: &[u8]) -> Self;
    /// Appends the encoding.
    fn put_le(self, out: &mut Vec<u8>);
}

macro_rules! le_scalar {
    ($($t:ty),*) => {$(
        impl LeScalar for $t {
            const SIZE: usize = size_of::<$t>();
            fn from_le(bytes: &[u8]) -> Self {
                let mut a = [0u8; size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

le_scalar!(u8, i8, u16, i16, u32, i32, f32, u64, i64, f64);
