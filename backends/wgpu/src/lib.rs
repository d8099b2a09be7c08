//! The wgpu backend: adapter discovery and selection, the capability profile, weight upload into
//! moetile's GPU layouts, the pipeline cache over generated kernels, and dispatch.
//!
//! Every kernel is a [`moetile_codegen::KernelKey`] specialization generated and validated at
//! build time; the key also sizes every dispatch, so a shader can never run on another key's
//! grid. [`WgpuContext`] holds a device with moetile's kernels; ops ([`moe`], [`ops`],
//! [`attention`]) record on it through a [`Recorder`]; [`WgpuBackend`] implements
//! `moetile::model::Backend` with them, so the forward graph runs on the GPU. [`WgpuContext::new`] opens a device of its own; an application that already has one
//! shares it with [`WgpuContext::from_device`].
//!
//! # Embedding in a wgpu application
//!
//! The application owns the instance, adapter, device and queue, and asks for what moetile
//! needs when it creates the device ([`requirements::DeviceRequest`]: no required feature, a
//! few limits measured from the kernels, the optional features it has). moetile owns what it
//! creates on that device: weights, KV caches, pooled buffers, pipelines. It submits its own
//! command buffers to the shared queue (one per forward pass), catches its own errors in
//! thread-local error scopes, and sets no device callback. There is no global state: any
//! number of contexts, backends and models can share a device (one `Arc<WgpuContext>` shares
//! the compiled kernels too).
//!
//! Each `Generator::step` of `moetile::generate` is one forward pass: one submission, then a
//! wait for the device to finish it and a read of the logits. Call it once per frame, or run
//! generation on a worker thread (the context is `Send + Sync`; backends, models and sessions
//! are `Send`); the module docs of `moetile::generate` say what blocks and for how long.
//!
//! ```
//! use std::sync::Arc;
//! use moetile::generate::{Generator, StopConditions};
//! use moetile::gguf::GgufFile;
//! use moetile::model::Model;
//! use moetile::sample::SamplerConfig;
//! use moetile::session::Session;
//! use moetile::synth::{Mix, Preset, Synth};
//! use moetile::tokenizer::Tokenizer;
//! use moetile_wgpu::{DeviceRequest, WgpuBackend, WgpuContext};
//!
//! # fn main() -> anyhow::Result<()> {
//! // The application's own device, created with moetile's needs merged into its own.
//! let instance = moetile_wgpu::adapter::instance(&Default::default());
//! # if moetile_wgpu::adapter::list_adapters(&instance).is_empty() { return Ok(()); }
//! let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
//! let request = DeviceRequest::new(&adapter)?.with(wgpu::Features::empty(), &wgpu::Limits::default());
//! let (device, queue) = pollster::block_on(adapter.request_device(&request.descriptor("app")))?;
//!
//! // moetile on the same device and queue (the handles are clones sharing one device).
//! let ctx = Arc::new(WgpuContext::from_device(&adapter, device.clone(), queue.clone())?);
//! let mut gpu = WgpuBackend::new(ctx);
//!
//! // A tiny random-weight model, synthesized in memory (GgufFile::open maps a file instead).
//! let mut bytes = Vec::new();
//! let preset = Preset::by_name("tiny-qwen3moe")?.with_layers(1)?;
//! Synth::new(preset, Mix::Q8_0, 7).write_to(&mut bytes, &mut |_, _| {})?;
//! let file = GgufFile::from_bytes(bytes)?;
//! let model = Model::load(&file, &mut gpu, &mut |_| {})?;
//! let tokenizer = Tokenizer::from_gguf(&file)?;
//!
//! let mut session = Session::new(&model, &mut gpu, &Default::default())?;
//! let prompt = tokenizer.encode("Once upon a time", true, true);
//! let stop = StopConditions::new(4, &tokenizer);
//! let mut generator =
//!     Generator::new(&mut session, &tokenizer, &prompt, SamplerConfig::greedy(), stop)?;
//! // One forward pass per call: the frame loop would call this once per frame.
//! while let Some(step) = generator.step(&model, &mut gpu)? {
//!     println!("{step:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! The routed-MoE layer alone is [`moe::run`]:
//!
//! ```
//! use moetile::model::{ExpertActivation, ExpertWeights, MoeParams, WeightData};
//! use moetile::quant::GgmlType;
//! use moetile::tile::TileWidth;
//! use moetile_wgpu::moe::{self, MoeInputs, MoeOptions, Routing};
//! use moetile_wgpu::{ActType, ContextOptions, WgpuContext};
//!
//! # fn main() -> Result<(), moetile_wgpu::WgpuError> {
//! # if moetile_wgpu::adapter::list_adapters(&moetile_wgpu::adapter::instance(&Default::default())).is_empty() {
//! #     return Ok(());
//! # }
//! let ctx = WgpuContext::new(&ContextOptions::default())?;
//! let (d, f, e, k) = (256, 64, 4, 2);
//! let tensor = |rows: usize, cols: usize| vec![0u8; e * rows * cols * 2]; // F16 zeros
//! let (gate, up, down) = (tensor(f, d), tensor(f, d), tensor(d, f));
//! let w = |name, bytes: &'static [u8], dims: &'static [usize]| WeightData {
//!     name, ty: GgmlType::F16, dims, bytes,
//! };
//! # let gate: &'static [u8] = gate.leak(); let up: &'static [u8] = up.leak();
//! # let down: &'static [u8] = down.leak();
//! // gate and up of one type and shape: one tensor of interleaved rows.
//! let gate_up = ctx.upload_gate_up(&w("gate", gate, &[256, 64, 4]), &w("up", up, &[256, 64, 4]))?;
//! let down = ctx.upload_experts(&w("down", down, &[64, 256, 4]))?;
//! let x = ctx.buffers().matrix_from_host(3, d, ActType::F32, &vec![1.0; 3 * d])?;
//! let routing = Routing::from_host(&ctx.buffers(), e, k, &[0, 1, 2, 3, 1, 0], &[0.5; 6])?;
//! let params = MoeParams { activation: ExpertActivation::SwiGlu, tile: TileWidth::T32 };
//! let opts = MoeOptions::new(&ctx, &params, 3);
//! let experts = ExpertWeights { gate_up: &gate_up, down: &down };
//! let inputs = MoeInputs { x: &x, norm: None, routing: &routing, experts, biases: None };
//! let out = moe::run(&ctx, &inputs, &opts)?;
//! assert_eq!(ctx.read_matrix(&out)?.len(), 3 * d);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod adapter;
pub mod attention;
mod backend;
pub mod bench;
mod buffers;
mod context;
pub mod deepseek4;
pub mod delta_net;
mod dispatch;
mod encoder;
mod error;
pub mod kernels;
pub mod layout;
pub mod moe;
pub mod ops;
mod pipelines;
mod plan;
mod pool;
mod profile;
mod readback;
mod recorder;
pub mod requirements;
mod timer;
pub mod tune;
mod upload;

pub use adapter::{AdapterChoice, Profile};
pub use attention::{ATTN_DECODE_MAX_TOKENS, AttentionKernel, DECODE_MAX_SPLITS, KvCache};
pub use backend::{BackendOptions, HostTimes, WgpuBackend};
pub use buffers::{Buffers, GpuMatrix};
pub use context::{ContextOptions, WgpuContext};
pub use encoder::ParamSlot;
pub use error::{Result, WgpuError};
pub use kernels::ShaderChecks;
pub use layout::{ExpertTensor, GgmlWeight};
pub use moe::{
    ExpertMap, MapContents, Matmul, MoeBuffers, MoeInputs, MoeOptions, MoePlan, Routing,
    mat_vec_max_tokens,
};
pub use moetile_codegen::{
    ActType, EltOp, HEAD_DIMS, KernelKey, MatmulKey, MvEpilogue, Path, WeightType,
};
pub use ops::rope_angles;
pub use pool::PooledBuffer;
pub use profile::{ProfileReport, ProfileRow};
pub use recorder::Recorder;
pub use requirements::DeviceRequest;
pub use timer::{TimedPass, Timer};
