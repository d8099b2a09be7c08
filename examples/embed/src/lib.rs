//! An application that owns a wgpu device and runs a moetile model on it, next to its own GPU
//! work: the pattern for games, editors and visualisers that want a model without a second
//! device or a CPU round trip.
//!
//! [`run`] does what such an application does:
//! 1. creates its instance, adapter, device and queue, asking for moetile's needs merged with
//!    its own ([`moetile_wgpu::DeviceRequest`]);
//! 2. runs its own compute shader ([`AppPass`], `data[i] = 3 * data[i] + 1` over a buffer);
//! 3. hands clones of the device and queue to moetile ([`WgpuContext::from_device`]), loads a
//!    model and starts a generation;
//! 4. runs a frame loop: each frame submits the application's pass and one generation step
//!    (one forward pass, see `moetile::generate`), until the generation stops;
//! 5. checks its buffer against the CPU and reports the tokens.
//!
//! The binary (`cargo run --release -p moetile-embed-example -- --help`) prints the results;
//! the tests check them, and that the tokens are those of `moetile run --json` with
//! [`Settings::moetile_run_args`].
//!
//! ```
//! # fn main() -> anyhow::Result<()> {
//! # if moetile_wgpu::adapter::list_adapters(&moetile_wgpu::adapter::instance(&Default::default())).is_empty() {
//! #     return Ok(());
//! # }
//! let settings = moetile_embed_example::Settings { n_predict: 4, ..Default::default() };
//! let report = moetile_embed_example::run(&settings)?;
//! report.check(&settings)?;
//! assert_eq!(report.token_ids.len(), 4);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use moetile::RuntimeConfig;
use moetile::generate::{Generator, Step, StopConditions};
use moetile::gguf::GgufFile;
use moetile::model::Model;
use moetile::sample::SamplerConfig;
use moetile::session::Session;
use moetile::synth::{Mix, Preset, Synth};
use moetile::tokenizer::Tokenizer;
use moetile_wgpu::{ContextOptions, DeviceRequest, WgpuBackend, WgpuContext};
use serde::Serialize;

/// The tiny model synthesized when none is given: `moetile synth` with [`TINY_SYNTH_ARGS`]
/// writes the same bytes.
const TINY: (&str, usize, Mix, u64) = ("tiny-qwen3moe", 2, Mix::Q8_0, 7);

/// The `moetile synth` arguments (before `-o FILE`) that write [`synth_tiny_model`]'s model.
pub const TINY_SYNTH_ARGS: [&str; 9] = [
    "synth",
    "--preset",
    "tiny-qwen3moe",
    "--layers",
    "2",
    "--quant",
    "q8_0",
    "--seed",
    "7",
];

/// Writes the tiny random-weight model (4 MB) to `dir/tiny.gguf` and returns its path.
pub fn synth_tiny_model(dir: &Path) -> Result<PathBuf> {
    let (preset, layers, mix, seed) = TINY;
    let path = dir.join("tiny.gguf");
    Synth::new(Preset::by_name(preset)?.with_layers(layers)?, mix, seed).write_file(
        &path,
        true,
        &mut |_, _| {},
    )?;
    Ok(path)
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The model; `None` synthesizes the tiny one into a temporary folder.
    pub model: Option<PathBuf>,
    /// The prompt (special tokens are recognised, as by `moetile run`).
    pub prompt: String,
    /// Tokens to generate.
    pub n_predict: usize,
    /// Go on past end-of-generation tokens, so exactly `n_predict` come out.
    pub ignore_eos: bool,
    /// Sampling; the penalties `moetile run` has no flag for keep their defaults.
    pub sampler: SamplerConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: None,
            prompt: "Once upon a time".to_string(),
            n_predict: 16,
            ignore_eos: true,
            sampler: SamplerConfig {
                seed: 42,
                ..SamplerConfig::default()
            },
        }
    }
}

impl Settings {
    /// The `moetile run --json` command line that generates the same tokens from `model`.
    pub fn moetile_run_args(&self, model: &Path) -> Vec<String> {
        let s = &self.sampler;
        let mut args: Vec<String> = [
            "run",
            "--json",
            "-m",
            &model.display().to_string(),
            "-p",
            &self.prompt,
            "-n",
            &self.n_predict.to_string(),
            "--temp",
            &s.temperature.to_string(),
            "--top-k",
            &s.top_k.to_string(),
            "--top-p",
            &s.top_p.to_string(),
            "--min-p",
            &s.min_p.to_string(),
            "--repeat-penalty",
            &s.repeat_penalty.to_string(),
            "--seed",
            &s.seed.to_string(),
        ]
        .map(String::from)
        .to_vec();
        if self.ignore_eos {
            args.push("--ignore-eos".to_string());
        }
        args
    }
}

/// What [`run`] saw.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The adapter, as moetile describes it.
    pub adapter: String,
    /// Frames run: each submitted the application's pass once.
    pub frames: u32,
    /// Values the application's shader computed and the CPU checked.
    pub shader_values: usize,
    /// Whether every value equals the CPU's, after the first frame and after the last.
    pub shader_ok: bool,
    /// The prompt's tokens.
    pub prompt_token_ids: Vec<u32>,
    /// The generated tokens.
    pub token_ids: Vec<u32>,
    /// Their text.
    pub text: String,
    /// Why generation stopped.
    pub stop_reason: String,
}

impl Report {
    /// Fails unless the application's shader computed the CPU's values and the model
    /// generated what `settings` ask for.
    pub fn check(&self, settings: &Settings) -> Result<()> {
        anyhow::ensure!(
            self.shader_ok,
            "the application's shader disagrees with the CPU"
        );
        anyhow::ensure!(!self.token_ids.is_empty(), "the model generated nothing");
        if settings.ignore_eos {
            anyhow::ensure!(
                self.token_ids.len() == settings.n_predict,
                "{} tokens generated, {} asked for",
                self.token_ids.len(),
                settings.n_predict
            );
        }
        Ok(())
    }
}

/// The application's own GPU work: `data[i] = 3 * data[i] + 1` (wrapping) over a buffer of
/// `u32`, once per frame.
pub struct AppPass {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    data: wgpu::Buffer,
    staging: wgpu::Buffer,
    len: u32,
}

const APP_SHADER: &str = r"
@group(0) @binding(0) var<storage, read_write> data: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&data)) {
        data[id.x] = 3u * data[id.x] + 1u;
    }
}
";

impl AppPass {
    /// The pipeline and a buffer holding `0..len`.
    pub fn new(device: &wgpu::Device, len: u32) -> AppPass {
        use wgpu::util::DeviceExt;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("app shader"),
            source: wgpu::ShaderSource::Wgsl(APP_SHADER.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("app pipeline"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let initial: Vec<u32> = (0..len).collect();
        let data = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("app data"),
            contents: bytemuck::cast_slice(&initial),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("app readback"),
            size: data.size(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("app bind group"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: data.as_entire_binding(),
            }],
        });
        AppPass {
            pipeline,
            bind_group,
            data,
            staging,
            len,
        }
    }

    /// Submits one pass (a frame's work); does not wait.
    pub fn frame(&self, device: &wgpu::Device, queue: &wgpu::Queue) {
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind_group, &[]);
            pass.dispatch_workgroups(self.len.div_ceil(64), 1, 1);
        }
        queue.submit([encoder.finish()]);
    }

    /// The buffer's values, once the device has finished everything submitted.
    pub fn read(&self, device: &wgpu::Device, queue: &wgpu::Queue) -> Result<Vec<u32>> {
        let mut encoder = device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.data, 0, &self.staging, 0, self.data.size());
        queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        self.staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        device.poll(wgpu::PollType::wait_indefinitely())?;
        rx.recv()??;
        let values = bytemuck::cast_slice(&self.staging.slice(..).get_mapped_range()?).to_vec();
        self.staging.unmap();
        Ok(values)
    }

    /// What the buffer holds after `frames` frames, computed on the CPU.
    pub fn expected(&self, frames: u32) -> Vec<u32> {
        (0..self.len)
            .map(|mut v| {
                for _ in 0..frames {
                    v = v.wrapping_mul(3).wrapping_add(1);
                }
                v
            })
            .collect()
    }
}

/// Values the application's shader works on.
const APP_VALUES: u32 = 4096;

/// Runs the application (see the crate docs).
pub fn run(settings: &Settings) -> Result<Report> {
    // 1. The application's device. It picks its adapter as it likes; this one uses moetile's
    // ranking, so that it runs on the adapter `moetile run` picks. Its own needs are wgpu's
    // default limits and no feature; moetile's are merged in. Like `moetile`, it honours
    // `WGPU_BACKEND`.
    let options = ContextOptions::from_env()?;
    let instance = moetile_wgpu::adapter::instance(&options);
    let adapter = moetile_wgpu::adapter::select(&instance, &options)?;
    let request = DeviceRequest::new(&adapter)?.with(wgpu::Features::empty(), &Default::default());
    let (device, queue) =
        pollster::block_on(adapter.request_device(&request.descriptor("embed example")))
            .context("requesting the application's device")?;

    // 2. Its own work, checked.
    let app = AppPass::new(&device, APP_VALUES);
    app.frame(&device, &queue);
    let mut frames = 1;
    let mut shader_ok = app.read(&device, &queue)? == app.expected(frames);

    // 3. moetile on the same device and queue.
    let ctx = Arc::new(WgpuContext::from_device(
        &adapter,
        device.clone(),
        queue.clone(),
    )?);
    let mut gpu = WgpuBackend::new(ctx.clone());
    let tmp = tempfile::tempdir()?;
    let path = match &settings.model {
        Some(path) => path.clone(),
        None => synth_tiny_model(tmp.path())?,
    };
    let file = GgufFile::open(&path).with_context(|| format!("{}", path.display()))?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let model = Model::load(&file, &mut gpu, &mut |_| {})?;
    drop(file);
    let mut session = Session::new(&model, &mut gpu, &RuntimeConfig::default())?;
    let prompt = tokenizer.encode(&settings.prompt, true, true);
    let mut stop = StopConditions::new(settings.n_predict, &tokenizer);
    if settings.ignore_eos {
        stop.end_tokens.clear();
    }
    let mut generator = Generator::new(&mut session, &tokenizer, &prompt, settings.sampler, stop)?;

    // 4. The frame loop: the application's pass and one forward pass per frame.
    let (mut token_ids, mut text) = (Vec::new(), String::new());
    let mut stop_reason = String::new();
    while let Some(step) = generator.step(&model, &mut gpu)? {
        app.frame(&device, &queue);
        frames += 1;
        match step {
            Step::Prefill { .. } => {}
            Step::Token { id, text: piece } => {
                token_ids.push(id);
                text.push_str(&piece);
            }
            Step::Stopped {
                reason,
                text: piece,
            } => {
                text.push_str(&piece);
                stop_reason = reason.to_string();
            }
        }
    }

    // 5. The application's buffer went through every frame.
    shader_ok &= app.read(&device, &queue)? == app.expected(frames);
    Ok(Report {
        adapter: ctx.profile().describe(),
        frames,
        shader_values: APP_VALUES as usize,
        shader_ok,
        prompt_token_ids: prompt,
        token_ids,
        text,
        stop_reason,
    })
}
