//! Embedding: devices an application creates are checked against moetile's requirements (a
//! missing limit or an option's missing feature is a clear error, not a panic), a
//! `DeviceRequest` is what `WgpuContext::new` asks for, two models share one device with
//! interleaved generation equal to their solo runs, and everything can move to a worker thread.

mod common;

use std::sync::Arc;

use common::rng;
use moetile::RuntimeConfig;
use moetile::generate::{Generator, Step, StopConditions};
use moetile::gguf::GgufFile;
use moetile::model::Model;
use moetile::sample::SamplerConfig;
use moetile::session::Session;
use moetile::tokenizer::Tokenizer;
use moetile_wgpu::adapter::{instance, select};
use moetile_wgpu::requirements::{self, DeviceRequest, Limit};
use moetile_wgpu::{BackendOptions, ContextOptions, Path, WgpuBackend, WgpuContext, WgpuError};
use rand::Rng;

/// The adapter the other GPU tests use; `None` (skip) without one, unless
/// `MOETILE_REQUIRE_GPU=1`.
fn adapter() -> Option<wgpu::Adapter> {
    common::ctx()?;
    let options = ContextOptions::from_env().unwrap();
    Some(select(&instance(&options), &options).unwrap())
}

/// A device on `adapter` created with exactly `features` and `limits`.
fn create_device(
    adapter: &wgpu::Adapter,
    features: wgpu::Features,
    limits: wgpu::Limits,
) -> (wgpu::Device, wgpu::Queue) {
    let request = DeviceRequest {
        features,
        limits,
        experimental: wgpu::ExperimentalFeatures::disabled(),
    };
    pollster::block_on(adapter.request_device(&request.descriptor("test app"))).unwrap()
}

#[test]
fn a_device_without_a_limit_moetile_needs_is_refused_by_name() {
    let Some(adapter) = adapter() else { return };
    let needs = requirements::limit_needs(Path::Reg);
    let need = |l: Limit| needs.iter().find(|n| n.limit == l).unwrap().needed;

    // wgpu's defaults (and the downlevel ones) have 16 KiB of workgroup memory.
    for limits in [wgpu::Limits::default(), wgpu::Limits::downlevel_defaults()] {
        let actual = limits.max_compute_workgroup_storage_size;
        let (device, queue) = create_device(&adapter, wgpu::Features::empty(), limits);
        let err = WgpuContext::from_device(&adapter, device, queue).unwrap_err();
        eprintln!("{err}");
        let WgpuError::DeviceLimit {
            limit,
            needed,
            actual: got,
            ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(*limit, "max_compute_workgroup_storage_size");
        assert_eq!(
            (*needed, *got),
            (need(Limit::WorkgroupStorage), actual.into())
        );
        let text = err.to_string();
        for part in [
            "max_compute_workgroup_storage_size",
            &needed.to_string(),
            &actual.to_string(),
            "DeviceRequest::new",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
    }

    // Enough workgroup memory but the downlevel four storage buffers per stage.
    let limits = wgpu::Limits {
        max_compute_workgroup_storage_size: adapter.limits().max_compute_workgroup_storage_size,
        ..wgpu::Limits::downlevel_defaults()
    };
    let (device, queue) = create_device(&adapter, wgpu::Features::empty(), limits);
    let err = WgpuContext::from_device(&adapter, device, queue).unwrap_err();
    assert!(
        matches!(&err, WgpuError::DeviceLimit { limit, needed, actual: 4, .. }
            if *limit == "max_storage_buffers_per_shader_stage"
                && *needed == need(Limit::StorageBuffersPerStage)),
        "{err}"
    );

    // Exactly the required limits are enough, and nothing moetile needs is a feature.
    let (device, queue) = create_device(
        &adapter,
        requirements::REQUIRED_FEATURES,
        requirements::required_limits(),
    );
    let ctx = WgpuContext::from_device(&adapter, device, queue).unwrap();
    assert_eq!(ctx.profile().paths(), [Path::Reg]);
}

#[test]
fn a_cooperative_path_on_a_device_without_its_features_is_refused_by_name() {
    let Some(adapter) = adapter() else { return };
    // moetile's limits, none of the optional features.
    let limits = DeviceRequest::new(&adapter).unwrap().limits;
    let (device, queue) = create_device(&adapter, wgpu::Features::empty(), limits);
    let ctx = Arc::new(WgpuContext::from_device(&adapter, device, queue).unwrap());
    assert_eq!(BackendOptions::for_device(&ctx).path, Path::Reg);
    for path in [Path::Coop16, Path::Coop8] {
        let options = BackendOptions {
            path,
            ..BackendOptions::for_device(&ctx)
        };
        let err = WgpuBackend::with_options(ctx.clone(), options).unwrap_err();
        eprintln!("{err}");
        assert!(matches!(err, WgpuError::MissingFeature { .. }), "{err}");
        let text = err.to_string();
        for part in [
            &format!("{path:?}"),
            "EXPERIMENTAL_COOPERATIVE_MATRIX",
            "SHADER_F16",
            "SUBGROUP",
            "DeviceRequest",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
    }
    // The register path needs nothing more.
    let options = BackendOptions {
        path: Path::Reg,
        ..BackendOptions::for_device(&ctx)
    };
    WgpuBackend::with_options(ctx, options).unwrap();
}

#[test]
fn wgpu_context_new_asks_for_what_device_request_does() {
    let Some(adapter) = adapter() else { return };
    let ctx = common::ctx().unwrap();
    let request = DeviceRequest::new(&adapter).unwrap();
    assert_eq!(ctx.device().features(), request.features);
    assert_eq!(ctx.device().limits(), request.limits);
    assert!(requirements::unmet_limit(&request.limits, Path::Reg).is_none());
    // The recommended sizes: the adapter's largest.
    let offered = adapter.limits();
    assert_eq!(
        request.limits.max_storage_buffer_binding_size,
        offered.max_storage_buffer_binding_size
    );
    assert_eq!(request.limits.max_buffer_size, offered.max_buffer_size);
}

/// A model loaded onto its own backend on `ctx`.
struct Loaded {
    model: Model<WgpuBackend>,
    gpu: WgpuBackend,
    tokenizer: Tokenizer,
}

impl Loaded {
    fn new(ctx: &Arc<WgpuContext>, seed: u64) -> Loaded {
        let file = GgufFile::from_bytes(moetile_tests::tiny_model(seed)).unwrap();
        let mut gpu = WgpuBackend::new(ctx.clone());
        let model = Model::load(&file, &mut gpu, &mut |_| {}).unwrap();
        let tokenizer = Tokenizer::from_gguf(&file).unwrap();
        Loaded {
            model,
            gpu,
            tokenizer,
        }
    }

    /// A session with 3-token prefill chunks, so prefill takes several steps.
    fn session(&mut self) -> Session<WgpuBackend> {
        let config = RuntimeConfig {
            ctx: Some(128),
            chunk: 3,
            ..RuntimeConfig::default()
        };
        Session::new(&self.model, &mut self.gpu, &config).unwrap()
    }
}

fn settings(seed: u64) -> (SamplerConfig, StopConditions) {
    let sampler = SamplerConfig {
        seed,
        ..SamplerConfig::default()
    };
    let stop = StopConditions {
        max_tokens: 12,
        ..StopConditions::default()
    };
    (sampler, stop)
}

fn token(step: &Step) -> Option<u32> {
    match step {
        Step::Token { id, .. } => Some(*id),
        _ => None,
    }
}

/// The tokens `m` generates from `prompt` alone.
fn solo(m: &mut Loaded, prompt: &str, seed: u64) -> Vec<u32> {
    let mut session = m.session();
    let prompt = m.tokenizer.encode(prompt, true, true);
    let (sampler, stop) = settings(seed);
    let mut g = Generator::new(&mut session, &m.tokenizer, &prompt, sampler, stop).unwrap();
    g.steps(&m.model, &mut m.gpu)
        .map(|s| s.unwrap())
        .filter_map(|s| token(&s))
        .collect()
}

#[test]
fn two_models_on_one_device_interleave_like_their_solo_runs() {
    let Some(ctx) = common::shared_ctx() else {
        return;
    };
    let mut rng = rng("two_models_on_one_device_interleave_like_their_solo_runs");
    let (seed_a, seed_b) = (rng.random(), rng.random());
    let mut a = Loaded::new(ctx, seed_a);
    let mut b = Loaded::new(ctx, seed_b);
    let (prompt_a, prompt_b) = ("Once upon a time", "The experts of this layer are");
    let want_a = solo(&mut a, prompt_a, 1);
    let want_b = solo(&mut b, prompt_b, 2);
    assert_eq!((want_a.len(), want_b.len()), (12, 12));
    assert_ne!(want_a, want_b, "two models, two prompts");

    // One step of each in turn, prefill chunks included.
    let (mut session_a, mut session_b) = (a.session(), b.session());
    let (tokens_a, tokens_b) = (
        a.tokenizer.encode(prompt_a, true, true),
        b.tokenizer.encode(prompt_b, true, true),
    );
    let (sampler, stop) = settings(1);
    let mut gen_a = Generator::new(&mut session_a, &a.tokenizer, &tokens_a, sampler, stop).unwrap();
    let (sampler, stop) = settings(2);
    let mut gen_b = Generator::new(&mut session_b, &b.tokenizer, &tokens_b, sampler, stop).unwrap();
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let mut steps = 0;
    loop {
        let step_a = gen_a.step(&a.model, &mut a.gpu).unwrap();
        let step_b = gen_b.step(&b.model, &mut b.gpu).unwrap();
        if step_a.is_none() && step_b.is_none() {
            break;
        }
        got_a.extend(step_a.as_ref().and_then(token));
        got_b.extend(step_b.as_ref().and_then(token));
        steps += 1;
    }
    assert!(steps > 12, "prefill took steps too");
    assert_eq!(got_a, want_a, "model A (seed {seed_a})");
    assert_eq!(got_b, want_b, "model B (seed {seed_b})");
}

#[test]
fn context_backends_models_and_sessions_can_move_to_a_worker_thread() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Arc<WgpuContext>>();
    sync::<WgpuContext>();
    send::<WgpuBackend>();
    send::<Model<WgpuBackend>>();
    send::<Session<WgpuBackend>>();
    send::<GgufFile>();
    send::<Tokenizer>();
    sync::<Tokenizer>();

    let Some(ctx) = common::shared_ctx() else {
        return;
    };
    let mut m = Loaded::new(ctx, 3);
    let want = solo(&mut m, "Hello", 5);
    let worker = std::thread::spawn(move || solo(&mut m, "Hello", 5));
    assert_eq!(worker.join().unwrap(), want);
}
