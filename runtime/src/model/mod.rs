//! Models: typed configs resolved from GGUF metadata and the forward graph, written once against
//! the [`Backend`] trait that the CPU reference and the wgpu backend implement.

mod backend;

pub use backend::*;
