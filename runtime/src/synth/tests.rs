use std::path::PathBuf;

use super::vocab::SynthVocab;
use super::*;
use crate::gguf::GgufFile;
use crate::model::ModelConfig;
use crate::quant::dequantize;
use crate::tokenizer::{TokenType, Tokenizer};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/models")
        .join(name)
}

fn tiny(mix: Mix, seed: u64) -> Synth {
    let preset = Preset::by_name("tiny-qwen3moe").unwrap();
    Synth::new(preset.with_layers(2).unwrap(), mix, seed)
}

fn bytes(synth: &Synth) -> Vec<u8> {
    let mut out = Vec::new();
    synth.write_to(&mut out, &mut |_, _| {}).unwrap();
    out
}

#[test]
fn embedded_vocabulary_is_the_fixture_vocabulary() {
    // vocab.txt was extracted from this fixture; a drift between the two fails here.
    let file = GgufFile::open(&fixture("qwen3moe-small-f32.gguf")).unwrap();
    let vocab = SynthVocab::padded(512);
    assert_eq!(
        file.get_str_array("tokenizer.ggml.tokens").unwrap(),
        vocab.tokens
    );
    assert_eq!(
        file.get_str_array("tokenizer.ggml.merges").unwrap(),
        vocab.merges
    );
    let types: Vec<i32> = vocab.types.iter().map(|t| t.code()).collect();
    assert_eq!(
        file.get_i32_array("tokenizer.ggml.token_type").unwrap(),
        types
    );
    for code in 0..7 {
        assert_eq!(TokenType::from_code(code).code(), code);
    }
}

#[test]
fn tiny_model_reads_back_with_config_tokenizer_and_template() {
    let synth = tiny(Mix::Q4KM, 1);
    let data = bytes(&synth);
    let file = GgufFile::from_bytes(data.clone()).unwrap();
    let c = ModelConfig::from_gguf(&file).unwrap();
    let p = synth.preset;
    assert_eq!(
        (
            c.n_layers,
            c.d_model,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim,
            c.n_vocab
        ),
        (2, p.d_model, p.n_heads, p.n_kv_heads, p.head_dim, p.n_vocab)
    );
    let m = c.moe.unwrap();
    assert_eq!(
        (m.n_experts, m.n_experts_used, m.expert_ff),
        (p.n_experts, p.n_experts_used, p.expert_ff)
    );
    assert!(c.qk_norm);
    let header = file.data_offset() as u64;
    assert!(data.len() as u64 >= header + synth.tensor_bytes());

    // The fixture's tokenizer, on the fixture's prompt.
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let reference =
        Tokenizer::from_gguf(&GgufFile::open(&fixture("qwen3moe-small-f32.gguf")).unwrap())
            .unwrap();
    let prompt = std::fs::read_to_string(fixture("prompt.txt")).unwrap();
    assert_eq!(
        tokenizer.encode(&prompt, true, false),
        reference.encode(&prompt, true, false)
    );
    let im_end = tokenizer.token_id("<|im_end|>").unwrap();
    assert!(tokenizer.is_end_of_generation(im_end));
    let template = crate::chat::ChatTemplate::from_gguf(&file, &tokenizer).unwrap();
    assert!(!template.is_fallback());
}

#[test]
fn same_seed_same_bytes_other_seed_other_weights() {
    let a = bytes(&tiny(Mix::Q8_0, 7));
    assert_eq!(a, bytes(&tiny(Mix::Q8_0, 7)));
    let b = bytes(&tiny(Mix::Q8_0, 8));
    assert_eq!(a.len(), b.len());
    assert_ne!(a, b);
}

#[test]
fn mixes_give_each_tensor_its_type() {
    let check = |mix: Mix, name: &str, want: GgmlType| {
        let file = GgufFile::from_bytes(bytes(&tiny(mix, 0))).unwrap();
        let t = file.tensor(name).unwrap();
        assert_eq!(t.ty, want, "{} {name}", mix.name());
    };
    check(
        Mix::Iq2XxsQ2K,
        "blk.1.ffn_gate_exps.weight",
        GgmlType::IQ2_XXS,
    );
    check(
        Mix::Iq2XxsQ2K,
        "blk.1.ffn_up_exps.weight",
        GgmlType::IQ2_XXS,
    );
    check(Mix::Iq2XxsQ2K, "blk.1.ffn_down_exps.weight", GgmlType::Q2_K);
    check(Mix::Iq2XxsQ2K, "blk.0.attn_q.weight", GgmlType::Q8_0);
    check(Mix::Iq2XxsQ2K, "blk.0.ffn_gate_inp.weight", GgmlType::F32);
    check(Mix::Iq2XxsQ2K, "output.weight", GgmlType::Q8_0);
    check(Mix::Q4KM, "output.weight", GgmlType::Q6_K);
    check(Mix::Q4KM, "blk.0.attn_q.weight", GgmlType::Q4_K);
    check(Mix::Q4KM, "blk.0.attn_norm.weight", GgmlType::F32);
    check(Mix::Q2K, "blk.0.ffn_down_exps.weight", GgmlType::Q2_K);
    check(Mix::F16, "token_embd.weight", GgmlType::F16);
    // 48 layers: llama.cpp's use_more_bits gives layers 0..6, 42..48 and 6 + 3i + 2 more bits.
    let q4 = |layer| Mix::Q4KM.tensor_type(Role::ExpertDown, layer, 48);
    let more: Vec<usize> = (0..48).filter(|&l| q4(l) == GgmlType::Q6_K).collect();
    let want: Vec<usize> = (0..48)
        .filter(|&l| !(6..42).contains(&l) || (l - 6) % 3 == 2)
        .collect();
    assert_eq!(more, want);
    assert_eq!(q4(7), GgmlType::Q4_K);
}

#[test]
fn weights_have_fan_in_scale_and_padding_rows_are_zero() {
    let mut preset = Preset::by_name("tiny-qwen3moe")
        .unwrap()
        .with_layers(1)
        .unwrap();
    preset.n_vocab = 600; // 88 padding tokens
    let file = GgufFile::from_bytes(bytes(&Synth::new(preset, Mix::Q8_0, 3))).unwrap();
    let values = |name: &str| {
        let t = file.tensor(name).unwrap();
        let mut out = vec![0.0; t.n_elements()];
        dequantize(t.ty, file.tensor_bytes(t), &mut out).unwrap();
        out
    };
    let d = preset.d_model;
    let gate = values("blk.0.ffn_gate_exps.weight");
    let rms = (gate.iter().map(|v| v * v).sum::<f32>() / gate.len() as f32).sqrt();
    let want = 1.0 / (d as f32).sqrt();
    assert!((rms / want - 1.0).abs() < 0.05, "rms {rms}, want {want}");
    let output = values("output.weight");
    let real = SynthVocab::real_len();
    // No two tokens share an output row (a tie would make greedy decoding arbitrary), nor two
    // rows of an expert tensor.
    for (name, rows) in [("output", &output[..real * d]), ("gate", &gate[..])] {
        let mut seen = std::collections::HashSet::new();
        for row in rows.chunks(d) {
            let bits: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
            assert!(seen.insert(bits), "{name}: a row repeats");
        }
    }
    assert!(output[(real - 1) * d..real * d].iter().any(|&v| v != 0.0));
    assert!(output[real * d..].iter().all(|&v| v == 0.0));
    let norm = values("blk.0.attn_norm.weight");
    assert!(norm.iter().all(|v| (0.9..=1.1).contains(v)));
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(tokenizer.vocab_size(), 600);
    assert_eq!(tokenizer.token_type(599), Some(TokenType::Unused));
}

#[test]
fn write_file_refuses_to_overwrite_unless_told_and_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, b"precious").unwrap();
    let synth = tiny(Mix::F16, 0);
    let err = synth.write_file(&path, false, &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, Error::OutputExists { .. }), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    let mut last = (0, 0);
    let written = synth
        .write_file(&path, true, &mut |done, total| last = (done, total))
        .unwrap();
    assert_eq!(last.0, last.1);
    assert_eq!(last.1, synth.tensor_bytes());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), written);
    GgufFile::open(&path).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["m.gguf"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_ne!(
            mode & 0o044,
            0,
            "a model file is readable by others: {mode:o}"
        );
    }
}

#[test]
fn presets_and_mixes_parse_by_name_and_list_the_choices() {
    for p in Preset::ALL {
        assert_eq!(Preset::by_name(p.name).unwrap(), p);
        // Every matrix row length is a whole number of 256-value blocks (K-quants).
        for row in [p.d_model, p.expert_ff, p.n_heads * p.head_dim] {
            assert!(row.is_multiple_of(256), "{}: {row}", p.name);
        }
    }
    for (m, name) in Mix::ALL {
        assert_eq!(Mix::by_name(name).unwrap(), m);
        assert_eq!(m.name(), name);
    }
    let err = Preset::by_name("gpt-5").unwrap_err().to_string();
    assert!(
        err.contains("tiny-qwen3moe, qwen3-30b-a3b, ds4-flash-moe"),
        "{err}"
    );
    let err = Mix::by_name("q3").unwrap_err().to_string();
    assert!(err.contains("iq2_xxs-q2_k"), "{err}");
    assert!(Preset::ALL[0].with_layers(0).is_err());
}

#[test]
fn qwen3_30b_a3b_has_the_real_size() {
    // Qwen3-30B-A3B Q4_K_M is about 18.6 GB in llama.cpp; ours differs by the vocabulary
    // handling and the exact mix, not by orders of magnitude.
    let synth = Synth::new(Preset::by_name("qwen3-30b-a3b").unwrap(), Mix::Q4KM, 0);
    let gb = synth.tensor_bytes() as f64 / 1e9;
    assert!((16.0..20.0).contains(&gb), "{gb} GB");
}
