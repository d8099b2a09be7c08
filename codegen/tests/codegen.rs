//! The generator's contracts: every key validates, the shader's constants and bindings are the
//! key's, params structs match naga's layout, workgroup memory fits 32 KiB, broken templates
//! fail with the key's name, and `dump` writes every translation.

use std::collections::HashMap;

use moetile::tile::TileWidth;
use moetile_codegen::{
    ActType, Error, KernelKey, MatmulKey, NormFlavour, Path, Stage, Templates, WeightType,
    generate, generate_validated, params, validate,
};

fn q4k_t64() -> KernelKey {
    KernelKey::MmId(MatmulKey {
        weight: WeightType::Q4_K,
        act: ActType::F32,
        tile: TileWidth::T64,
        path: Path::Reg,
    })
}

/// Named `u32` constants of a module.
fn module_consts(module: &naga::Module) -> HashMap<String, u32> {
    module
        .constants
        .iter()
        .filter_map(|(_, c)| {
            let name = c.name.clone()?;
            match module.global_expressions[c.init] {
                naga::Expression::Literal(naga::Literal::U32(v)) => Some((name, v)),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn every_key_validates_with_its_own_geometry() {
    let keys = KernelKey::all();
    assert!(keys.len() > 100, "{} keys", keys.len());
    for key in keys {
        let (_, v) = generate_validated(&key).unwrap_or_else(|e| panic!("{e}"));
        let consts = module_consts(&v.module);
        for (name, value) in key.consts() {
            assert_eq!(consts.get(name), Some(&value), "{key}: const {name}");
        }
        assert_eq!(consts["WG_SIZE"], key.workgroup_size(), "{key}");
        for ep in key.entry_points() {
            let entry = v
                .module
                .entry_points
                .iter()
                .find(|e| e.name == *ep)
                .unwrap_or_else(|| panic!("{key}: no entry point {ep}"));
            assert_eq!(entry.workgroup_size, [key.workgroup_size(), 1, 1], "{key}");
        }
        assert_eq!(
            v.module.entry_points.len(),
            key.entry_points().len(),
            "{key}"
        );
        if let Some(rows) = key.rows_per_workgroup() {
            assert_eq!(consts["ROWS_PER_WG"], rows, "{key}");
        }
        if let Some(tokens) = key.tokens_per_workgroup() {
            assert_eq!(consts["TILE_N"], tokens, "{key}");
        }
        assert_eq!(v.hlsl.is_some(), !key.needs_coop(), "{key}");
    }
}

#[test]
fn workgroup_memory_fits_32_kib() {
    let mut max = 0;
    for key in KernelKey::all() {
        let (_, v) = generate_validated(&key).unwrap();
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(v.module.to_ctx()).unwrap();
        let declared: u32 = v
            .module
            .global_variables
            .iter()
            .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
            .map(|(_, g)| layouter[g.ty].size)
            .sum();
        // What the build records per key (the device limit moetile-wgpu asks for) is what one
        // entry point reaches: everything declared when there is one entry point, never more.
        if key.entry_points().len() == 1 {
            assert_eq!(v.workgroup_bytes, declared, "{key}");
        } else {
            assert!(v.workgroup_bytes <= declared, "{key}");
        }
        assert!(
            v.workgroup_bytes <= 32 * 1024,
            "{key}: {} bytes of workgroup memory",
            v.workgroup_bytes
        );
        max = max.max(v.workgroup_bytes);
    }
    assert!(max > 0);
}

#[test]
fn params_structs_match_naga_layout() {
    // One key per params struct.
    let keys = [
        KernelKey::Map {
            tile: TileWidth::T32,
        },
        q4k_t64(),
        KernelKey::MvId {
            weight: WeightType::Q8_0,
            act: ActType::F16,
            epilogue: moetile_codegen::MvEpilogue::Glu { mid: ActType::F16 },
        },
        KernelKey::Act {
            mid: ActType::F16,
            interleaved: true,
        },
        KernelKey::Sum,
        KernelKey::Embed {
            weight: WeightType::Q3_K,
        },
        KernelKey::RmsNorm(NormFlavour::Plain),
        KernelKey::RmsNorm(NormFlavour::Residual),
        KernelKey::RmsNorm(NormFlavour::Pair),
        KernelKey::Eltwise(moetile_codegen::EltOp::Add),
        KernelKey::Rope { pair: false },
        KernelKey::Rope { pair: true },
        KernelKey::KvStore { kv: ActType::F16 },
        KernelKey::AttnDecode {
            head_dim: 64,
            kv: ActType::F32,
            subgroups: true,
        },
        KernelKey::Route,
    ];
    let mut checked = Vec::new();
    for key in keys {
        let (_, v) = generate_validated(&key).unwrap();
        let name = key.params_struct();
        let params::Layout { fields, size, .. } = params::all()
            .into_iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no Rust params struct {name}"));
        let ty = v
            .module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{key}: no WGSL struct {name}"))
            .1;
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("{name} is not a struct");
        };
        let wgsl: Vec<(String, usize)> = members
            .iter()
            .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
            .collect();
        let rust: Vec<(String, usize)> = fields.iter().map(|(n, o)| (n.to_string(), *o)).collect();
        assert_eq!(wgsl, rust, "{name}: fields and offsets");
        assert_eq!(*span as usize, size, "{name}: size");
        checked.push(name);
    }
    checked.sort();
    checked.dedup();
    assert_eq!(
        checked.len(),
        params::all().len(),
        "every params struct checked"
    );
}

#[test]
fn broken_template_fails_with_the_key_in_the_message() {
    let key = q4k_t64();
    let builtin = Templates::builtin();

    // A syntax error.
    let broken = builtin.clone().with("mm_id.wgsl", "fn main( {");
    let wgsl = generate(&key, &broken).unwrap();
    let err = validate(&key, &wgsl).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("mm_id_q4k_f32_t64_reg"), "{msg}");
    assert!(
        matches!(
            err,
            Error::Invalid {
                stage: Stage::Parse,
                ..
            }
        ),
        "{msg}"
    );

    // A type error naga's validator (not the parser) catches, in a shared fragment.
    let text = "fn dequant8(block: u32, group: u32) -> array<f32, 8> { return array<f32, 8>(); }\n\
                fn broken() -> u32 { let x: f32 = 1.0; return bitcast<u32>(x) + x; }\n";
    let broken = builtin.clone().with("dequant/q4_k.wgsl", text);
    let err = validate(&key, &generate(&key, &broken).unwrap()).unwrap_err();
    assert!(err.to_string().contains("mm_id_q4k_f32_t64_reg"), "{err}");

    // A binding that disagrees with the key's binding table.
    let moved = builtin.clone().with(
        "mm_id.wgsl",
        include_str!("../../wgsl/mm_id.wgsl").replace("@binding(6)", "@binding(9)"),
    );
    let err = validate(&key, &generate(&key, &moved).unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                stage: Stage::Bindings,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("mm_id_q4k_f32_t64_reg"), "{err}");

    // A key whose template set lacks a fragment.
    let mut empty = Templates::builtin();
    empty = empty.with("act/f32.wgsl", "");
    let err = validate(&key, &generate(&key, &empty).unwrap()).unwrap_err();
    assert!(err.to_string().contains("mm_id_q4k_f32_t64_reg"), "{err}");
}

#[test]
fn dump_writes_every_specialization_and_translation() {
    let dir = tempfile::tempdir().unwrap();
    let n = moetile_codegen::dump(dir.path()).unwrap();
    assert_eq!(n, KernelKey::all().len());
    for key in KernelKey::all() {
        for ext in ["wgsl", "spv", "metal"] {
            let f = dir.path().join(format!("{key}.{ext}"));
            assert!(f.metadata().unwrap().len() > 0, "{}", f.display());
        }
        let hlsl = dir.path().join(format!("{key}.hlsl"));
        assert_eq!(hlsl.exists(), !key.needs_coop(), "{key}");
    }
    let spv = std::fs::read(dir.path().join("sum.spv")).unwrap();
    assert_eq!(&spv[..4], &0x0723_0203u32.to_le_bytes(), "SPIR-V magic");
}

#[test]
fn dump_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moetile-codegen"))
        .arg("dump")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(dir.path().join("map_t128.wgsl").exists());
    let usage = std::process::Command::new(env!("CARGO_BIN_EXE_moetile-codegen"))
        .output()
        .unwrap();
    assert!(!usage.status.success());
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage"));
}
