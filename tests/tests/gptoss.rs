//! gpt-oss on the CPU reference against llama.cpp, on the tiny fixture `gptoss-tiny-f32`
//! (README-gptoss.md in the fixtures: 4 layers alternating a 128-token sliding window and full
//! attention with per-head sinks, YaRN RoPE, 8 biased experts of which 4 are used): the logits
//! at every position of the 250-token prompt (F32, and with MXFP4 experts), greedy generation
//! of 32 tokens, prompts fed in chunks and a token at a time, sequences decoded together, the
//! refusals; and the GPU backend against the reference, alone and decoding sequences together.
//! Also the `tiny-gptoss` synth preset: llama.cpp reads it as moetile does, and its MXFP4 mix
//! runs.

use moetile::RuntimeConfig;
use moetile::gguf::{GgufFile, Value};
use moetile::model::{Backend, Logits, Model};
use moetile::quant::GgmlType;
use moetile::synth::{Mix, Preset, Synth};
use moetile_cpu::CpuBackend;
use moetile_tests::batch::logits_together_and_alone;
use moetile_tests::fixtures;
use moetile_tests::golden::{Golden, agreement};
use moetile_tests::rewrite::{Tensor, rewrite_adding};
use moetile_tests::whole_model::{greedy, prefill, session};
use moetile_wgpu::{BackendOptions, WgpuBackend};

const MODEL: &str = "models/gptoss-tiny-f32.gguf";

/// The bound on every position's NMSE against llama.cpp (F32 weights, F32 KV cache). The two
/// differ by f32 rounding: llama.cpp keeps f32 throughout (its rotation angles too, an error
/// that grows with the position), the reference computes in f64 (measured: NMSE 4.7e-12, the
/// largest position's 3.0e-10, at position 243; README-gptoss.md). The issue asks 1e-8.
const NMSE: f64 = 1e-9;

fn file() -> GgufFile {
    GgufFile::open(&fixtures().join(MODEL)).unwrap()
}

fn golden(name: &str) -> Golden {
    Golden::read(&fixtures().join("models").join(name)).unwrap()
}

/// The prompt is longer than the window, so the sliding-window layers drop keys from
/// position 128 on.
#[test]
fn prompt_logits_match_llama_cpp_at_every_position() {
    let want = golden("gptoss-tiny-f32.llama.golden");
    assert_eq!(want.tokens.len(), 250);
    let got = prefill(&mut CpuBackend::new(), &file(), &want.tokens, 512);
    let a = agreement(&got, &want.logits, want.n_vocab);
    println!("CPU reference vs llama.cpp: {a:?}");
    assert!(a.max_row_nmse <= NMSE && a.top1 == 1.0, "{a:?}");
}

/// Chunks that do not divide the prompt (7, 64, 100), and one token per call, give the one-shot
/// logits bit for bit: every op but attention acts per row, and attention is exact per query
/// whatever part of the window the cache held before the call.
#[test]
fn chunked_and_token_by_token_prefill_equal_one_shot() {
    let (file, tokens) = (file(), golden("gptoss-tiny-f32.llama.golden").tokens);
    let one_shot = prefill(&mut CpuBackend::new(), &file, &tokens, 512);
    for chunk in [1, 7, 64, 100] {
        let got = prefill(&mut CpuBackend::new(), &file, &tokens, chunk);
        assert!(got == one_shot, "chunks of {chunk} differ from one shot");
    }
}

/// Greedy generation equals llama.cpp's for 32 tokens: the 250-token prompt in one call, then
/// one token per call. `gptoss-tiny-f32.greedy.llama.golden` holds llama.cpp's ids (one
/// `llama_decode` per token) and, row i, the logits that chose id i.
#[test]
fn greedy_32_tokens_equal_llama_cpp() {
    let want = golden("gptoss-tiny-f32.greedy.llama.golden");
    let prompt = golden("gptoss-tiny-f32.llama.golden").tokens;
    let (ids, rows) = greedy(&mut CpuBackend::new(), &file(), &prompt, 32);
    assert_eq!(ids, want.tokens);
    let a = agreement(&rows, &want.logits, want.n_vocab);
    println!("greedy rows vs llama.cpp: {a:?}");
    assert!(a.max_row_nmse <= NMSE, "{a:?}");
}

/// The next-token logits of two sequences of the fixture's prompt, one past the window (140
/// tokens) and one inside it (10), decoded in one pass (`Session::decode_batch`, as the server
/// batches them), and each decoded alone: `(together, alone)`.
fn decoded_together_and_alone<B: Backend>(backend: &mut B) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let (file, tokens) = (file(), golden("gptoss-tiny-f32.llama.golden").tokens);
    let model = Model::load(&file, backend, &mut |_| {}).unwrap();
    let prompts = [&tokens[..140], &tokens[140..150]];
    let next = [&tokens[200..201], &tokens[201..202]];
    let config = RuntimeConfig::default();
    logits_together_and_alone(&model, backend, &config, &prompts, &next)
}

/// Two sequences decoded in one pass, one past the window and one inside it, give the logits
/// each gives alone, bit for bit.
#[test]
fn sequences_decoded_together_equal_each_alone() {
    let (together, alone) = decoded_together_and_alone(&mut CpuBackend::new());
    assert!(together == alone, "decoded together differs from alone");
}

/// The experts in MXFP4 and attention in Q8_0, as converted gpt-oss files store them
/// (`gptoss-tiny-mxfp4`): the reference dequantizes both exactly, so it matches llama.cpp on
/// the file's F32 expansion as closely as the F32 model does (llama.cpp's own MXFP4 run rounds
/// activations to 8 bits: NMSE 2.7e-3 from its expansion, README-gptoss.md).
#[test]
fn mxfp4_experts_match_llama_cpp_on_their_f32_expansion() {
    let want = golden("gptoss-tiny-mxfp4.expanded.llama.golden");
    let file = GgufFile::open(&fixtures().join("models/gptoss-tiny-mxfp4.gguf")).unwrap();
    let experts = file.tensor("blk.0.ffn_gate_exps.weight").unwrap();
    assert_eq!(experts.ty, GgmlType::MXFP4);
    let got = prefill(&mut CpuBackend::new(), &file, &want.tokens, 512);
    let a = agreement(&got, &want.logits, want.n_vocab);
    println!("CPU reference vs llama.cpp on the F32 expansion: {a:?}");
    assert!(a.max_row_nmse <= NMSE && a.top1 == 1.0, "{a:?}");
}

/// One change to the fixture, for the refusal tests.
enum Edit {
    /// Key `gpt-oss.{0}` set to the value (added when absent), or removed (`None`).
    Key(&'static str, Option<Value>),
    /// A tensor dropped.
    Drop(&'static str),
    /// A one-value f32 tensor added (llama.cpp's test models' `.scale`s).
    Add(&'static str),
}

/// What loading the fixture changed by `edit` on the CPU says.
fn load_error(edit: &Edit) -> String {
    let src = file();
    let (key, value) = match edit {
        Edit::Key(k, v) => (format!("gpt-oss.{k}"), v.clone()),
        _ => (String::new(), None),
    };
    let added: Vec<(&str, Value)> = match &value {
        Some(v) if src.get(&key).is_none() => vec![(key.as_str(), v.clone())],
        _ => Vec::new(),
    };
    let meta = |k: &str, v: &Value| {
        if k == key {
            value.clone()
        } else {
            Some(v.clone())
        }
    };
    let edited = rewrite_adding(&src, meta, &added, |tensors| match edit {
        Edit::Drop(name) => tensors.retain(|t| t.name != *name),
        Edit::Add(name) => tensors.push(Tensor {
            name: name.to_string(),
            ty: GgmlType::F32,
            dims: vec![1],
            bytes: 1f32.to_le_bytes().to_vec(),
        }),
        Edit::Key(..) => {}
    });
    match Model::load(&edited, &mut CpuBackend::new(), &mut |_| {}) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_are_refused_naming_the_key_or_tensor() {
    let pattern = Value::Array(moetile::gguf::Array::Bool(vec![true, false]));
    let cases = [
        (
            Edit::Key("attention.sliding_window", None),
            "gpt-oss.attention.sliding_window",
        ),
        (
            Edit::Key("attention.sliding_window_pattern", Some(pattern)),
            "flag for each of the 4 layers",
        ),
        (
            Edit::Key("rope.scaling.type", Some(Value::from("longrope"))),
            "\"longrope\" is not supported",
        ),
        (
            Edit::Drop("blk.1.attn_sinks.weight"),
            "tensor blk.1.attn_sinks.weight is missing",
        ),
        (
            Edit::Drop("blk.2.ffn_up_exps.bias"),
            "tensor blk.2.ffn_up_exps.bias is missing",
        ),
        (
            Edit::Drop("blk.3.attn_k.bias"),
            "tensor blk.3.attn_k.bias is missing",
        ),
        (
            Edit::Add("blk.0.attn_output.scale"),
            "blk.0.attn_output.scale: per-tensor scales",
        ),
    ];
    for (edit, want) in &cases {
        let err = load_error(edit);
        println!("{err}");
        assert!(err.contains(want), "{err}");
    }
}

/// GPU (median, whole) NMSE bounds against the reference, derived as tests/gpu_model.rs does
/// for the other architectures. The exact options (f32 KV cache and `mid`, register tiles):
/// every op is f32 rounding of the reference's f64, measured median 9.4e-13, whole 1.3e-12 on
/// lavapipe (MXFP4 experts: 8.0e-13, 1.2e-12); bounds 1e-11 as there. The device's defaults
/// (f16 cache and `mid`: keys, values and the experts' down input rounded to 2^-11 relative):
/// measured median 3.2e-7 (MXFP4 experts: 3.5e-7; 1.5e-7 from each storage alone; this
/// fixture is more sensitive than the others, at 2e-8), so the median is bounded at 1e-6; the
/// f16 cache flips a routing decision at a near-tie (one position's NMSE 1e-2, whole 3.4e-5),
/// so the whole NMSE gets the flip allowance of 1e-3, which a broken kernel (errors at every
/// position) exceeds.
const GPU_EXACT: (f64, f64) = (1e-11, 1e-11);
const GPU_DEFAULT: (f64, f64) = (1e-6, 1e-3);

/// The GPU backend (every buffer poisoned with NaN first) against the CPU reference at every
/// position of the 250-token prompt, past the window: prefilled in chunks of 100 (the prefill
/// kernels, the window across chunks), the last 12 tokens decoded one at a time (the split
/// decode attention, its sinks added once in the merge; the mat-vec experts with the exact
/// options), with the exact and the device's default options; on the F32 fixture and the one
/// with MXFP4 experts and Q8_0 attention (which both backends dequantize exactly). Top-1 on
/// >= 98 % of positions; every kernel run was created by `Backend::prepare`.
#[test]
fn gpu_matches_the_cpu_reference() {
    let Some(ctx) = moetile_tests::gpu_context() else {
        return;
    };
    let tokens = golden("gptoss-tiny-f32.llama.golden").tokens;
    let decoded = 12;
    let exact = BackendOptions {
        poison: true,
        ..BackendOptions::exact()
    };
    let default = BackendOptions {
        poison: true,
        ..BackendOptions::for_device(&ctx)
    };
    for name in [MODEL, "models/gptoss-tiny-mxfp4.gguf"] {
        let file = GgufFile::open(&fixtures().join(name)).unwrap();
        let want = prefill(&mut CpuBackend::new(), &file, &tokens, 512);
        let n_vocab = want.len() / tokens.len();
        for (what, options, (median, whole)) in [
            ("exact", exact, GPU_EXACT),
            ("default", default, GPU_DEFAULT),
        ] {
            let mut gpu = WgpuBackend::with_options(ctx.clone(), options).unwrap();
            let model = Model::load(&file, &mut gpu, &mut |_| {}).unwrap();
            gpu.prepare(&model.config, &mut |_, _| {}).unwrap();
            let prepared = ctx.created_kernels();
            let mut s = session(&model, &mut gpu, 100);
            let split = tokens.len() - decoded;
            let mut got = s
                .prefill(&model, &mut gpu, &tokens[..split], Logits::All)
                .unwrap();
            for &t in &tokens[split..] {
                got.extend(s.decode(&model, &mut gpu, t).unwrap());
            }
            let a = agreement(&got, &want, n_vocab);
            println!("{name}: GPU ({what} options) vs CPU reference: {a:?}");
            assert!(
                a.median_row_nmse <= median && a.nmse <= whole && a.top1 >= 0.98,
                "{name}, {what} options: {a:?}"
            );
            let created = ctx.created_kernels();
            assert_eq!(created, prepared, "{name}, {what}: kernels prepare missed");
        }
    }
}

/// On the GPU too, two sequences decoded in one pass (the attention row by row, each over its
/// own cache) give the logits each gives alone, within the exact options' budget (the batch of
/// two runs the tiled experts, each alone the mat-vec; measured NMSE 8.5e-13).
#[test]
fn gpu_decodes_sequences_together_like_each_alone() {
    let Some(ctx) = moetile_tests::gpu_context() else {
        return;
    };
    let options = BackendOptions {
        poison: true,
        ..BackendOptions::exact()
    };
    let mut gpu = WgpuBackend::with_options(ctx, options).unwrap();
    let (together, alone) = decoded_together_and_alone(&mut gpu);
    for (i, (together, alone)) in together.iter().zip(&alone).enumerate() {
        let ag = agreement(together, alone, alone.len());
        println!("sequence {i}: together vs alone: {ag:?}");
        assert!(
            ag.nmse <= GPU_EXACT.1 && ag.top1 == 1.0,
            "sequence {i}: {ag:?}"
        );
    }
}

/// The file `moetile synth --preset tiny-gptoss --quant MIX` writes (seed 0).
fn synth(mix: Mix) -> GgufFile {
    let mut bytes = Vec::new();
    let preset = Preset::by_name("tiny-gptoss").unwrap();
    Synth::new(preset, mix, 0)
        .write_to(&mut bytes, &mut |_, _| {})
        .unwrap();
    GgufFile::from_bytes(bytes).unwrap()
}

/// llama.cpp reads the file `moetile synth --preset tiny-gptoss --quant f16` writes as moetile
/// does: its logits at every position of a 64-token prompt, past the preset's 32-token window,
/// on the file expanded to F32 (the same weights, multiplied without rounding activations to
/// f16; golden by `make_synth_golden.sh`), against the CPU reference's on the F16 file. On
/// the F16 file itself llama.cpp's f16 activations flip a near-tied expert at position 38, and
/// every later row moves with it (through attention).
#[test]
fn synthetic_model_reads_as_llama_cpp_reads_it() {
    let want = golden("gptoss-synth-tiny-f16.expanded.llama.golden");
    let got = prefill(&mut CpuBackend::new(), &synth(Mix::F16), &want.tokens, 512);
    let a = agreement(&got, &want.logits, want.n_vocab);
    println!("CPU reference vs llama.cpp on the synthetic model: {a:?}");
    assert!(a.max_row_nmse <= NMSE && a.top1 == 1.0, "{a:?}");
}

/// The preset in gpt-oss's own mix (MXFP4 experts, Q8_0 elsewhere) loads and generates, with
/// finite logits that are not all one value.
#[test]
fn synthetic_mxfp4_model_generates() {
    let prompt: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % 500 + 1).collect();
    let (ids, rows) = greedy(&mut CpuBackend::new(), &synth(Mix::Mxfp4), &prompt, 4);
    assert_eq!(ids.len(), 4);
    assert!(rows.iter().all(|x| x.is_finite()));
    assert!(rows.iter().any(|&x| x != rows[0]), "constant logits");
}
