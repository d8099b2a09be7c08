//! Tile-cap tuning (`moetile_wgpu::tune`): the record's round trip and its defensive reading,
//! the cap's precedence with a record in a temporary folder (never the user's), and tuning on
//! the test device with a check forced to fail.

mod common;

use std::sync::Arc;

use moetile::RuntimeConfig;
use moetile::gguf::GgufFile;
use moetile::model::ModelConfig;
use moetile::tile::{TileCapSource, TileWidth};
use moetile_wgpu::tune::{
    self, AdapterId, ExpertMatmul, ExpertShape, MatmulRole, TUNING_FILE, TuneConfig, TunedEntry,
    TuningRecord, UnusablePath,
};
use moetile_wgpu::{ActType, ContextOptions, Path, WeightType, WgpuBackend, WgpuContext};

fn adapter(name: &str) -> AdapterId {
    AdapterId {
        name: name.to_string(),
        api: "Vulkan".to_string(),
        driver: "test 1.0".to_string(),
    }
}

fn shape(role: MatmulRole, rows: usize, cols: usize) -> ExpertShape {
    ExpertShape {
        role,
        weight: WeightType::Q4_K,
        act: ActType::F32,
        rows,
        cols,
        n_experts: 128,
        n_used: 8,
    }
}

fn entry(adapter: &AdapterId, shape: ExpertShape, ms: [f64; 3]) -> TunedEntry {
    let ms: Vec<(TileWidth, f64)> = TileWidth::ALL.into_iter().zip(ms).collect();
    let cap = ms
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(w, _)| *w)
        .unwrap();
    TunedEntry {
        adapter: adapter.clone(),
        path: Path::Reg,
        shape,
        tokens: vec![512, 2048],
        ms,
        cap,
    }
}

/// The tiny model's file and config.
fn tiny() -> (GgufFile, ModelConfig) {
    let file = GgufFile::from_bytes(moetile_tests::tiny_model(7)).unwrap();
    let config = ModelConfig::from_gguf(&file).unwrap();
    (file, config)
}

/// A context on the test device reading the record in `dir`; `None` (skip) without a device.
fn ctx_with_record(dir: &std::path::Path) -> Option<Arc<WgpuContext>> {
    common::ctx()?;
    let options = ContextOptions {
        tuning_dir: Some(dir.to_path_buf()),
        ..ContextOptions::from_env().unwrap()
    };
    Some(Arc::new(WgpuContext::new(&options).unwrap()))
}

#[test]
fn record_round_trips_through_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = adapter("gpu a");
    let record = TuningRecord {
        entries: vec![
            entry(&a, shape(MatmulRole::GateUp, 1536, 2048), [3.0, 2.0, 2.5]),
            entry(&a, shape(MatmulRole::Down, 2048, 768), [1.0, 1.5, 2.0]),
        ],
        unusable: vec![UnusablePath {
            adapter: a.clone(),
            path: Path::Coop8,
            kernel: "mm_id_q4k_f32_t64_coop8".to_string(),
            reason: "pair 1 row 2: got NaN, want 0.5".to_string(),
        }],
        warnings: Vec::new(),
    };
    let file = record.save(dir.path()).unwrap();
    assert_eq!(file, dir.path().join(TUNING_FILE));
    assert_eq!(TuningRecord::load(dir.path()), record);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // A folder without a record is an empty record, silently.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(TuningRecord::load(empty.path()), TuningRecord::default());
}

#[test]
fn corrupt_or_stale_records_are_ignored_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let a = adapter("gpu a");
    let good = entry(&a, shape(MatmulRole::GateUp, 1536, 2048), [3.0, 2.0, 2.5]);
    TuningRecord {
        entries: vec![good.clone()],
        ..TuningRecord::default()
    }
    .save(dir.path())
    .unwrap();
    let file = dir.path().join(TUNING_FILE);
    let text = std::fs::read_to_string(&file).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let good_json = json["entries"][0].clone();

    let write = |v: &serde_json::Value| std::fs::write(&file, v.to_string()).unwrap();
    let load_warns = |expect: &str| {
        let r = TuningRecord::load(dir.path());
        assert!(
            r.warnings.iter().any(|w| w.contains(expect)),
            "{expect}: {:?}",
            r.warnings
        );
        r
    };

    // Whole-file problems: nothing is used.
    for (bytes, expect) in [
        (&b"{\"version\": 1, \"entr"[..], "not JSON"),
        (&b"\xff\xfe garbage"[..], "not JSON"),
        (&b"[1, 2, 3]"[..], "no version"),
        (
            &br#"{"version": 99, "entries": [], "unusable": []}"#[..],
            "version 99",
        ),
        (
            &br#"{"version": 1, "entries": [], "unusable": [], "extra": 1}"#[..],
            "not a tuning record",
        ),
    ] {
        std::fs::write(&file, bytes).unwrap();
        let r = load_warns(expect);
        assert!(r.entries.is_empty() && r.unusable.is_empty());
    }

    // Entry problems: that entry alone is left out.
    let mut bad = Vec::new();
    for (field, value, expect) in [
        ("cap", serde_json::json!(96), "96 is not a tile width"),
        ("cap", serde_json::json!("64"), "invalid type"),
        ("path", serde_json::json!("coop4"), "unknown path"),
        ("weight", serde_json::json!("q9_z"), "unknown weight type"),
        (
            "ms",
            serde_json::json!({"32": 1.0, "48": 2.0}),
            "48 is not a tile width",
        ),
        ("ms", serde_json::json!({"32": -1.0}), "is not a time"),
        (
            "ms",
            serde_json::json!({"32": 1.0, "032": 2.0}),
            "timed twice",
        ),
        ("surprise", serde_json::json!(true), "unknown field"),
    ] {
        let mut e = good_json.clone();
        e[field] = value;
        bad.push((e, expect));
    }
    let mut entries = vec![good_json.clone()];
    entries.extend(bad.iter().map(|(e, _)| e.clone()));
    write(&serde_json::json!({"version": 1, "entries": entries, "unusable": [{"path": "reg"}]}));
    let r = TuningRecord::load(dir.path());
    assert_eq!(r.entries, vec![good.clone()]);
    assert!(r.unusable.is_empty());
    assert_eq!(r.warnings.len(), bad.len() + 1, "{:?}", r.warnings);
    for (_, expect) in &bad {
        assert!(
            r.warnings.iter().any(|w| w.contains(expect)),
            "{expect}: {:?}",
            r.warnings
        );
    }
    assert!(r.warnings.iter().all(|w| w.contains("moetile tune")));

    // An unreadable record (here a folder in its place) is a warning too, and saving fails
    // without touching it.
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    load_warns("unreadable");
    assert!(TuningRecord::default().save(dir.path()).is_err());
    assert!(file.is_dir());
}

#[test]
fn tuned_cap_is_the_fastest_width_over_the_models_matmuls_and_needs_them_all() {
    let a = adapter("gpu a");
    let gate_up = shape(MatmulRole::GateUp, 1536, 2048);
    let down = shape(MatmulRole::Down, 2048, 768);
    let record = TuningRecord {
        entries: vec![
            entry(&a, gate_up, [3.0, 2.0, 2.5]),
            entry(&a, down, [1.0, 1.5, 2.0]),
        ],
        ..TuningRecord::default()
    };
    let model = |gate_up_layers, down_layers| {
        vec![
            ExpertMatmul {
                shape: gate_up,
                layers: gate_up_layers,
            },
            ExpertMatmul {
                shape: down,
                layers: down_layers,
            },
        ]
    };
    // Totals per width: 32: 3 + 1 = 4, 64: 2 + 1.5 = 3.5, 128: 2.5 + 2 = 4.5.
    assert_eq!(
        record.tuned_cap(&a, Path::Reg, &model(1, 1)),
        Some(TileWidth::T64)
    );
    // With down in 4 layers of 5: 32: 3 + 4, 64: 2 + 6.
    assert_eq!(
        record.tuned_cap(&a, Path::Reg, &model(1, 4)),
        Some(TileWidth::T32)
    );
    // Another adapter, another path, or a matmul never tuned: no cap.
    assert_eq!(
        record.tuned_cap(&adapter("gpu b"), Path::Reg, &model(1, 1)),
        None
    );
    assert_eq!(record.tuned_cap(&a, Path::Coop16, &model(1, 1)), None);
    let mut more = model(1, 1);
    more.push(ExpertMatmul {
        shape: shape(MatmulRole::Down, 2048, 1024),
        layers: 1,
    });
    assert_eq!(record.tuned_cap(&a, Path::Reg, &more), None);
}

#[test]
fn cap_precedence_is_config_then_env_then_tuned_then_128() {
    let (file, config) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let Some(ctx) = ctx_with_record(dir.path()) else {
        return;
    };
    let gpu = WgpuBackend::new(ctx.clone());
    assert_eq!(gpu.tuned_tile_cap(&file, &config).unwrap(), None);

    // A record tuning each of the tiny model's matmuls on this adapter to 32.
    let matmuls = tune::expert_matmuls(&file, &config, gpu.options().mid).unwrap();
    assert_eq!(matmuls.len(), 2, "{matmuls:?}");
    let id = AdapterId::of(ctx.profile());
    let record = TuningRecord {
        entries: matmuls
            .iter()
            .map(|m| TunedEntry {
                path: gpu.options().path,
                ..entry(&id, m.shape, [1.0, 2.0, 3.0])
            })
            .collect(),
        ..TuningRecord::default()
    };
    record.save(dir.path()).unwrap();
    let gpu = WgpuBackend::new(ctx_with_record(dir.path()).unwrap());
    let tuned = gpu.tuned_tile_cap(&file, &config).unwrap();
    assert_eq!(tuned, Some(TileWidth::T32));

    let cap = |tile_max, tile_max_env| {
        let c = RuntimeConfig {
            tile_max,
            tile_max_env,
            tuned_tile_max: tuned,
            ..RuntimeConfig::default()
        }
        .tile_cap();
        (c.width, c.source)
    };
    use TileCapSource::*;
    use TileWidth::*;
    assert_eq!(cap(Some(T64), Some(T128)), (T64, Config));
    assert_eq!(cap(None, Some(T128)), (T128, Env));
    assert_eq!(cap(None, None), (T32, Tuned));
    let untuned = RuntimeConfig::default().tile_cap();
    assert_eq!((untuned.width, untuned.source), (T128, Default));
}

#[test]
fn tuning_times_every_width_and_records_a_path_that_fails_its_check() {
    let Some(ctx) = common::ctx() else { return };
    let (file, config) = tiny();
    let mid = WgpuBackend::new(common::shared_ctx().unwrap().clone())
        .options()
        .mid;
    let matmuls = tune::expert_matmuls(&file, &config, mid).unwrap();
    let cfg = TuneConfig {
        tokens: vec![128],
        iters: 1,
        ..TuneConfig::default()
    };
    let outcome = tune::tune(ctx, &matmuls, &cfg).unwrap();
    assert!(outcome.record.unusable.is_empty(), "{outcome:?}");
    assert_eq!(outcome.paths, ctx.profile().paths());
    assert_eq!(
        outcome.record.entries.len(),
        matmuls.len() * outcome.paths.len()
    );
    for e in &outcome.record.entries {
        let widths: Vec<TileWidth> = e.ms.iter().map(|(w, _)| *w).collect();
        assert_eq!(widths, TileWidth::ALL, "{e:?}");
        assert!(e.ms.iter().all(|(_, ms)| *ms > 0.0), "{e:?}");
        assert_eq!(e.tokens, [128]);
    }

    // The register path's 64-wide kernel made to fail its check: the path is recorded as
    // unusable with that kernel and gets no entries.
    let mut checked = Vec::new();
    let failing = tune::tune_checked(ctx, &matmuls, &cfg, &mut |key, result| {
        checked.push(*key);
        if key.path == Path::Reg && key.tile == TileWidth::T64 {
            Err(moetile::Error::Backend("forced failure".into()))
        } else {
            result
        }
    })
    .unwrap();
    let reg = failing
        .record
        .unusable
        .iter()
        .find(|u| u.path == Path::Reg)
        .expect("reg recorded unusable");
    assert!(reg.kernel.ends_with("_t64_reg"), "{reg:?}");
    assert!(reg.reason.contains("forced failure"), "{reg:?}");
    assert!(failing.record.entries.iter().all(|e| e.path != Path::Reg));
    // Once failed, the path is not checked again.
    assert_eq!(
        checked
            .iter()
            .filter(|k| k.path == Path::Reg && k.tile == TileWidth::T128)
            .count(),
        0
    );

    // Saved and read back by a context: the record reaches it, and a new tuning that passes
    // clears it.
    let dir = tempfile::tempdir().unwrap();
    failing.save(dir.path()).unwrap();
    let reader = ctx_with_record(dir.path()).unwrap();
    assert_eq!(
        reader
            .tuning()
            .unusable_path(&AdapterId::of(reader.profile()), Path::Reg)
            .map(|u| u.kernel.clone()),
        Some(reg.kernel.clone())
    );
    outcome.save(dir.path()).unwrap();
    let record = TuningRecord::load(dir.path());
    assert!(record.unusable.is_empty(), "{record:?}");
    assert_eq!(record.entries.len(), outcome.record.entries.len());
}
