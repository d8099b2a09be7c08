//! Models: typed configs resolved from GGUF metadata and the forward graph, written once against
//! the [`Backend`] trait that the CPU reference and the wgpu backend implement.

mod backend;
mod config;
pub mod deepseek4;
mod forward;
pub mod gptoss;
pub mod qwen35moe;
mod weights;

pub use backend::*;
pub use config::{Arch, ModelConfig, MoeConfig};
pub use forward::{Logits, Model};
pub use weights::{
    AttentionWeights, Blocks, DenseFfn, FfnWeights, LayerWeights, LoadProgress, ModelWeights,
    StandardWeights, load_weights,
};
