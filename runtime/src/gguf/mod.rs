//! GGUF files (versions 2 and 3): a validating reader over a memory map and a streaming writer.
//!
//! GGUF is llama.cpp's model format: a header of typed metadata (hyper-parameters, the
//! tokenizer, the chat template) and a tensor table, then the tensors' bytes, each at an offset
//! that is a multiple of `general.alignment`. [`GgufFile`] checks every count, string, offset
//! and shape when it opens a file, so later stages can trust what it returns; [`GgufWriter`]
//! writes the same format, streaming tensor data so that multi-gigabyte synthetic models never
//! sit in memory.
//!
//! ```
//! use moetile::gguf::{GgufFile, GgufWriter};
//! use moetile::quant::GgmlType;
//!
//! let mut w = GgufWriter::new();
//! w.add_metadata("general.architecture", "qwen3moe")?;
//! w.add_metadata("qwen3moe.block_count", 2u32)?;
//! w.add_tensor("output_norm.weight", GgmlType::F32, &[4])?;
//! let bytes = w.to_bytes(&[&[0u8; 16]])?;
//!
//! let file = GgufFile::from_bytes(bytes)?;
//! assert_eq!(file.get_str("general.architecture")?, "qwen3moe");
//! assert_eq!(file.get_u32("qwen3moe.block_count")?, 2);
//! let norm = file.tensor("output_norm.weight").expect("declared above");
//! assert_eq!(file.tensor_bytes(norm).len(), 16);
//! # Ok::<(), moetile::gguf::GgufError>(())
//! ```

mod error;
mod read;
mod tensor;
mod value;
mod write;

pub use error::GgufError;
pub use read::GgufFile;
pub use tensor::{MAX_DIMS, TensorInfo};
pub use value::{Array, Value, ValueType};
pub use write::GgufWriter;

/// The first four bytes of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The version the writer produces.
pub const WRITE_VERSION: u32 = 3;
/// Alignment of tensor data when the file has no `general.alignment`.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// The metadata key that sets the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Deepest nesting of arrays of arrays accepted (1 = an array of scalars). gguf-py writes
/// nested arrays; llama.cpp reads none, so any real file stays far below this bound, which
/// only exists to keep a hostile file from exhausting the stack.
pub const MAX_ARRAY_DEPTH: usize = 8;
