//! Scratch: measure GPU logits vs the float64 reference.

use std::sync::Arc;

use moetile::RuntimeConfig;
use moetile::gguf::GgufFile;
use moetile::model::{Logits, Model};
use moetile::session::Session;
use moetile::tile::TileWidth;
use moetile_tests::golden::{Golden, agreement};
use moetile_tests::model_fixture;
use moetile_wgpu::{ActType, AdapterChoice, BackendOptions, WgpuBackend, WgpuContext};

const FIXTURES: [&str; 8] = [
    "qwen3moe-small-f32",
    "qwen3moe-small-f16",
    "qwen3moe-small-q8_0",
    "qwen2moe-small-f32",
    "qwen3moe-kq-q4_k_m",
    "qwen3moe-kq-q2_k",
    "qwen3moe-kq-iq2_xxs",
    "qwen3moe-kq-pure-q5_k",
];

#[test]
fn profile() {
    let ctx = Arc::new(WgpuContext::new(&AdapterChoice::Default).unwrap());
    let name = "qwen3moe-kq-q4_k_m";
    let (model_path, ref_path, _) = model_fixture(name);
    let file = GgufFile::open(&model_path).unwrap();
    let golden = Golden::read(&ref_path).unwrap();
    let mut gpu = WgpuBackend::new(ctx.clone());
    let model = Model::load(&file, &mut gpu, &mut |_| {}).unwrap();
    let config = RuntimeConfig {
        ctx: Some(512),
        chunk: 512,
        ..Default::default()
    };
    for i in 0..3 {
        gpu.set_profiling(true).unwrap();
        let t0 = std::time::Instant::now();
        let mut session = Session::new(&model, &mut gpu, &config).unwrap();
        let _ = session
            .prefill(&model, &mut gpu, &golden.tokens, Logits::All)
            .unwrap();
        println!("run {i}: {:?}", t0.elapsed());
        println!("{}", gpu.take_profile().unwrap());
    }
}

#[test]
fn measure() {
    let ctx = Arc::new(WgpuContext::new(&AdapterChoice::Default).unwrap());
    eprintln!("{}", ctx.profile().describe());
    for name in FIXTURES {
        let (model_path, ref_path, _) = model_fixture(name);
        let file = GgufFile::open(&model_path).unwrap();
        let golden = Golden::read(&ref_path).unwrap();
        for (kv, mid) in [(ActType::F32, ActType::F32), (ActType::F16, ActType::F16)] {
            let opts = BackendOptions {
                kv,
                mid,
                poison: true,
                ..BackendOptions::for_device(&ctx)
            };
            let mut gpu = WgpuBackend::with_options(ctx.clone(), opts);
            let model = Model::load(&file, &mut gpu, &mut |_| {}).unwrap();
            for tile in TileWidth::ALL {
                let config = RuntimeConfig {
                    ctx: Some(512),
                    chunk: 128,
                    tile_max: Some(tile),
                    ..Default::default()
                };
                let t0 = std::time::Instant::now();
                let mut session = Session::new(&model, &mut gpu, &config).unwrap();
                let logits = session
                    .prefill(&model, &mut gpu, &golden.tokens, Logits::All)
                    .unwrap();
                let a = agreement(&logits, &golden.logits, golden.n_vocab);
                println!(
                    "{name} kv {kv:?} mid {mid:?} tile {tile}: {a:?} {:?}",
                    t0.elapsed()
                );
            }
        }
    }
}
