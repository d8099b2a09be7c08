//! The embedding example (`examples/embed`) against the CLI: on a device of its own it runs its
//! shader and a model, and generates exactly the tokens `moetile run --json` does with the same
//! model and settings; its built-in tiny model is the one `moetile synth` writes.

use moetile_embed_example::{Settings, TINY_SYNTH_ARGS, run, synth_tiny_model};
use moetile_wgpu::adapter::{instance, list_adapters};
use serde_json::Value;

use crate::{moetile, stdout_of, tiny_model};

/// Whether an adapter exists (see [`moetile_tests::skip_without_gpu`]).
fn have_gpu() -> bool {
    let options = moetile_wgpu::ContextOptions::from_env().unwrap();
    let any = !list_adapters(&instance(&options)).is_empty();
    if !any {
        moetile_tests::skip_without_gpu(&"no adapter");
    }
    any
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn the_embed_example_generates_what_run_json_does() {
    if !have_gpu() {
        return;
    }
    let model = tiny_model();
    for settings in [
        Settings::default(),
        Settings {
            prompt: "<|im_start|>user\nHello<|im_end|>".to_string(),
            n_predict: 6,
            ignore_eos: false,
            sampler: moetile::sample::SamplerConfig {
                temperature: 1.3,
                top_k: 0,
                min_p: 0.0,
                repeat_penalty: 1.1,
                seed: 9,
                ..Default::default()
            },
            ..Settings::default()
        },
    ] {
        let settings = Settings {
            model: Some(model.to_path_buf()),
            ..settings
        };
        let report = run(&settings).unwrap();
        report.check(&settings).unwrap();
        assert!(report.shader_ok && report.frames > 1, "{report:?}");

        let out = stdout_of(moetile().args(settings.moetile_run_args(model)));
        let cli: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report.prompt_token_ids, ids(&cli["prompt_token_ids"]));
        assert_eq!(report.token_ids, ids(&cli["token_ids"]), "{settings:?}");
        assert_eq!(report.stop_reason, cli["stop_reason"].as_str().unwrap());
    }
}

#[test]
fn the_embed_examples_tiny_model_is_the_one_moetile_synth_writes() {
    let dir = tempfile::tempdir().unwrap();
    let ours = synth_tiny_model(dir.path()).unwrap();
    let cli = dir.path().join("cli.gguf");
    stdout_of(
        moetile()
            .args(TINY_SYNTH_ARGS)
            .args(["-o", cli.to_str().unwrap()]),
    );
    assert!(std::fs::read(ours).unwrap() == std::fs::read(cli).unwrap());
}
