//! qwen35moe (Qwen3.5 / Qwen3.6 MoE) on the CPU reference against llama.cpp, and on the GPU
//! against the CPU reference, on the tiny fixture `qwen35moe-tiny-f32` (README-qwen35moe.md in
//! the fixtures: three Gated DeltaNet layers and one gated attention layer, 8 experts of which
//! 2 are used, merged and separate gate/up): the logits at every position of the 250-token
//! prompt, greedy generation of 32 tokens, prompts fed in chunks and a token at a time,
//! sequences decoded together, the state's rules, and the refusals.

use moetile::RuntimeConfig;
use moetile::gguf::{GgufFile, Value};
use moetile::model::{Backend, Logits, Model};
use moetile::quant::GgmlType;
use moetile::session::Session;
use moetile::synth::{Mix, Preset, Synth};
use moetile_cpu::CpuBackend;
use moetile_tests::batch::logits_together_and_alone;
use moetile_tests::fixtures;
use moetile_tests::golden::{Golden, agreement};
use moetile_tests::rewrite::{Tensor, rewrite_adding};
use moetile_wgpu::{BackendOptions, WgpuBackend};

const MODEL: &str = "models/qwen35moe-tiny-f32.gguf";

/// The bound on every position's NMSE against llama.cpp (F32 weights, F32 KV cache). The two
/// differ by f32 rounding only: llama.cpp keeps f32 throughout, the reference accumulates in
/// f64 (measured: NMSE 4.8e-13, the largest position's 2.0e-11; README-qwen35moe.md), as
/// llama.cpp's own micro-batches of 1 differ from its one-batch run (7.2e-13). The issue asks
/// 1e-8.
const NMSE: f64 = 1e-10;

fn file() -> GgufFile {
    GgufFile::open(&fixtures().join(MODEL)).unwrap()
}

fn golden(name: &str) -> Golden {
    Golden::read(&fixtures().join("models").join(name)).unwrap()
}

fn session(model: &Model<CpuBackend>, cpu: &mut CpuBackend, chunk: usize) -> Session<CpuBackend> {
    let config = RuntimeConfig {
        chunk,
        ..RuntimeConfig::default()
    };
    Session::new(model, cpu, &config).unwrap()
}

/// Every position's logits of `tokens`, prefilled in chunks of `chunk`.
fn prefill(file: &GgufFile, tokens: &[u32], chunk: usize) -> Vec<f32> {
    let mut cpu = CpuBackend::new();
    let model = Model::load(file, &mut cpu, &mut |_| {}).unwrap();
    let mut s = session(&model, &mut cpu, chunk);
    s.prefill(&model, &mut cpu, tokens, Logits::All).unwrap()
}

#[test]
fn prompt_logits_match_llama_cpp_at_every_position() {
    let want = golden("qwen35moe-tiny-f32.llama.golden");
    assert_eq!(want.tokens.len(), 250);
    let got = prefill(&file(), &want.tokens, 512);
    let a = agreement(&got, &want.logits, want.n_vocab);
    println!("CPU reference vs llama.cpp: {a:?}");
    assert!(a.max_row_nmse <= NMSE && a.top1 == 1.0, "{a:?}");
}

/// Chunks that do not divide the prompt (7, 64, 100), and one token per call, give the one-shot
/// logits bit for bit: every op but attention and the DeltaNet acts per row, attention is exact
/// per query, and the DeltaNet runs token by token with its state stored in f32 between tokens
/// whatever the calls.
#[test]
fn chunked_and_token_by_token_prefill_equal_one_shot() {
    let (file, tokens) = (file(), golden("qwen35moe-tiny-f32.llama.golden").tokens);
    let one_shot = prefill(&file, &tokens, 512);
    for chunk in [1, 7, 64, 100] {
        let got = prefill(&file, &tokens, chunk);
        assert!(got == one_shot, "chunks of {chunk} differ from one shot");
    }
}

/// The first index of the largest value, as llama.cpp's greedy loop picks it.
fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best }) as u32
}

/// Greedy generation equals llama.cpp's for 32 tokens: the 250-token prompt in one call, then
/// one token per call. `qwen35moe-tiny-f32.greedy.llama.golden` holds llama.cpp's ids (one
/// `llama_decode` per token) and, row i, the logits that chose id i; its smallest gap between
/// pick and runner-up is 2.1e-2, far above the f32 rounding between the two.
#[test]
fn greedy_32_tokens_equal_llama_cpp() {
    let want = golden("qwen35moe-tiny-f32.greedy.llama.golden");
    let prompt = golden("qwen35moe-tiny-f32.llama.golden").tokens;
    let file = file();
    let mut cpu = CpuBackend::new();
    let model = Model::load(&file, &mut cpu, &mut |_| {}).unwrap();
    let mut s = session(&model, &mut cpu, 512);
    let mut logits = s.prefill(&model, &mut cpu, &prompt, Logits::Last).unwrap();
    let (mut ids, mut rows) = (Vec::new(), Vec::new());
    for _ in 0..32 {
        let id = argmax(&logits);
        ids.push(id);
        rows.extend_from_slice(&logits);
        logits = s.prefill(&model, &mut cpu, &[id], Logits::Last).unwrap();
    }
    assert_eq!(ids, want.tokens);
    let a = agreement(&rows, &want.logits, want.n_vocab);
    println!("greedy rows vs llama.cpp: {a:?}");
    assert!(a.max_row_nmse <= NMSE, "{a:?}");
}

/// The state continues where it stopped or restarts at 0; any other position is refused,
/// naming both. A session truncated inside what it holds starts over (the cache cannot
/// rewind), and then gives the logits of a fresh one.
#[test]
fn state_continues_or_restarts_never_rewinds() {
    let (file, tokens) = (file(), golden("qwen35moe-tiny-f32.llama.golden").tokens);
    let mut cpu = CpuBackend::new();
    let model = Model::load(&file, &mut cpu, &mut |_| {}).unwrap();
    assert!(!model.config.cache_rewinds());
    let config = RuntimeConfig::default();
    let mut kv = model.kv_cache(&mut cpu, 512, &config).unwrap();
    let policy = config.resolve_tile_policy();
    let fwd = |cpu: &mut CpuBackend, kv: &mut _, t: &[u32], pos0| {
        model.forward(cpu, kv, t, pos0, &policy, Logits::All)
    };
    fwd(&mut cpu, &mut kv, &tokens[..10], 0).unwrap();
    let err = fwd(&mut cpu, &mut kv, &tokens[10..12], 5)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds 10 tokens") && err.contains("position 5"),
        "{err}"
    );
    // Restarting at 0 forgets the first run.
    let again = fwd(&mut cpu, &mut kv, &tokens[..4], 0).unwrap();
    let fresh = prefill(&file, &tokens[..4], 512);
    assert!(cpu.read(&again).unwrap() == fresh);

    let mut s = session(&model, &mut cpu, 512);
    s.prefill(&model, &mut cpu, &tokens[..20], Logits::Last)
        .unwrap();
    s.truncate(8);
    assert!(
        s.tokens().is_empty(),
        "a truncated qwen35moe session starts over"
    );
    let got = s
        .prefill(&model, &mut cpu, &tokens[..12], Logits::All)
        .unwrap();
    assert!(got == prefill(&file, &tokens[..12], 512));
}

/// Three sequences of the fixture's prompt, of 40, 0 and 7 tokens, each continued by 3 tokens
/// of its own: decoded in one pass per step (`Session::decode_batch`, as the server batches
/// them: the DeltaNet and attention layers each row on its own cache), and each decoded alone,
/// by the fixture's `model`: `(together, alone)`, the logits of every step of every sequence.
fn decoded_together_and_alone<B: Backend>(
    backend: &mut B,
    model: &Model<B>,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let tokens = golden("qwen35moe-tiny-f32.llama.golden").tokens;
    let prompts = [&tokens[..40], &[], &tokens[100..107]];
    let next = [&tokens[200..203], &tokens[203..206], &tokens[206..209]];
    let config = RuntimeConfig::default();
    logits_together_and_alone(model, backend, &config, &prompts, &next)
}

/// Sequences at different positions (one empty) decoded together give the logits each gives
/// alone, bit for bit: every op but attention and the DeltaNet acts per row, and those run
/// each row as its one-token call alone does.
#[test]
fn sequences_decoded_together_equal_each_alone() {
    let mut cpu = CpuBackend::new();
    let model = Model::load(&file(), &mut cpu, &mut |_| {}).unwrap();
    let (together, alone) = decoded_together_and_alone(&mut cpu, &model);
    assert!(together == alone, "decoded together differs from alone");
}

/// The fixture with key `qwen35moe.{key}` set to `value` (`None`: removed; added when absent),
/// and tensor `tensor` dropped or, named `*.scale`, added; what loading it on the CPU says.
fn load_error(key: &str, value: Option<Value>, tensor: &str) -> String {
    let (src, full) = (file(), format!("qwen35moe.{key}"));
    let added: Vec<(&str, Value)> = match &value {
        Some(v) if src.get(&full).is_none() => vec![(full.as_str(), v.clone())],
        _ => Vec::new(),
    };
    let edited = rewrite_adding(
        &src,
        |k, v| {
            if k == full {
                value.clone()
            } else {
                Some(v.clone())
            }
        },
        &added,
        |t| match tensor.strip_suffix(".scale") {
            Some(_) => t.push(Tensor {
                name: tensor.into(),
                ty: GgmlType::F32,
                dims: vec![1],
                bytes: 1f32.to_le_bytes().to_vec(),
            }),
            None => t.retain(|t| t.name != tensor),
        },
    );
    match Model::load(&edited, &mut CpuBackend::new(), &mut |_| {}) {
        Ok(_) => panic!("{key} / {tensor}: loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_are_refused_naming_the_key_or_tensor() {
    let cases: [(&str, Option<Value>, &str, &str); 9] = [
        ("ssm.state_size", None, "", "qwen35moe.ssm.state_size"),
        (
            "ssm.inner_size",
            Some(96u32.into()),
            "",
            "ssm.state_size x ssm.time_step_rank",
        ),
        (
            "ssm.group_count",
            Some(3u32.into()),
            "",
            "multiple of the key heads",
        ),
        (
            "rope.dimension_sections",
            None,
            "",
            "qwen35moe.rope.dimension_sections",
        ),
        (
            "rope.dimension_sections",
            Some(Value::Array(moetile::gguf::Array::I32(vec![4, 2, 2, 0]))),
            "",
            "rotated pair 7 takes the extra (4th) position",
        ),
        (
            "",
            None,
            "blk.1.ssm_conv1d.weight",
            "tensor blk.1.ssm_conv1d.weight is missing",
        ),
        (
            "",
            None,
            "blk.3.attn_q.weight",
            "tensor blk.3.attn_q.weight is missing",
        ),
        (
            "",
            None,
            "blk.0.ssm_out.scale",
            "blk.0.ssm_out.scale: per-tensor scales",
        ),
        (
            "attention.scale",
            Some(0.5f32.into()),
            "",
            "only the default 1/sqrt(head_dim)",
        ),
    ];
    for (key, value, tensor, want) in cases {
        let err = load_error(key, value, tensor);
        println!("{key}{tensor}: {err}");
        assert!(err.contains(want), "{key}{tensor}: {err}");
    }
}

/// The fixture loaded on a GPU backend with `options`, every buffer poisoned.
fn gpu_model(file: &GgufFile, options: BackendOptions) -> (WgpuBackend, Model<WgpuBackend>) {
    let ctx = moetile_tests::gpu_context().expect("checked by the caller");
    let options = BackendOptions {
        poison: true,
        ..options
    };
    let mut gpu = WgpuBackend::with_options(ctx, options).unwrap();
    let model = Model::load(file, &mut gpu, &mut |_| {}).unwrap();
    (gpu, model)
}

/// Every position's logits of `tokens` on the GPU with `options` (poisoned), prefilled in
/// chunks of `chunk`, the last `decoded` tokens decoded one at a time.
fn gpu_logits(
    file: &GgufFile,
    options: BackendOptions,
    tokens: &[u32],
    chunk: usize,
    decoded: usize,
) -> Vec<f32> {
    let (mut gpu, model) = gpu_model(file, options);
    let config = RuntimeConfig {
        chunk,
        ..RuntimeConfig::default()
    };
    let mut s = Session::new(&model, &mut gpu, &config).unwrap();
    let split = tokens.len() - decoded;
    let mut logits = s
        .prefill(&model, &mut gpu, &tokens[..split], Logits::All)
        .unwrap();
    for &t in &tokens[split..] {
        logits.extend(s.decode(&model, &mut gpu, t).unwrap());
    }
    logits
}

/// The GPU (every buffer poisoned first) against the CPU reference at every position of the
/// 250-token prompt: in one shot, in chunks of 61 (not dividing the prompt), and prefilling
/// all but 12 tokens then decoding those one at a time (the mat-vec path and decode
/// attention), with the exact options and with the device's defaults. Budgets are those of the
/// other architectures' GPU tests (tests/gpu_model.rs, whose module docs derive them), on the
/// NMSE against the CPU reference (itself within 1e-10 of llama.cpp, see `NMSE`):
/// - exact (f32 storage everywhere): median and whole 1e-11; the DeltaNet adds f32 rounding
///   of its state per token, as the attention layers' f32 scores do. The same with the
///   DeltaNet's prefill in its chunked (WY) form, which rounds differently (its own f32
///   rounding, see `delta_net_matches_cpu` in the wgpu ops tests).
/// - defaults (f16 KV cache and `mid` on lavapipe): median 2e-7, whole 1e-3 (a routing flip
///   at a near-tie is allowed, errors at many positions are not).
/// - the defaults with the mat-vecs (int8 inputs where the weight type has them; this F32
///   model's keep f32 inputs) for batches up to 128, so chunks of 61 take them at every
///   position: the int8 budget, median 3e-4, whole 3e-3.
///
/// Top-1 equal at >= 98 % of positions on every path, 100 % with the exact options.
#[test]
fn gpu_matches_cpu_reference_at_every_position() {
    let Some(ctx) = moetile_tests::gpu_context() else {
        return;
    };
    let (file, tokens) = (file(), golden("qwen35moe-tiny-f32.llama.golden").tokens);
    let want = prefill(&file, &tokens, 512);
    let n_vocab = 128;
    let exact = (BackendOptions::exact(), 1e-11, 1e-11, 1.0);
    let default = (BackendOptions::for_device(&ctx), 2e-7, 1e-3, 0.98);
    let mat_vecs = BackendOptions {
        mat_vec_max_tokens: 128,
        int8_mat_vec: true,
        ..BackendOptions::for_device(&ctx)
    };
    let chunked = BackendOptions {
        chunked_delta_net: true,
        ..BackendOptions::exact()
    };
    let runs = [
        exact,
        (chunked, 1e-11, 1e-11, 1.0),
        default,
        (mat_vecs, 3e-4, 3e-3, 0.98),
    ];
    for (options, median, whole, top1) in runs {
        for (chunk, decoded) in [(512, 0), (61, 0), (512, 12)] {
            let got = gpu_logits(&file, options, &tokens, chunk, decoded);
            let a = agreement(&got, &want, n_vocab);
            println!(
                "GPU ({:?} KV, {:?} mid, mat-vecs up to {} tokens, chunked DeltaNet {}) chunks \
                 of {chunk}, {decoded} decoded vs CPU: {a:?}",
                options.kv, options.mid, options.mat_vec_max_tokens, options.chunked_delta_net
            );
            assert!(
                a.median_row_nmse <= median && a.nmse <= whole && a.top1 >= top1,
                "chunks of {chunk}, {decoded} decoded, {options:?}: {a:?}"
            );
        }
    }
}

/// Greedy generation on the GPU with the exact options equals llama.cpp's 32 ids (the
/// smallest gap between pick and runner-up in the golden is 2.1e-2, far above the GPU's f32
/// rounding): the prompt in one call, then one token per call (decode).
#[test]
fn gpu_greedy_32_tokens_equal_llama_cpp() {
    if moetile_tests::gpu_context().is_none() {
        return;
    }
    let want = golden("qwen35moe-tiny-f32.greedy.llama.golden");
    let prompt = golden("qwen35moe-tiny-f32.llama.golden").tokens;
    let file = file();
    let (mut gpu, model) = gpu_model(&file, BackendOptions::exact());
    let mut s = Session::new(&model, &mut gpu, &RuntimeConfig::default()).unwrap();
    let mut logits = s.prefill(&model, &mut gpu, &prompt, Logits::Last).unwrap();
    let mut ids = Vec::new();
    for _ in 0..32 {
        let id = argmax(&logits);
        ids.push(id);
        logits = s.decode(&model, &mut gpu, id).unwrap();
    }
    assert_eq!(ids, want.tokens);
}

/// A chat of three turns on the GPU: each turn resends the whole conversation (the last
/// reply and a new user message appended), the session keeps the DeltaNet state and keys it
/// holds (the whole of what it holds is the prompt's prefix, so nothing restarts) and prefills
/// only the new tokens, then decodes a 4-token greedy reply. Each turn's logits equal those of
/// a fresh session given the same conversation: within the exact options' budget (1e-11; the
/// two split the tokens into different calls, so the attention and matmul kernels differ) and
/// the same argmax.
#[test]
fn gpu_chat_turns_reuse_state_and_equal_from_scratch() {
    if moetile_tests::gpu_context().is_none() {
        return;
    }
    let tokens = golden("qwen35moe-tiny-f32.llama.golden").tokens;
    let file = file();
    let (mut gpu, model) = gpu_model(&file, BackendOptions::exact());
    let config = RuntimeConfig::default();
    let mut chat = Session::new(&model, &mut gpu, &config).unwrap();
    let mut conversation = Vec::new();
    for user in tokens[..150].chunks(50) {
        conversation.extend_from_slice(user);
        let held = chat.tokens().len();
        assert_eq!(
            chat.reusable_prefix(&conversation),
            held,
            "the state restarted"
        );
        let got = chat
            .prefill_reusing(&model, &mut gpu, &conversation)
            .unwrap();
        let mut fresh = Session::new(&model, &mut gpu, &config).unwrap();
        let want = fresh
            .prefill_reusing(&model, &mut gpu, &conversation)
            .unwrap();
        let a = agreement(&got, &want, want.len());
        println!("turn at {held} tokens: reused vs from scratch {a:?}");
        assert!(a.nmse <= 1e-11 && a.top1 == 1.0, "{a:?}");
        let mut logits = got;
        for _ in 0..4 {
            let id = argmax(&logits);
            conversation.push(id);
            logits = chat.decode(&model, &mut gpu, id).unwrap();
        }
    }
}

/// On the GPU too, sequences decoded together (`delta_net_batch` and `attention_batch`: each
/// row's kernels on its own cache, within one pass) give the logits each gives alone, within
/// the exact options' budget of `gpu_matches_cpu_reference_at_every_position` (1e-11: the
/// batch of three runs the tiled matmuls, each token alone the mat-vecs; measured NMSE 5.1e-13
/// at most) and the same argmax.
#[test]
fn gpu_decodes_sequences_together_like_each_alone() {
    if moetile_tests::gpu_context().is_none() {
        return;
    }
    let (mut gpu, model) = gpu_model(&file(), BackendOptions::exact());
    let (together, alone) = decoded_together_and_alone(&mut gpu, &model);
    for (i, (together, alone)) in together.iter().zip(&alone).enumerate() {
        let a = agreement(together, alone, 128);
        println!("sequence {i}: together vs alone: {a:?}");
        assert!(a.nmse <= 1e-11 && a.top1 == 1.0, "sequence {i}: {a:?}");
    }
}

/// llama.cpp reads the file `moetile synth --preset tiny-qwen35moe --quant f16` writes as
/// moetile does: its logits at every position of a 64-token prompt, on the file expanded to
/// F32 (the same weights, multiplied without rounding activations to f16; golden by
/// `make_synth_golden.sh`), against the CPU reference's on the F16 file. On the F16 file
/// itself llama.cpp's f16 activations moved rows by NMSE 1e-6 to 1e-5 and flipped a near-tied
/// expert (one row at 1.2e-2).
#[test]
fn synthetic_model_reads_as_llama_cpp_reads_it() {
    let want = golden("qwen35moe-synth-tiny-f16.expanded.llama.golden");
    let preset = Preset::by_name("tiny-qwen35moe").unwrap();
    let mut bytes = Vec::new();
    Synth::new(preset, Mix::F16, 0)
        .write_to(&mut bytes, &mut |_, _| {})
        .unwrap();
    let file = GgufFile::from_bytes(bytes).unwrap();
    let got = prefill(&file, &want.tokens, 512);
    let a = agreement(&got, &want.logits, want.n_vocab);
    println!("CPU reference vs llama.cpp on the synthetic model: {a:?}");
    assert!(a.max_row_nmse <= NMSE && a.top1 == 1.0, "{a:?}");
}
