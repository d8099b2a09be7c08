//! Real files: llama.cpp's vocabulary GGUFs (committed under tests/fixtures/vocab) checked
//! against the manifest gguf-py wrote for each (tests/fixtures/gguf/manifest.py), and, when
//! present on this machine, the oracle's tiny MoE models and the larger vocabularies.

use std::path::{Path, PathBuf};

use moetile::gguf::{Array, GgufFile, Value};
use moetile::quant::GgmlType;
use serde_json::Value as Json;

fn vocab_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vocab")
}

fn gguf_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "gguf"));
    files.sort();
    files
}

/// A JSON number or string for a scalar metadata value, as gguf-py's manifest writes it.
fn scalar_json(v: &Value) -> Json {
    match v {
        Value::F32(x) => Json::from(f64::from(*x)),
        Value::F64(x) => Json::from(*x),
        Value::Bool(b) => Json::from(*b),
        Value::String(s) => Json::from(s.as_str()),
        v => v
            .as_u64()
            .map(Json::from)
            .or_else(|| v.as_i64().map(Json::from))
            .unwrap_or_else(|| panic!("{v:?} is not a manifest scalar")),
    }
}

/// Element `i` of a non-nested array, as JSON, and the array's checksum field.
fn element_json(a: &Array, i: usize) -> Json {
    match a {
        Array::U8(v) => v[i].into(),
        Array::I8(v) => v[i].into(),
        Array::U16(v) => v[i].into(),
        Array::I16(v) => v[i].into(),
        Array::U32(v) => v[i].into(),
        Array::I32(v) => v[i].into(),
        Array::F32(v) => f64::from(v[i]).into(),
        Array::Bool(v) => v[i].into(),
        Array::String(v) => v[i].as_str().into(),
        Array::U64(v) => v[i].into(),
        Array::I64(v) => v[i].into(),
        Array::F64(v) => v[i].into(),
        Array::Array(_) => panic!("manifests hold no nested arrays"),
    }
}

/// Plain left-to-right f64 sum, as manifest.py computes it (so equality is exact).
fn array_sum(a: &Array) -> f64 {
    fn sum<T: Copy>(v: &[T], f: impl Fn(T) -> f64) -> f64 {
        v.iter().fold(0.0, |acc, &x| acc + f(x))
    }
    match a {
        Array::U8(v) => sum(v, f64::from),
        Array::I8(v) => sum(v, f64::from),
        Array::U16(v) => sum(v, f64::from),
        Array::I16(v) => sum(v, f64::from),
        Array::U32(v) => sum(v, f64::from),
        Array::I32(v) => sum(v, f64::from),
        Array::F32(v) => sum(v, f64::from),
        Array::U64(v) => sum(v, |x| x as f64),
        Array::I64(v) => sum(v, |x| x as f64),
        Array::F64(v) => sum(v, |x| x),
        Array::Bool(_) | Array::String(_) | Array::Array(_) => panic!("no sum for {a:?}"),
    }
}

/// Checks `file` against gguf-py's manifest of it, entry by entry.
fn check_against_manifest(file: &GgufFile, manifest: &Json, what: &str) {
    assert_eq!(file.version(), manifest["version"], "{what}: version");
    assert_eq!(file.alignment(), manifest["alignment"], "{what}: alignment");
    assert_eq!(
        file.data_offset(),
        manifest["data_offset"],
        "{what}: data offset"
    );
    let entries = manifest["metadata"].as_array().expect("metadata list");
    assert_eq!(
        file.metadata().count(),
        entries.len(),
        "{what}: metadata count"
    );
    for ((key, value), m) in file.metadata().zip(entries) {
        assert_eq!(key, m["key"], "{what}: key order");
        let ctx = format!("{what}: {key}");
        match value {
            Value::Array(a) => {
                assert_eq!(m["type"], "array", "{ctx}");
                assert_eq!(a.elem_type().name(), m["elem_type"], "{ctx}");
                assert_eq!(a.len(), m["len"], "{ctx}");
                for (i, expected) in m["samples"].as_object().expect("samples") {
                    let i: usize = i.parse().expect("index");
                    assert_eq!(element_json(a, i), *expected, "{ctx}[{i}]");
                }
                if let Array::String(v) = a {
                    let bytes: usize = v.iter().map(String::len).sum();
                    assert_eq!(bytes, m["utf8_bytes"], "{ctx}: total string bytes");
                } else if !matches!(a, Array::Bool(_)) {
                    assert_eq!(array_sum(a), m["sum"].as_f64().expect("sum"), "{ctx}: sum");
                }
            }
            v => {
                assert_eq!(v.value_type().name(), m["type"], "{ctx}");
                assert_eq!(scalar_json(v), m["value"], "{ctx}");
            }
        }
    }
    let tensors = manifest["tensors"].as_array().expect("tensor list");
    assert_eq!(file.tensors().len(), tensors.len(), "{what}: tensor count");
    for (t, m) in file.tensors().iter().zip(tensors) {
        let ctx = format!("{what}: tensor {}", t.name);
        assert_eq!(t.name, m["name"], "{ctx}");
        assert_eq!(t.ty.name(), m["type"], "{ctx}");
        assert_eq!(Json::from(t.dims.clone()), m["dims"], "{ctx}");
        assert_eq!(t.offset, m["offset"], "{ctx}");
        assert_eq!(t.len, m["len"], "{ctx}");
    }
}

fn read_manifest(path: &Path) -> Json {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (regenerate with manifest.py)", path.display()));
    serde_json::from_str(&text).expect("manifest JSON")
}

#[test]
fn committed_vocab_files_match_gguf_py() {
    let files = gguf_files(&vocab_dir());
    assert!(
        !files.is_empty(),
        "no GGUF fixtures in {}",
        vocab_dir().display()
    );
    for path in files {
        let file = GgufFile::open(&path).unwrap();
        let manifest = read_manifest(&path.with_extension("gguf.manifest.json"));
        check_against_manifest(&file, &manifest, &path.display().to_string());
    }
}

#[test]
fn llama_spm_vocab_reads_with_typed_accessors() {
    let file = GgufFile::open(&vocab_dir().join("ggml-vocab-llama-spm.gguf")).unwrap();
    assert_eq!(file.get_str("tokenizer.ggml.model").unwrap(), "llama");
    assert_eq!(file.get_str("tokenizer.ggml.pre").unwrap(), "default");
    let tokens = file.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 32000);
    assert_eq!(&tokens[..3], ["<unk>", "<s>", "</s>"]);
    assert_eq!(
        file.get_f32_array("tokenizer.ggml.scores").unwrap().len(),
        32000
    );
    assert_eq!(
        file.get_i32_array("tokenizer.ggml.token_type")
            .unwrap()
            .len(),
        32000
    );
    assert_eq!(file.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 1);
    assert_eq!(file.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 2);
    assert!(file.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert!(!file.get_bool("tokenizer.ggml.add_eos_token").unwrap());
    assert_eq!(file.get_u32("llama.vocab_size").unwrap(), 32000);
    assert!(
        file.get_str_array_opt("tokenizer.ggml.merges")
            .unwrap()
            .is_none()
    );
    assert!(file.tensors().is_empty());
}

/// Directories searched by the test below: `MOETILE_GGUF_DIRS` (`:`-separated) or the oracle
/// tools' default output and llama.cpp's vocabulary folder.
fn external_dirs() -> Vec<PathBuf> {
    let dirs = std::env::var("MOETILE_GGUF_DIRS").unwrap_or_else(|_| {
        "/tmp/oracle-work/e2e/models:\
         /tmp/oracle-work/dl/llama_cpp_python-0.3.36/vendor/llama.cpp/models"
            .into()
    });
    dirs.split(':').map(PathBuf::from).collect()
}

#[test]
#[ignore = "needs the oracle's tiny MoE models and llama.cpp's vocab files (not committed): \
            see /work/shared/oracle/README.md; MOETILE_GGUF_DIRS overrides the directories, \
            MOETILE_GGUF_MANIFESTS names a folder of manifest.py outputs to compare against"]
fn external_gguf_files_parse() {
    let manifests = std::env::var("MOETILE_GGUF_MANIFESTS")
        .ok()
        .map(PathBuf::from);
    let mut n_files = 0;
    for dir in external_dirs() {
        let files = gguf_files(&dir);
        if files.is_empty() {
            eprintln!("skipping {}: no GGUF files there", dir.display());
        }
        for path in files {
            let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("file name");
            n_files += 1;
            if let Some(m) = manifests
                .as_ref()
                .map(|d| d.join(format!("{name}.manifest.json")))
                && m.exists()
            {
                check_against_manifest(&file, &read_manifest(&m), name);
                eprintln!("{name}: matches gguf-py");
            }
            check_known_file(&file, name);
        }
    }
    eprintln!("parsed {n_files} files");
}

/// Spot checks of what the tokenizer and the model config will read.
fn check_known_file(file: &GgufFile, name: &str) {
    if name == "ggml-vocab-qwen2.gguf" {
        assert_eq!(file.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
        assert_eq!(file.get_str("tokenizer.ggml.pre").unwrap(), "qwen2");
        assert_eq!(
            file.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
            151936
        );
        assert_eq!(
            file.get_str_array("tokenizer.ggml.merges").unwrap().len(),
            151387
        );
        assert_eq!(
            file.get_i32_array("tokenizer.ggml.token_type")
                .unwrap()
                .len(),
            151936
        );
        assert!(
            file.get_str("tokenizer.chat_template")
                .unwrap()
                .contains("im_start")
        );
    }
    if name.starts_with("tiny-") && !name.contains("imatrix") {
        let arch = file.get_str("general.architecture").unwrap();
        assert!(
            file.get_u32(&format!("{arch}.expert_count")).unwrap() > 1,
            "{name}"
        );
        assert!(
            file.get_u32(&format!("{arch}.block_count")).unwrap() >= 1,
            "{name}"
        );
        assert!(file.tensor("token_embd.weight").is_some(), "{name}");
        // Plain float tensors must decode to finite values; offsets and lengths were already
        // validated, this checks they point at the weights.
        for t in file.tensors() {
            if matches!(t.ty, GgmlType::F32 | GgmlType::F16) {
                let mut out = vec![f32::NAN; t.n_elements()];
                moetile::quant::dequantize(t.ty, file.tensor_bytes(t), &mut out).unwrap();
                assert!(out.iter().all(|x| x.is_finite()), "{name}: {}", t.name);
            }
        }
    }
}
