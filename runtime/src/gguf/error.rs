//! Everything that can be wrong with a GGUF file or a metadata lookup, one variant per cause,
//! each naming the key, tensor or byte offset at fault and what was expected instead.

use crate::quant::GgmlType;

/// A GGUF read, validation, lookup or write failure.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// Opening, mapping, creating or writing a file failed.
    /// The I/O error is part of the message rather than a `source`, so error chains print it once.
    #[error("{context}: {error}")]
    Io {
        /// What was being done, with the path or tensor involved.
        context: String,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: starts with {found:02x?}, expected the magic bytes \"GGUF\"")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A version other than 2 or 3.
    #[error(
        "GGUF version {version} is not supported (this reader handles versions 2 and 3); \
         re-convert the model with a current llama.cpp convert_hf_to_gguf.py"
    )]
    UnsupportedVersion {
        /// The version field.
        version: u32,
    },
    /// A version field that reads as 2 or 3 only byte-swapped: a big-endian file.
    #[error(
        "big-endian GGUF (version field {raw:#010x}) is not supported; re-convert the \
         model without --bigendian"
    )]
    BigEndian {
        /// The version field as read little-endian.
        raw: u32,
    },
    /// The file ends before a field it declares.
    #[error("file truncated: {what} at byte {offset} needs {needed} bytes, only {available} left")]
    Truncated {
        /// The field being read.
        what: String,
        /// Byte offset of the field.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the file.
        available: usize,
    },
    /// An element count larger than the rest of the file could hold.
    #[error(
        "{what}: count {count} cannot fit in the {available} bytes left in the file \
         (at least {min_item_bytes} bytes each); the file is corrupt or truncated"
    )]
    CountTooLarge {
        /// What is being counted.
        what: String,
        /// The count read.
        count: u64,
        /// Smallest encoding of one item.
        min_item_bytes: usize,
        /// Bytes left in the file.
        available: usize,
    },
    /// A string length larger than the rest of the file.
    #[error(
        "{what}: string length {len} exceeds the {available} bytes left in the file; \
         the file is corrupt or truncated"
    )]
    StringTooLong {
        /// The string being read.
        what: String,
        /// The length read.
        len: u64,
        /// Bytes left in the file.
        available: usize,
    },
    /// A string that is not UTF-8.
    #[error("{what}: invalid UTF-8 at byte {offset}")]
    InvalidUtf8 {
        /// The string being read.
        what: String,
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// A metadata value type id the format does not define.
    #[error("{what}: unknown metadata value type id {id} (GGUF defines 0..=12)")]
    UnknownValueType {
        /// The value being read.
        what: String,
        /// The id read.
        id: u32,
    },
    /// A bool byte other than 0 or 1.
    #[error("{what}: bool byte is {byte}, expected 0 or 1")]
    InvalidBool {
        /// The value being read.
        what: String,
        /// The byte read.
        byte: u8,
    },
    /// Arrays of arrays nested deeper than the reader accepts.
    #[error("metadata key `{key}`: arrays nested deeper than {max} levels")]
    ArrayTooDeep {
        /// The key.
        key: String,
        /// The deepest nesting accepted.
        max: usize,
    },
    /// A metadata key that appears twice.
    #[error("metadata key `{key}` appears twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// A tensor name that appears twice.
    #[error("tensor `{name}` appears twice in the tensor table")]
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// `general.alignment` that is zero or not a power of two.
    #[error("general.alignment = {value}: must be a non-zero power of two (default 32)")]
    BadAlignment {
        /// The value found.
        value: i128,
    },
    /// A metadata key that is required but absent.
    #[error("metadata key `{key}` is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata key of another type than the accessor asked for.
    #[error("metadata key `{key}` is {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What the accessor reads.
        expected: &'static str,
        /// The type found, e.g. `"array of i32"`.
        found: String,
    },
    /// An integer metadata value outside the accessor's range.
    #[error("metadata key `{key}` = {value} does not fit in {expected}")]
    IntegerOutOfRange {
        /// The key.
        key: String,
        /// What the accessor reads.
        expected: &'static str,
        /// The value found.
        value: i128,
    },
    /// A tensor with more dimensions than ggml supports.
    #[error("tensor `{tensor}` has {n_dims} dimensions, at most {max} are supported")]
    TooManyDims {
        /// The tensor.
        tensor: String,
        /// The dimension count.
        n_dims: usize,
        /// The limit.
        max: usize,
    },
    /// A tensor with a zero-sized dimension.
    #[error("tensor `{tensor}` has a zero dimension: dims {dims:?}")]
    ZeroDim {
        /// The tensor.
        tensor: String,
        /// Its dims, ggml order.
        dims: Vec<u64>,
    },
    /// A tensor whose element or byte count overflows.
    #[error("tensor `{tensor}`: dims {dims:?} overflow the addressable size")]
    DimsOverflow {
        /// The tensor.
        tensor: String,
        /// Its dims, ggml order.
        dims: Vec<u64>,
    },
    /// A tensor type id that ggml does not define (or retired).
    #[error("tensor `{tensor}` has unknown ggml type id {id}")]
    UnknownTensorType {
        /// The tensor.
        tensor: String,
        /// The id read.
        id: u32,
    },
    /// A tensor whose rows are not whole blocks of its type.
    #[error(
        "tensor `{tensor}`: first dimension {row_len} is not a multiple of {ty}'s block of \
         {block_values} values"
    )]
    BlockMismatch {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
        /// Its first (row) dimension.
        row_len: usize,
        /// Values per block of `ty`.
        block_values: usize,
    },
    /// A tensor whose data offset is not a multiple of the alignment.
    #[error(
        "tensor `{tensor}`: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    UnalignedTensor {
        /// The tensor.
        tensor: String,
        /// Its offset relative to the data section.
        offset: u64,
        /// `general.alignment`.
        alignment: usize,
    },
    /// A tensor whose data lies (partly) past the end of the file.
    #[error(
        "tensor `{tensor}`: data at bytes {start}..{end} lies past the end of the file \
         ({file_len} bytes); the file is truncated"
    )]
    TensorOutOfBounds {
        /// The tensor.
        tensor: String,
        /// Absolute start offset.
        start: u64,
        /// Absolute end offset (exclusive).
        end: u64,
        /// File length.
        file_len: usize,
    },
    /// Two tensors whose data ranges overlap.
    #[error(
        "tensors `{first}` and `{second}` overlap: {second} starts at byte {second_start}, before {first} ends at {first_end}"
    )]
    OverlappingTensors {
        /// The tensor that starts first.
        first: String,
        /// Its end offset (exclusive).
        first_end: usize,
        /// The tensor that starts inside it.
        second: String,
        /// Its start offset.
        second_start: usize,
    },
    /// A writer's tensor data callback produced a byte count other than declared.
    #[error(
        "tensor `{tensor}`: the data callback wrote {written} bytes, its declared type and dims \
         need exactly {expected}"
    )]
    TensorLength {
        /// The tensor.
        tensor: String,
        /// Bytes declared.
        expected: usize,
        /// Bytes produced (or attempted, when more than declared).
        written: usize,
    },
    /// [`GgufWriter::to_bytes`](super::GgufWriter::to_bytes) got a data slice count other
    /// than the declared tensor count.
    #[error("{given} tensor data slices given for {declared} declared tensors")]
    TensorCount {
        /// Tensors declared.
        declared: usize,
        /// Slices given.
        given: usize,
    },
}
