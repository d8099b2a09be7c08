//! The crate's error type: every message names the culprit and, where there is one, the fix.

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting (config field, environment variable, flag) has a value outside its domain.
    #[error("invalid {name} = {value:?}: {expected}")]
    InvalidSetting {
        /// Where the value came from, e.g. `MOETILE_TILE_MAX`.
        name: String,
        /// The value as given.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// `general.architecture` names an architecture moetile does not run.
    #[error("unsupported model architecture {name:?}; supported: {supported}")]
    UnsupportedArch {
        /// The architecture found.
        name: String,
        /// Comma-separated supported names.
        supported: String,
    },
    /// An op the model needs that this backend does not implement yet.
    #[error("{op} is not implemented on {backend} yet; run it on the CPU reference (--cpu)")]
    UnsupportedOp {
        /// The op.
        op: String,
        /// The backend's description.
        backend: String,
    },
    /// A model whose metadata or tensors are inconsistent.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// A tensor type this operation does not implement.
    #[error("{op} does not support tensor type {ty}; convert the model to a supported type")]
    UnsupportedType {
        /// The type found.
        ty: crate::quant::GgmlType,
        /// What was attempted, e.g. "CPU dequantization".
        op: &'static str,
    },
    /// A buffer that is not a whole number of blocks of its type.
    #[error("{ty}: {bytes} bytes do not hold {values} values in whole blocks")]
    BlockMismatch {
        /// The type.
        ty: crate::quant::GgmlType,
        /// Values asked for.
        values: usize,
        /// Bytes given.
        bytes: usize,
    },
    /// Operands whose shapes do not fit the op (a model whose tensors disagree with its config).
    #[error("{op}: shape mismatch: {detail}")]
    Shape {
        /// The op.
        op: String,
        /// The shapes involved.
        detail: String,
    },
    /// The KV cache is full.
    #[error(
        "the context holds {n_ctx} tokens but {needed} are needed; start a new session or raise --ctx"
    )]
    ContextFull {
        /// Context length.
        n_ctx: usize,
        /// Positions the request needs.
        needed: usize,
    },
    /// A file that would be overwritten without permission.
    #[error("{} already exists; choose another path or allow overwriting (--force)", path.display())]
    OutputExists {
        /// The existing file.
        path: std::path::PathBuf,
    },
    /// A GGUF file that cannot be read or written, or lacks a metadata key.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// Values to quantize that do not fill whole blocks.
    #[error(
        "{ty}: {values} values are not a whole number of {block}-value blocks; quantize rows whose length is a multiple of {block}"
    )]
    PartialBlock {
        /// The type asked for.
        ty: crate::quant::GgmlType,
        /// Values given.
        values: usize,
        /// Values per block of `ty`.
        block: usize,
    },
    /// A NaN or infinity among values to quantize.
    #[error("{ty} quantization: value #{index} is {value}; quantizers need finite values")]
    NonFinite {
        /// The type asked for.
        ty: crate::quant::GgmlType,
        /// Position of the first non-finite value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A backend failure (GPU device lost, out of memory, missing feature...).
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// The GGUF's tokenizer metadata is malformed or of a kind moetile does not read.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Text was to be encoded or decoded with a model file that carries no tokenizer (as
    /// llama.cpp's test models, which run on token ids alone).
    #[error(
        "this model file has no tokenizer (tokenizer.ggml.model is absent, \"none\" or \"no_vocab\"); \
         give the prompt as token ids"
    )]
    NoTokenizer,
    /// A chat template that does not parse or fails while rendering.
    #[error("chat template: {0}")]
    ChatTemplate(String),
}
