//! moetile: run Mixture-of-Experts language models stored as GGUF.
//!
//! This crate holds everything that is not GPU code: the GGUF reader and writer, the quant
//! formats with their CPU dequantization, model configs and the forward graph (written against
//! the [`model::Backend`] trait), the token-tile policy, sessions, sampling, the tokenizer, the
//! chat template, the generation driver ([`generate`]) and synthetic random-weight models
//! ([`synth`]). Backends live in `moetile-cpu` (the reference) and `moetile-wgpu`.

pub mod chat;
pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod quant;
pub mod sample;
pub mod session;
pub mod synth;
pub mod tile;
pub mod tokenizer;

pub use config::RuntimeConfig;
pub use error::{Error, Result};
