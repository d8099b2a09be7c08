//! The example as a user runs it: the binary synthesizes its tiny model, runs its own shader
//! and the model on one device, prints both results and fails when a check does. (That its
//! tokens are those of `moetile run --json` is checked in the CLI's tests, which can run both.)

use std::process::Command;

use moetile_embed_example::{Settings, run};
use moetile_wgpu::adapter::{instance, list_adapters};
use serde_json::Value;

/// Whether an adapter exists (see [`moetile_tests::skip_without_gpu`]).
fn have_gpu() -> bool {
    let options = moetile_wgpu::ContextOptions::from_env().unwrap();
    let any = !list_adapters(&instance(&options)).is_empty();
    if !any {
        moetile_tests::skip_without_gpu(&"no adapter");
    }
    any
}

#[test]
fn the_example_runs_its_shader_and_a_model_on_one_device() {
    if !have_gpu() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_moetile-embed-example"))
        .args(["--json", "-n", "8", "--seed", "3"])
        .env_remove("MOETILE_TILE_MAX")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["shader_ok"], true, "{report}");
    assert_eq!(report["shader_values"], 4096);
    let tokens = report["token_ids"].as_array().unwrap();
    assert_eq!(tokens.len(), 8, "{report}");
    // One frame before the model, then one per generation step: 8 tokens and the stop.
    assert_eq!(report["frames"], 10, "{report}");

    // The library gives the same run in-process.
    let settings = Settings {
        n_predict: 8,
        sampler: moetile::sample::SamplerConfig {
            seed: 3,
            ..Settings::default().sampler
        },
        ..Settings::default()
    };
    let again = run(&settings).unwrap();
    let ids: Vec<u64> = tokens.iter().map(|t| t.as_u64().unwrap()).collect();
    assert_eq!(
        again
            .token_ids
            .iter()
            .map(|&t| t as u64)
            .collect::<Vec<_>>(),
        ids
    );
}
