use std::io::Write;
use std::path::PathBuf;

use super::vocab::SynthVocab;
use super::*;
use crate::gguf::{GgufFile, Value};
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
    let Family::Qwen3Moe(a) = p.family else {
        panic!("{} is not qwen3moe", p.name)
    };
    assert_eq!(
        (
            c.n_layers,
            c.d_model,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim,
            c.n_vocab
        ),
        (2, p.d_model, a.n_heads, a.n_kv_heads, a.head_dim, p.n_vocab)
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
    for name in ["gate", "up", "down"] {
        let name = format!("blk.1.ffn_{name}_exps.weight");
        check(Mix::Mxfp4, &name, GgmlType::MXFP4);
    }
    check(Mix::Mxfp4, "blk.0.attn_q.weight", GgmlType::Q8_0);
    check(Mix::Mxfp4, "blk.0.ffn_gate_inp.weight", GgmlType::F32);
    check(Mix::Mxfp4, "token_embd.weight", GgmlType::Q8_0);
    check(Mix::Mxfp4, "output.weight", GgmlType::Q8_0);
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
        // Every row length a K-quant may get is a whole number of 256-value blocks.
        let mut block = 256;
        let rows = match p.family {
            Family::Qwen3Moe(a) => vec![p.d_model, p.expert_ff, a.n_heads * a.head_dim],
            Family::Qwen35Moe(a) => vec![
                p.d_model,
                p.expert_ff,
                a.shared_ff,
                a.n_heads * a.head_dim,
                a.n_delta_v_heads * a.delta_head_dim,
            ],
            // deepseek4 mixes give K-quants to the routed experts only.
            Family::Deepseek4(_) => vec![p.d_model, p.expert_ff],
            // gpt-oss mixes have no K-quants: rows of whole MXFP4 and Q8_0 blocks.
            Family::GptOss(a) => {
                block = 32;
                vec![p.d_model, p.expert_ff, a.n_heads * a.head_dim]
            }
        };
        for row in rows {
            assert!(row.is_multiple_of(block), "{}: {row}", p.name);
        }
    }
    for (m, name) in Mix::ALL {
        assert_eq!(Mix::by_name(name).unwrap(), m);
        assert_eq!(m.name(), name);
    }
    let err = Preset::by_name("gpt-5").unwrap_err().to_string();
    assert!(
        err.contains(
            "tiny-qwen3moe, qwen3-30b-a3b, ds4-flash-moe, tiny-ds4, ds4-flash, tiny-qwen35moe, \
             qwen3.6-35b-a3b, tiny-gptoss, gpt-oss-20b"
        ),
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

// deepseek4 presets.

fn ds4(name: &str, layers: Option<usize>, mix: Mix, seed: u64) -> Synth {
    let preset = Preset::by_name(name).unwrap();
    let preset = layers
        .map_or(Ok(preset), |n| preset.with_layers(n))
        .unwrap();
    Synth::new(preset, mix, seed)
}

#[test]
fn ds4_flash_has_the_size_of_the_original_engines_files() {
    // antirez/ds4's download_model.sh: the q2 file (IQ2_XXS/Q2_K experts) is about 81 GB,
    // the q4 file (Q4_K experts) about 153 GB, in GiB; same tensors, same types but ours.
    for (mix, gib) in [(Mix::Iq2XxsQ2K, 81.0), (Mix::Q4K, 153.0)] {
        let got = ds4("ds4-flash", None, mix, 0).tensor_bytes() as f64 / (1u64 << 30) as f64;
        assert!((got - gib).abs() < 1.0, "{}: {got} GiB", mix.name());
    }
}

/// A writer that keeps the first `keep` bytes and counts the rest.
struct HeadSink {
    head: Vec<u8>,
    keep: usize,
    total: u64,
}

impl Write for HeadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let take = self.keep.saturating_sub(self.head.len()).min(buf.len());
        self.head.extend_from_slice(&buf[..take]);
        self.total += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

use GgmlType::{F16, F32, I32, IQ2_XXS, Q2_K, Q8_0};

/// llama.cpp's `llama_model_deepseek4::load_arch_tensors` (required tensors, no MTP block) at
/// DeepSeek V4 Flash's dimensions, with the types of the original engine's q2 file
/// (`weights_validate_layout` in antirez/ds4's ds4.c): global tensors.
const FLASH_GLOBAL: &[(&str, &[usize], GgmlType)] = &[
    ("token_embd.weight", &[4096, 129280], F16),
    ("output_norm.weight", &[4096], F32),
    ("output.weight", &[4096, 129280], Q8_0),
    ("output_hc_fn.weight", &[16384, 4], F16),
    ("output_hc_base.weight", &[4], F32),
    ("output_hc_scale.weight", &[1], F32),
];

/// Every layer's (`blk.N.` prefixed).
const FLASH_LAYER: &[(&str, &[usize], GgmlType)] = &[
    ("attn_norm.weight", &[4096], F32),
    ("attn_sinks.weight", &[64], F32),
    ("attn_q_a.weight", &[4096, 1024], Q8_0),
    ("attn_q_a_norm.weight", &[1024], F32),
    ("attn_q_b.weight", &[1024, 32768], Q8_0),
    ("attn_kv.weight", &[4096, 512], Q8_0),
    ("attn_kv_a_norm.weight", &[512], F32),
    // llama.cpp views it as [4096, 1024, 8] (TENSOR_ALLOW_RESHAPE); files store it 2-D.
    ("attn_output_a.weight", &[4096, 8192], Q8_0),
    ("attn_output_b.weight", &[8192, 4096], Q8_0),
    ("hc_attn_fn.weight", &[16384, 24], F16),
    ("hc_attn_base.weight", &[24], F32),
    ("hc_attn_scale.weight", &[3], F32),
    ("hc_ffn_fn.weight", &[16384, 24], F16),
    ("hc_ffn_base.weight", &[24], F32),
    ("hc_ffn_scale.weight", &[3], F32),
    ("ffn_gate_inp.weight", &[4096, 256], F16),
    ("ffn_norm.weight", &[4096], F32),
    ("ffn_gate_exps.weight", &[4096, 2048, 256], IQ2_XXS),
    ("ffn_up_exps.weight", &[4096, 2048, 256], IQ2_XXS),
    ("ffn_down_exps.weight", &[2048, 4096, 256], Q2_K),
    ("ffn_gate_shexp.weight", &[4096, 2048], Q8_0),
    ("ffn_up_shexp.weight", &[4096, 2048], Q8_0),
    ("ffn_down_shexp.weight", &[2048, 4096], Q8_0),
];

/// Layers below `hash_layer_count` (3) route by this table ...
const FLASH_HASHED: (&str, &[usize], GgmlType) = ("ffn_gate_tid2eid.weight", &[6, 129280], I32);
/// ... the others by score with this bias.
const FLASH_SCORED: (&str, &[usize], GgmlType) = ("exp_probs_b.bias", &[256], F32);

/// Layers of ratio 4 and 128 add a compressor (ratio 4 over twice the columns) ...
const FLASH_RATIO_4: &[(&str, &[usize], GgmlType)] = &[
    ("attn_compressor_kv.weight", &[4096, 1024], F16),
    ("attn_compressor_gate.weight", &[4096, 1024], F16),
    ("attn_compressor_ape.weight", &[1024, 4], F16),
    ("attn_compressor_norm.weight", &[512], F32),
    // ... and ratio 4 the indexer.
    ("indexer.proj.weight", &[4096, 64], F16),
    ("indexer.attn_q_b.weight", &[1024, 8192], F16),
    ("indexer_compressor_kv.weight", &[4096, 256], F16),
    ("indexer_compressor_gate.weight", &[4096, 256], F16),
    ("indexer_compressor_ape.weight", &[256, 4], F16),
    ("indexer_compressor_norm.weight", &[128], F32),
];
const FLASH_RATIO_128: &[(&str, &[usize], GgmlType)] = &[
    ("attn_compressor_kv.weight", &[4096, 512], F16),
    ("attn_compressor_gate.weight", &[4096, 512], F16),
    ("attn_compressor_ape.weight", &[512, 128], F16),
    ("attn_compressor_norm.weight", &[512], F32),
];

/// The keys llama.cpp's loader requires of deepseek4 (`load_hparams`, `load_arch_hparams`)
/// or reads for its dimensions, with DeepSeek V4 Flash's values (the original engine's
/// `config_validate_model`) for a 4-layer file.
fn flash_keys() -> Vec<(&'static str, Value)> {
    let u = |v: u32| Value::U32(v);
    let f = |v: f32| Value::F32(v);
    vec![
        ("general.architecture", "deepseek4".into()),
        ("deepseek4.context_length", u(1 << 20)),
        ("deepseek4.embedding_length", u(4096)),
        ("deepseek4.block_count", u(4)),
        ("deepseek4.vocab_size", u(129280)),
        ("deepseek4.attention.head_count", u(64)),
        ("deepseek4.attention.head_count_kv", u(1)),
        ("deepseek4.attention.key_length", u(512)),
        ("deepseek4.attention.value_length", u(512)),
        ("deepseek4.rope.dimension_count", u(64)),
        ("deepseek4.rope.freq_base", f(10000.0)),
        ("deepseek4.rope.scaling.type", "yarn".into()),
        ("deepseek4.rope.scaling.factor", f(16.0)),
        ("deepseek4.rope.scaling.original_context_length", u(65536)),
        ("deepseek4.rope.scaling.yarn_beta_fast", f(32.0)),
        ("deepseek4.rope.scaling.yarn_beta_slow", f(1.0)),
        ("deepseek4.attention.layer_norm_rms_epsilon", f(1e-6)),
        ("deepseek4.attention.q_lora_rank", u(1024)),
        ("deepseek4.attention.sliding_window", u(128)),
        ("deepseek4.expert_count", u(256)),
        ("deepseek4.expert_used_count", u(6)),
        ("deepseek4.expert_feed_forward_length", u(2048)),
        ("deepseek4.expert_shared_count", u(1)),
        ("deepseek4.expert_weights_scale", f(1.5)),
        ("deepseek4.expert_weights_norm", Value::Bool(true)),
        ("deepseek4.expert_gating_func", u(4)),
        (
            "deepseek4.swiglu_clamp_exp",
            Value::Array(Array::from(vec![10.0f32; 4])),
        ),
        (
            "deepseek4.swiglu_clamp_shexp",
            Value::Array(Array::from(vec![10.0f32; 4])),
        ),
        ("deepseek4.attention.indexer.head_count", u(64)),
        ("deepseek4.attention.indexer.key_length", u(128)),
        ("deepseek4.attention.indexer.top_k", u(512)),
        ("deepseek4.attention.output_group_count", u(8)),
        ("deepseek4.attention.output_lora_rank", u(1024)),
        (
            "deepseek4.attention.compress_ratios",
            Value::Array(Array::from(vec![0u32, 0, 4, 128])),
        ),
        ("deepseek4.attention.compress_rope_freq_base", f(160000.0)),
        ("deepseek4.hyper_connection.count", u(4)),
        ("deepseek4.hyper_connection.sinkhorn_iterations", u(20)),
        ("deepseek4.hyper_connection.epsilon", f(1e-6)),
        ("deepseek4.hash_layer_count", u(3)),
    ]
}

#[test]
fn ds4_flash_header_holds_what_llama_cpp_loads() {
    // 4 layers: raw-window layers (0, 1), ratio 4 (2), ratio 128 (3); hash-routed 0-2.
    // The data (9 GB) is streamed and counted, not stored: the header goes into a sparse
    // file of the full length, which is all parsing and the bounds checks read.
    let synth = ds4("ds4-flash", Some(4), Mix::Iq2XxsQ2K, 0);
    let mut sink = HeadSink {
        head: Vec::new(),
        keep: 16 << 20,
        total: 0,
    };
    let written = synth.write_to(&mut sink, &mut |_, _| {}).unwrap();
    assert_eq!(written, sink.total);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flash4.gguf");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&sink.head).unwrap();
    file.set_len(sink.total).unwrap();
    drop(file);
    let file = GgufFile::open(&path).unwrap();

    let mut want: Vec<(String, &[usize], GgmlType)> = FLASH_GLOBAL
        .iter()
        .map(|&(n, d, t)| (n.to_string(), d, t))
        .collect();
    for il in 0..4 {
        let hashed = [if il < 3 { FLASH_HASHED } else { FLASH_SCORED }];
        let compressed = match il {
            2 => FLASH_RATIO_4,
            3 => FLASH_RATIO_128,
            _ => &[],
        };
        for &(n, d, t) in FLASH_LAYER.iter().chain(&hashed).chain(compressed) {
            want.push((format!("blk.{il}.{n}"), d, t));
        }
    }
    let mut got: Vec<(String, &[usize], GgmlType)> = file
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.dims.as_slice(), t.ty))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);

    for (key, value) in flash_keys() {
        assert_eq!(file.get(key), Some(&value), "{key}");
    }
    // The file ends with the last tensor, and holds the tensor bytes the synth announced.
    let end = file.tensors().iter().map(|t| t.offset + t.len).max();
    assert_eq!(end, Some(sink.total as usize));
    let data: u64 = file.tensors().iter().map(|t| t.len as u64).sum();
    assert_eq!(data, synth.tensor_bytes());
    // What a reader of this file (llama.cpp, the reference) recovers as its vocabulary.
    assert_eq!(Tokenizer::from_gguf(&file).unwrap().vocab_size(), 129_280);
}

#[test]
fn ds4_same_seed_same_bytes_other_seed_other_weights() {
    let a = bytes(&ds4("tiny-ds4", None, Mix::Iq2XxsQ2K, 7));
    assert_eq!(a, bytes(&ds4("tiny-ds4", None, Mix::Iq2XxsQ2K, 7)));
    let b = bytes(&ds4("tiny-ds4", None, Mix::Iq2XxsQ2K, 8));
    assert_eq!(a.len(), b.len());
    assert_ne!(a, b);
}

#[test]
fn ds4_mixes_follow_the_original_engine_and_refuse_k_quant_mixes() {
    let check = |mix: Mix, name: &str, want: GgmlType| {
        let file = GgufFile::from_bytes(bytes(&ds4("tiny-ds4", None, mix, 0))).unwrap();
        assert_eq!(file.tensor(name).unwrap().ty, want, "{} {name}", mix.name());
    };
    check(Mix::Q4K, "blk.3.ffn_gate_exps.weight", GgmlType::Q4_K);
    check(Mix::Q4K, "blk.3.ffn_down_exps.weight", GgmlType::Q4_K);
    check(Mix::Q4K, "blk.3.ffn_down_shexp.weight", Q8_0);
    check(Mix::Q4K, "blk.2.indexer.attn_q_b.weight", F16);
    check(Mix::Q4K, "blk.0.ffn_gate_tid2eid.weight", I32);
    check(Mix::Q8_0, "blk.0.hc_ffn_fn.weight", Q8_0);
    check(Mix::Q8_0, "blk.0.ffn_gate_tid2eid.weight", I32);
    check(Mix::Q8_0, "blk.1.attn_sinks.weight", F32);
    check(Mix::F16, "output.weight", F16);
    // The qwen3moe meaning of q4_k: routed experts Q4_K, other matrices Q8_0.
    let file = GgufFile::from_bytes(bytes(&tiny(Mix::Q4K, 0))).unwrap();
    let ty = |name: &str| file.tensor(name).unwrap().ty;
    assert_eq!(ty("blk.1.ffn_down_exps.weight"), GgmlType::Q4_K);
    assert_eq!(ty("blk.1.attn_v.weight"), Q8_0);
    assert_eq!(ty("blk.1.ffn_gate_inp.weight"), F32);
    for mix in [Mix::Q4KM, Mix::Q2K] {
        let err = ds4("tiny-ds4", None, mix, 0)
            .write_to(std::io::sink(), &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("iq2_xxs-q2_k, q4_k"), "{err}");
    }
}

#[test]
fn ds4_layers_keep_the_first_layers_pattern() {
    let file = GgufFile::from_bytes(bytes(&ds4("tiny-ds4", Some(2), Mix::Q8_0, 0))).unwrap();
    assert_eq!(
        file.get("deepseek4.attention.compress_ratios"),
        Some(&Value::Array(Array::from(vec![0u32, 0])))
    );
    assert!(
        file.tensors()
            .iter()
            .all(|t| !t.name.contains("compressor"))
    );
    assert!(file.tensor("blk.1.exp_probs_b.bias").is_some());
    let err = Preset::by_name("ds4-flash")
        .unwrap()
        .with_layers(44)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1..=43"), "{err}");
    // Set past the pattern by hand: sized without a panic, refused when written.
    let mut long = Preset::by_name("tiny-ds4").unwrap();
    long.n_layers = 5;
    let synth = Synth::new(long, Mix::Q8_0, 0);
    assert!(synth.tensor_bytes() > 0);
    let err = synth
        .write_to(std::io::sink(), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("1..=4"), "{err}");

    // A preset hash-routing more layers than a file has: the file hash-routes all of them.
    let mut preset = Preset::by_name("tiny-ds4").unwrap().with_layers(2).unwrap();
    let Family::Deepseek4(dims) = &mut preset.family else {
        panic!("tiny-ds4 is deepseek4")
    };
    dims.hash_layers = 3;
    let file = GgufFile::from_bytes(bytes(&Synth::new(preset, Mix::Q8_0, 0))).unwrap();
    assert_eq!(file.get("deepseek4.hash_layer_count"), Some(&Value::U32(2)));
    // Each token's row of the table: K distinct experts.
    let t = file.tensor("blk.1.ffn_gate_tid2eid.weight").unwrap();
    assert_eq!(t.dims, [preset.n_experts_used, preset.n_vocab]);
    let ids: Vec<i32> = file
        .tensor_bytes(t)
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    for row in ids.chunks(preset.n_experts_used) {
        let distinct: std::collections::HashSet<_> = row.iter().collect();
        assert_eq!(distinct.len(), row.len(), "{row:?}");
        assert!(
            row.iter()
                .all(|&id| (0..preset.n_experts as i32).contains(&id))
        );
    }
    assert!(ids.iter().collect::<std::collections::HashSet<_>>().len() > 1);
}

#[test]
fn qwen36_35b_a3b_has_the_real_size() {
    // Qwen3.6-35B-A3B Q4_K_M is 21-22 GB in llama.cpp's files (35B parameters, a 248K
    // vocabulary); ours differs by the exact mix (F32 DeltaNet gates, Q4_K shared experts).
    let synth = Synth::new(Preset::by_name("qwen3.6-35b-a3b").unwrap(), Mix::Q4KM, 0);
    let gb = synth.tensor_bytes() as f64 / 1e9;
    eprintln!("qwen3.6-35b-a3b q4_k_m: {gb:.2} GB");
    assert!((18.0..24.0).contains(&gb), "{gb} GB");
}

// gpt-oss presets.

#[test]
fn gpt_oss_20b_has_the_real_size_and_refuses_k_quant_mixes() {
    // ggml-org's gpt-oss-20b-mxfp4.gguf is 12.1 GB: MXFP4 experts, the rest about 8 bits.
    let preset = Preset::by_name("gpt-oss-20b").unwrap();
    let synth = Synth::new(preset, Mix::Mxfp4, 0);
    synth.check().unwrap();
    let gb = synth.tensor_bytes() as f64 / 1e9;
    eprintln!("gpt-oss-20b mxfp4: {gb:.2} GB");
    assert!((11.5..12.5).contains(&gb), "{gb} GB");
    for (mix, name) in Mix::ALL {
        let refused = Synth::new(preset, mix, 0).check().is_err();
        let k_quant = !matches!(mix, Mix::Mxfp4 | Mix::Q8_0 | Mix::F16);
        assert_eq!(refused, k_quant, "{name}");
    }
}

#[test]
fn tiny_gptoss_header_holds_what_llama_cpp_loads() {
    let preset = Preset::by_name("tiny-gptoss").unwrap();
    let file = GgufFile::from_bytes(bytes(&Synth::new(preset, Mix::Mxfp4, 0))).unwrap();
    assert_eq!(file.get_str("general.architecture").unwrap(), "gpt-oss");
    assert_eq!(file.get_str("gpt-oss.rope.scaling.type").unwrap(), "yarn");
    assert_eq!(
        file.get_u64("gpt-oss.attention.sliding_window").unwrap(),
        32
    );
    let ty = |name: &str| file.tensor(name).unwrap().ty;
    assert_eq!(ty("blk.0.ffn_gate_exps.weight"), GgmlType::MXFP4);
    assert_eq!(ty("blk.3.ffn_down_exps.weight"), GgmlType::MXFP4);
    assert_eq!(ty("blk.1.attn_q.weight"), GgmlType::Q8_0);
    assert_eq!(ty("output.weight"), GgmlType::Q8_0);
    assert_eq!(ty("blk.2.ffn_gate_inp.weight"), GgmlType::F32);
    assert_eq!(ty("blk.2.ffn_up_exps.bias"), GgmlType::F32);
    assert_eq!(file.tensor("blk.0.attn_sinks.weight").unwrap().dims, [4]);
    assert_eq!(
        file.tensor("blk.0.ffn_down_exps.bias").unwrap().dims,
        [256, 16]
    );
}
