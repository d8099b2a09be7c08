//! moetile: run Mixture-of-Experts language models stored as GGUF.
//!
//! This crate holds everything that is not GPU code: the GGUF reader and writer, the quant
//! formats with their CPU dequantization, model configs and the forward graph (written against
//! the [`model::Backend`] trait), the token-tile policy, sessions, sampling, the tokenizer, the
//! chat template (and the channels of gpt-oss's [`harmony`] answers), the generation driver
//! ([`generate`]) and synthetic random-weight models ([`synth`]). Backends live in
//! `moetile-cpu` (the reference) and `moetile-wgpu`.
//!
//! The whole flow: open a GGUF ([`gguf::GgufFile::open`] maps a path; [`from_bytes`] and
//! [`from_buffer`] take memory), load it onto a backend, start a [`session::Session`] (the KV
//! cache of one conversation), and generate with a [`generate::Generator`] one forward pass
//! per step. Here a tiny random-weight model is synthesized in memory and run on the CPU
//! reference; `moetile_wgpu::WgpuBackend` is used the same way.
//!
//! Below the generator, [`session::Session::prefill`] and [`session::Session::decode`] feed
//! tokens and return logits, and [`sample::Sampler`] picks a token from them.
//!
//! [`from_bytes`]: gguf::GgufFile::from_bytes
//! [`from_buffer`]: gguf::GgufFile::from_buffer
//!
//! ```
//! use moetile::generate::{Generator, Step, StopConditions};
//! use moetile::gguf::GgufFile;
//! use moetile::model::Model;
//! use moetile::sample::SamplerConfig;
//! use moetile::session::Session;
//! use moetile::synth::{Mix, Preset, Synth};
//! use moetile::tokenizer::Tokenizer;
//! use moetile::RuntimeConfig;
//!
//! # fn main() -> moetile::Result<()> {
//! let preset = Preset::by_name("tiny-qwen3moe")?.with_layers(1)?;
//! let mut bytes = Vec::new();
//! Synth::new(preset, Mix::Q8_0, 7).write_to(&mut bytes, &mut |_, _| {})?;
//! let file = GgufFile::from_bytes(bytes)?;
//!
//! let mut backend = moetile_cpu::CpuBackend::new();
//! let model = Model::load(&file, &mut backend, &mut |_| {})?;
//! let tokenizer = Tokenizer::from_gguf(&file)?;
//! drop(file); // the weights live on the backend now
//!
//! let mut session = Session::new(&model, &mut backend, &RuntimeConfig::default())?;
//! let prompt = tokenizer.encode("Once upon a time", true, true);
//! let sampler = SamplerConfig { seed: 42, ..SamplerConfig::default() };
//! let stop = StopConditions::new(8, &tokenizer);
//! let mut generator = Generator::new(&mut session, &tokenizer, &prompt, sampler, stop)?;
//! let mut text = String::new();
//! for step in generator.steps(&model, &mut backend) {
//!     if let Step::Token { text: piece, .. } | Step::Stopped { text: piece, .. } = step? {
//!         text.push_str(&piece);
//!     }
//! }
//! assert!(generator.timings().generated_tokens <= 8);
//! # let _ = text; Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod chat;
pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod harmony;
pub mod model;
pub mod quant;
pub mod sample;
pub mod session;
pub mod synth;
pub mod tile;
pub mod tokenizer;

pub use config::RuntimeConfig;
pub use error::{Error, Result};
