//! Pipelines at load: `Backend::prepare` creates every kernel a generation runs (prefill
//! chunks of every tile width, decode, and the mat-vec path where it is on), so the forward
//! passes create none; the pipeline cache on disk is written, and a corrupt one is ignored.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use moetile::RuntimeConfig;
use moetile::gguf::GgufFile;
use moetile::model::{Backend, Logits, Model};
use moetile::session::Session;
use moetile_wgpu::{ActType, BackendOptions, ContextOptions, WgpuBackend, WgpuContext};

/// A fresh context (kernel counts are per context) caching pipelines in `dir`.
fn context(dir: &Path) -> Option<Arc<WgpuContext>> {
    common::ctx()?;
    let options = ContextOptions {
        pipeline_cache_dir: Some(dir.to_path_buf()),
        ..ContextOptions::from_env().unwrap()
    };
    Some(Arc::new(WgpuContext::new(&options).unwrap()))
}

/// Loads the tiny model and prepares its kernels, with the device's default options.
fn load_and_prepare(ctx: &Arc<WgpuContext>) -> (WgpuBackend, Model<WgpuBackend>) {
    load_and_prepare_with(ctx, BackendOptions::for_device(ctx))
}

/// Loads the tiny model and prepares its kernels, with `options`.
fn load_and_prepare_with(
    ctx: &Arc<WgpuContext>,
    options: BackendOptions,
) -> (WgpuBackend, Model<WgpuBackend>) {
    let file = GgufFile::from_bytes(moetile_tests::tiny_model(1)).unwrap();
    let mut gpu = WgpuBackend::with_options(ctx.clone(), options).unwrap();
    let model = Model::load(&file, &mut gpu, &mut |_| {}).unwrap();
    let start = Instant::now();
    let mut last = (0, 0);
    gpu.prepare(&model.config, &mut |done, total| last = (done, total))
        .unwrap();
    eprintln!(
        "prepared {} kernels in {:.0} ms (pipeline cache on disk: {})",
        last.1,
        start.elapsed().as_secs_f64() * 1e3,
        ctx.caches_pipelines()
    );
    assert!(last.1 > 0 && last.0 == last.1, "progress {last:?}");
    (gpu, model)
}

fn cache_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moetile-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs batches of `sizes` tokens with `options` and checks that they create no kernel that
/// prepare did not.
fn check_prepared_cover(test: &str, options: fn(&WgpuContext) -> BackendOptions, sizes: &[u32]) {
    let dir = cache_dir(test);
    let Some(ctx) = context(&dir) else { return };
    let (mut gpu, model) = load_and_prepare_with(&ctx, options(&ctx));
    let prepared = ctx.created_kernels();
    let config = RuntimeConfig {
        ctx: Some(256),
        chunk: 160,
        ..RuntimeConfig::default()
    };
    let mut session = Session::new(&model, &mut gpu, &config).unwrap();
    for &n in sizes {
        let tokens: Vec<u32> = (0..n).map(|t| t % 50 + 1).collect();
        session
            .prefill(&model, &mut gpu, &tokens, Logits::Last)
            .unwrap();
    }
    assert_eq!(
        ctx.created_kernels(),
        prepared,
        "forward passes created kernels that prepare did not"
    );
    if ctx.caches_pipelines() {
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(files.len(), 1, "one cache file per adapter: {files:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prepared_kernels_cover_prefill_and_decode() {
    // Batches of 1 (decode), 3 (mat-vec sizes), 40, 70 and 140 tokens (every tile width).
    check_prepared_cover(
        "prepared_kernels_cover_prefill_and_decode",
        BackendOptions::for_device,
        &[140, 70, 40, 3, 1],
    );
}

/// The mat-vec path, which CPU adapters never take by default: with gate and up interleaved
/// at upload, decode-sized batches run `mv_glu` and `mv_sum` (f16 `mid`), which prepare
/// creates too.
#[test]
fn prepared_kernels_cover_the_mat_vec_path() {
    check_prepared_cover(
        "prepared_kernels_cover_the_mat_vec_path",
        |ctx| BackendOptions {
            mid: ActType::F16,
            mat_vec_max_tokens: 32,
            ..BackendOptions::for_device(ctx)
        },
        &[40, 3, 1],
    );
}

#[test]
fn a_corrupt_pipeline_cache_is_ignored() {
    let dir = cache_dir("a_corrupt_pipeline_cache_is_ignored");
    let Some(ctx) = context(&dir) else { return };
    if !ctx.caches_pipelines() {
        eprintln!("the adapter has no PIPELINE_CACHE: nothing to corrupt");
        return;
    }
    load_and_prepare(&ctx);
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    // A new context reads the corrupt file, warns, and works; preparing rewrites the file.
    let ctx = context(&dir).unwrap();
    let (mut gpu, model) = load_and_prepare(&ctx);
    let mut session = Session::new(&model, &mut gpu, &RuntimeConfig::default()).unwrap();
    session
        .prefill(&model, &mut gpu, &[1, 2, 3], Logits::Last)
        .unwrap();
    assert_ne!(
        std::fs::read(&file).unwrap(),
        bytes,
        "the file was rewritten"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
