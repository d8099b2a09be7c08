//! The wgpu backend: adapter discovery and selection, the capability profile, weight upload into
//! moetile's GPU layouts, the pipeline cache over generated kernels, and dispatch.
//!
//! Every kernel is a [`moetile_codegen::KernelKey`] specialization generated and validated at
//! build time; the key also sizes every dispatch, so a shader can never run on another key's
//! grid. [`WgpuContext`] owns a device and hosts the ops; [`WgpuBackend`] implements
//! `moetile::model::Backend` on it, so the forward graph runs on the GPU:
//!
//! ```no_run
//! use std::sync::Arc;
//! use moetile::gguf::GgufFile;
//! use moetile::model::{Logits, Model};
//! use moetile::session::Session;
//! use moetile_wgpu::{AdapterChoice, WgpuBackend, WgpuContext};
//!
//! # fn main() -> anyhow::Result<()> {
//! let ctx = Arc::new(WgpuContext::new(&AdapterChoice::Default)?);
//! let mut gpu = WgpuBackend::new(ctx);
//! let file = GgufFile::open(std::path::Path::new("model.gguf"))?;
//! let model = Model::load(&file, &mut gpu, &mut |_| {})?;
//! let mut session = Session::new(&model, &mut gpu, &Default::default())?;
//! let logits = session.prefill(&model, &mut gpu, &[1, 2, 3], Logits::Last)?;
//! # let _ = logits; Ok(()) }
//! ```
//!
//! The routed-MoE layer alone is [`WgpuContext::moe`]:
//!
//! ```no_run
//! use moetile::model::{ExpertActivation, ExpertWeights, MoeParams, WeightData};
//! use moetile::quant::GgmlType;
//! use moetile::tile::TileWidth;
//! use moetile_wgpu::{ActType, AdapterChoice, MoeOptions, WgpuContext};
//!
//! # fn main() -> Result<(), moetile_wgpu::WgpuError> {
//! let ctx = WgpuContext::new(&AdapterChoice::Default)?;
//! let (d, f, e, k) = (256, 64, 4, 2);
//! let tensor = |rows: usize, cols: usize| vec![0u8; e * rows * cols * 2]; // F16 zeros
//! let (gate, up, down) = (tensor(f, d), tensor(f, d), tensor(d, f));
//! let w = |name, bytes: &'static [u8], dims: &'static [usize]| WeightData {
//!     name, ty: GgmlType::F16, dims, bytes,
//! };
//! # let gate: &'static [u8] = gate.leak(); let up: &'static [u8] = up.leak();
//! # let down: &'static [u8] = down.leak();
//! let gate = ctx.upload_experts(&w("gate", gate, &[256, 64, 4]))?;
//! let up = ctx.upload_experts(&w("up", up, &[256, 64, 4]))?;
//! let down = ctx.upload_experts(&w("down", down, &[64, 256, 4]))?;
//! let x = ctx.matrix_from_host(3, d, ActType::F32, &vec![1.0; 3 * d])?;
//! let routing = ctx.routing_from_host(e, k, &[0, 1, 2, 3, 1, 0], &[0.5; 6])?;
//! let params = MoeParams { activation: ExpertActivation::SwiGlu, tile: TileWidth::T32 };
//! let opts = MoeOptions::new(&ctx, &params, 3);
//! let out = ctx.moe(&x, &routing, ExpertWeights { gate: &gate, up: &up, down: &down }, &opts)?;
//! assert_eq!(ctx.read_matrix(&out)?.len(), 3 * d);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod adapter;
mod attention;
mod backend;
pub mod bench;
mod context;
mod encoder;
mod error;
pub mod kernels;
pub mod layout;
mod moe;
mod ops;
mod pool;
mod profile;
mod timer;

pub use adapter::{AdapterChoice, Profile};
pub use attention::{ATTN_DECODE_MAX_TOKENS, AttentionKernel, KvCache};
pub use backend::{BackendOptions, WgpuBackend};
pub use context::{GpuMatrix, WgpuContext};
pub use encoder::{Encoder, ParamSlot};
pub use error::{Result, WgpuError};
pub use kernels::ShaderChecks;
pub use layout::ExpertTensor;
pub use moe::{ExpertMap, MapContents, MoeBuffers, MoeOptions, Routing, mat_vec_max_tokens};
pub use moetile_codegen::{ActType, EltOp, KernelKey, MatmulKey, Path, WeightType};
pub use ops::rope_angles;
pub use pool::PooledBuffer;
pub use profile::{ProfileReport, ProfileRow};
pub use timer::{TimedPass, Timer};
