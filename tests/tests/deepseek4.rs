//! The deepseek4 (DeepSeek V4 Flash) CPU reference against the fixture goldens, at every
//! position of the fixture's 300-token prompt, and proof that the fixture exercises each
//! feature: switching one off must move the logits, from the position where the feature
//! first acts (README-deepseek4.md in the fixtures describes the model).
//!
//! The tiny model has 6 layers: 0-1 without compression, 2 and 4 with ratio-4 rows picked by
//! the indexer (top 3), 3 and 5 with ratio-128 rows; layers 0-2 route by token hash, 3-5 by
//! the biased router; every layer clamps its SwiGLUs (the shared expert of layer 2 does not).
//! Where features first act on the prompt:
//! - position 0: hyper-connections (Sinkhorn), sinks, routing (hash, bias, weight
//!   normalisation and scale), clamps, shared expert;
//! - position 1: RoPE (base 20000 raw, 160000 with YaRN compressed; position 0 is unrotated);
//! - position 3: the first ratio-4 row (block 0, with its empty previous window);
//! - position 15: the first query with more visible ratio-4 rows (4) than top-k (3);
//! - position 127: the first ratio-128 row;
//! - position 128: the raw window (128 keys) starts to slide.
//!
//! The goldens hold llama.cpp's graph, so they are compared with the low-precision simulation
//! off, as is greedy generation of 32 tokens against llama.cpp's; further down, the
//! simulation's effect is reported, the FP8/FP4 roundings checked against ml_dtypes, and
//! prompts fed in chunks or one token at a time checked against the one-shot logits, bit for
//! bit, across all of those boundaries. Last, a `tiny-ds4` written by `moetile synth` runs on
//! the reference and, in F16, agrees with llama.cpp at every position, its hash-routed layer
//! and indexer checked by what the state recorded.

use moetile::gguf::{Array, GgufFile, Value};
use moetile::quant::GgmlType;
use moetile::synth::{Deepseek4Dims, Family, Mix, Preset, Synth};
use moetile_cpu::deepseek4::{Compression, Deepseek4Options, Deepseek4Reference, qat};
use moetile_tests::golden::{Agreement, Golden, agreement};
use moetile_tests::rewrite::Tensor;
use moetile_tests::{fixtures, model_fixture};

const F32: &str = "deepseek4-tiny-f32";
const Q8_0: &str = "deepseek4-tiny-q8_0";

fn open(name: &str) -> (GgufFile, Golden, Golden) {
    let (model, reference, llama) = model_fixture(name);
    (
        GgufFile::open(&model).unwrap(),
        Golden::read(&reference).unwrap(),
        Golden::read(&llama).unwrap(),
    )
}

/// The goldens (llama.cpp's graph and its float64 twin) do not simulate low precision.
const EXACT: Deepseek4Options = Deepseek4Options { qat_sim: false };

fn load(file: &GgufFile) -> Deepseek4Reference {
    Deepseek4Reference::load(file, EXACT).unwrap()
}

fn logits(file: &GgufFile, tokens: &[u32]) -> Vec<f32> {
    load(file).logits(tokens).unwrap()
}

/// Prints the agreement and, when `ok` is false, the first few differing values, then fails.
fn check(what: &str, got: &[f32], want: &Golden, ok: impl Fn(&Agreement) -> bool) {
    let a = agreement(got, &want.logits, want.n_vocab);
    println!("{what}: {a:?}");
    if !ok(&a) {
        let firsts: Vec<String> = got
            .iter()
            .zip(&want.logits)
            .enumerate()
            .filter(|(_, (g, w))| g != w)
            .take(5)
            .map(|(i, (g, w))| {
                let (t, v) = (i / want.n_vocab, i % want.n_vocab);
                format!("position {t} token {v}: got {g}, want {w}")
            })
            .collect();
        panic!("{what}: {a:?}\nfirst differences:\n{}", firsts.join("\n"));
    }
}

/// Against the float64 reference, stored f32: both compute in f64 and round once, so they
/// differ only where summation order moves a value across an f32 rounding boundary, by an
/// ulp. The bound is 2 ulps of the largest logit (|4.2|: ulp 4.8e-7). Measured: 0 on both
/// models (bit-identical).
fn matches_reference(name: &str) {
    let (file, reference, _) = open(name);
    let got = logits(&file, &reference.tokens);
    check(
        &format!("{name} vs float64 reference"),
        &got,
        &reference,
        |a| a.max_abs_diff <= 1e-6 && a.top1 == 1.0,
    );
}

#[test]
fn f32_matches_float64_reference_at_every_position() {
    matches_reference(F32);
}

#[test]
fn q8_0_matches_float64_reference_at_every_position() {
    matches_reference(Q8_0);
}

/// llama.cpp (F32 KV cache, flash attention off) differs from the float64 reference by its
/// f32 rounding (max 1.2e-5), its golden by the f16 storage on top: half an f16 step at |4.2|
/// is 2e-3. Measured: max 1.4e-3, NMSE 4.3e-8, top-1 0.997 (one near-tie flips in f16).
#[test]
fn f32_agrees_with_llama_cpp() {
    let (file, _, llama) = open(F32);
    let got = logits(&file, &llama.tokens);
    check("f32 vs llama.cpp", &got, &llama, |a| {
        a.max_abs_diff <= 2e-3 && a.nmse <= 1e-7 && a.top1 >= 0.99
    });
}

/// On Q8_0 weights llama.cpp also rounds activations to Q8_0 in its matmuls, so this only
/// catches gross errors. Measured: NMSE 4.2e-3, top-1 0.927 (a wrong model: NMSE ~1).
#[test]
fn q8_0_agrees_with_llama_cpp_loosely() {
    let (file, _, llama) = open(Q8_0);
    let got = logits(&file, &llama.tokens);
    check("q8_0 vs llama.cpp", &got, &llama, |a| {
        a.nmse <= 1e-2 && a.top1 >= 0.9
    });
}

/// The fixture prompt, `deepseek4-prompt-ids.txt`: 300 ids.
fn prompt_ids() -> Vec<u32> {
    let text = std::fs::read_to_string(fixtures().join("models/deepseek4-prompt-ids.txt")).unwrap();
    text.trim().split(',').map(|s| s.parse().unwrap()).collect()
}

/// The first index of the largest value, as llama.cpp's greedy loop picks it.
fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}

/// The largest logit minus the runner-up: how far a greedy pick is from a tie.
fn margin(row: &[f32]) -> f32 {
    let best = argmax(row);
    let second = (0..row.len())
        .filter(|&i| i != best)
        .map(|i| row[i])
        .fold(f32::MIN, f32::max);
    row[best] - second
}

/// The prompt of the greedy fixture: the first 250 ids of the fixture prompt, so the 32
/// generated tokens (positions 250-281) complete the second ratio-128 block (255) and eight
/// ratio-4 blocks one token at a time, with the raw window long full.
const GREEDY_PROMPT: usize = 250;

/// Greedy generation equals llama.cpp's for 32 tokens on the F32 model: prefill the prompt
/// in one call, then one token per call, each the argmax of the last logits.
/// `deepseek4-tiny-f32.greedy.llama.golden` holds llama.cpp's 32 ids and, row i, the logits
/// that chose id i (one `llama_decode` per token, F32 KV cache, flash attention off; a loop
/// that prefills the prompt in one call picks the same ids: README-deepseek4.md).
/// llama.cpp's smallest gap between its pick and the runner-up is 1.0e-2 (step 19), its first
/// step's 0.37: three orders above the f32 rounding that separates the two (max 1.2e-5 on the
/// prompt), so an equal pick is a fair demand. The rows must also agree like the prompt's
/// logits do: NMSE <= 1e-8 at every step. Measured: worst step 5.1e-12, max |diff| 6.1e-6.
#[test]
fn greedy_decode_equals_llama_cpp() {
    let (file, _, _) = open(F32);
    let want =
        Golden::read(&fixtures().join("models/deepseek4-tiny-f32.greedy.llama.golden")).unwrap();
    let model = load(&file);
    let n_vocab = model.config().n_vocab;
    let mut state = model.new_state();
    let prompt = &prompt_ids()[..GREEDY_PROMPT];
    let mut last = model
        .forward(&mut state, prompt)
        .unwrap()
        .split_off((GREEDY_PROMPT - 1) * n_vocab);
    let (mut ids, mut rows) = (Vec::new(), Vec::new());
    for _ in 0..want.tokens.len() {
        let next = argmax(&last) as u32;
        ids.push(next);
        rows.extend_from_slice(&last);
        last = model.forward(&mut state, &[next]).unwrap();
    }
    let margins: Vec<f32> = rows.chunks(n_vocab).map(margin).collect();
    let smallest = (0..margins.len())
        .min_by(|&a, &b| margins[a].total_cmp(&margins[b]))
        .unwrap();
    println!(
        "greedy: first margin {:.3e}, smallest {:.3e} at step {smallest}",
        margins[0], margins[smallest]
    );
    assert_eq!(ids, want.tokens, "greedy ids (ours, llama.cpp's)");
    check("greedy steps vs llama.cpp", &rows, &want, |a| {
        a.max_row_nmse <= 1e-8 && a.top1 == 1.0
    });
}

#[test]
fn golden_tokens_are_the_fixture_prompt() {
    let ids = prompt_ids();
    assert_eq!(ids.len(), 300);
    for name in [F32, Q8_0] {
        let (_, reference, llama) = open(name);
        assert_eq!(reference.tokens, ids, "{name}");
        assert_eq!(llama.tokens, ids, "{name}");
    }
}

/// The F32 fixture with each key's value replaced by `meta(key, value)` (dropped on `None`)
/// and its tensors edited by `edit`.
fn rewrite(
    meta: impl Fn(&str, &Value) -> Option<Value>,
    edit: impl FnOnce(&mut Vec<Tensor>),
) -> GgufFile {
    moetile_tests::rewrite::rewrite(&open(F32).0, meta, edit)
}

/// The fixture with key `deepseek4.{key}` set to `value` (`None`: removed).
fn with_key(key: &str, value: Option<Value>) -> GgufFile {
    let full = format!("deepseek4.{key}");
    rewrite(
        |k, v| {
            if k == full {
                value.clone()
            } else {
                Some(v.clone())
            }
        },
        |_| {},
    )
}

/// The fixture with every tensor whose name satisfies `select` mapped by `f`.
fn with_tensors(select: impl Fn(&str) -> bool, f: impl Fn(f32) -> f32 + Copy) -> GgufFile {
    rewrite(
        |_, v| Some(v.clone()),
        |tensors| {
            let mut hit = false;
            for t in tensors.iter_mut().filter(|t| select(&t.name)) {
                t.map_f32(f);
                hit = true;
            }
            assert!(hit, "no tensor selected");
        },
    )
}

/// Asserts that the edited model computes the fixture's logits exactly up to position
/// `onset` and clearly differently from there on (NMSE > 1e-6 over those positions, a
/// million times the bound of the golden comparison), so the goldens catch the feature.
fn assert_acts_from(edited: &GgufFile, onset: usize) {
    let (file, reference, _) = open(F32);
    let n_vocab = reference.n_vocab;
    let base = logits(&file, &reference.tokens);
    let got = logits(edited, &reference.tokens);
    let first = (0..reference.tokens.len())
        .find(|&t| base[t * n_vocab..(t + 1) * n_vocab] != got[t * n_vocab..(t + 1) * n_vocab]);
    assert_eq!(first, Some(onset), "first position that differs");
    let tail = agreement(&got[onset * n_vocab..], &base[onset * n_vocab..], n_vocab);
    println!("from position {onset}: {tail:?}");
    assert!(tail.nmse > 1e-6, "{tail:?}");
}

#[test]
fn sinkhorn_iterations_act_from_the_first_position() {
    assert_acts_from(
        &with_key("hyper_connection.sinkhorn_iterations", Some(1u32.into())),
        0,
    );
}

#[test]
fn attention_sinks_act_from_the_first_position() {
    assert_acts_from(
        &with_tensors(|n| n.ends_with("attn_sinks.weight"), |_| -1e30),
        0,
    );
}

#[test]
fn routed_clamps_act_from_the_first_position() {
    let off = Value::Array(Array::F32(vec![0.0; 6]));
    assert_acts_from(&with_key("swiglu_clamp_exp", Some(off)), 0);
}

#[test]
fn shared_expert_has_its_own_clamps() {
    // Without the key the shared expert takes the routed clamps.
    assert_acts_from(&with_key("swiglu_clamp_shexp", None), 0);
}

#[test]
fn selection_bias_moves_the_choice() {
    assert_acts_from(
        &with_tensors(|n| n.ends_with("exp_probs_b.bias"), |_| 0.0),
        0,
    );
}

#[test]
fn hash_layers_route_by_token() {
    // Layers 0-2 hash-route; routed by score instead (with a zero bias) the logits move.
    let edited = rewrite(
        |k, v| match k {
            "deepseek4.hash_layer_count" => Some(0u32.into()),
            _ => Some(v.clone()),
        },
        |tensors| {
            for t in tensors
                .iter_mut()
                .filter(|t| t.name.ends_with("ffn_gate_tid2eid.weight"))
            {
                t.name = t
                    .name
                    .replace("ffn_gate_tid2eid.weight", "exp_probs_b.bias");
                t.ty = GgmlType::F32;
                t.dims = vec![8];
                t.bytes = vec![0; 4 * 8];
            }
        },
    );
    assert_acts_from(&edited, 0);
}

#[test]
fn route_weights_are_normalised_and_scaled() {
    assert_acts_from(&with_key("expert_weights_norm", Some(false.into())), 0);
    assert_acts_from(&with_key("expert_weights_scale", Some(1.0f32.into())), 0);
}

#[test]
fn rope_bases_act_from_position_1() {
    assert_acts_from(&with_key("rope.freq_base", Some(10000.0f32.into())), 1);
    assert_acts_from(
        &with_key("attention.compress_rope_freq_base", Some(10000.0f32.into())),
        1,
    );
}

#[test]
fn yarn_acts_from_position_1() {
    // Linear scaling keeps the frequency scale but drops YaRN's ramp.
    assert_acts_from(&with_key("rope.scaling.type", Some("linear".into())), 1);
}

#[test]
fn ratio_4_rows_are_attended_from_position_3() {
    // Zero-normed rows are zero keys: they only add e^(0 - M) to the denominators.
    let csa = |n: &str| {
        n == "blk.2.attn_compressor_norm.weight" || n == "blk.4.attn_compressor_norm.weight"
    };
    assert_acts_from(&with_tensors(csa, |_| 0.0), 3);
}

#[test]
fn indexer_picks_rows_from_position_15() {
    assert_acts_from(
        &with_key("attention.indexer.top_k", Some(1000u32.into())),
        15,
    );
    // With constant scores (all-zero indexer keys) it picks the first rows instead.
    let keys = |n: &str| n.ends_with("indexer_compressor_norm.weight");
    assert_acts_from(&with_tensors(keys, |_| 0.0), 15);
}

#[test]
fn ratio_128_rows_are_attended_from_position_127() {
    let hca = |n: &str| {
        n == "blk.3.attn_compressor_norm.weight" || n == "blk.5.attn_compressor_norm.weight"
    };
    assert_acts_from(&with_tensors(hca, |_| 0.0), 127);
}

#[test]
fn raw_window_slides_from_position_128() {
    assert_acts_from(
        &with_key("attention.sliding_window", Some(1000u32.into())),
        128,
    );
}

/// The error of loading the fixture with key `key` set to `value` (`None`: removed).
fn load_error(key: &str, value: Option<Value>) -> String {
    match Deepseek4Reference::load(&with_key(key, value), EXACT) {
        Ok(_) => panic!("{key}: loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unsupported_configs_are_refused_naming_the_key() {
    let cases: [(&str, Option<Value>, &str); 6] = [
        (
            "hyper_connection.count",
            None,
            "deepseek4.hyper_connection.count",
        ),
        (
            "hyper_connection.count",
            Some(3u32.into()),
            "deepseek4 has 4 streams",
        ),
        ("expert_gating_func", Some(1u32.into()), "sqrt(softplus)"),
        (
            "attention.compress_ratios",
            Some(Value::Array(Array::U32(vec![0, 0, 4, 128, 8, 128]))),
            "gives layer 4 ratio 8; only 0, 4 and 128 exist",
        ),
        (
            "attention.head_count_kv",
            Some(2u32.into()),
            "one key/value head",
        ),
        (
            "attention.sliding_window",
            Some("wide".into()),
            "deepseek4.attention.sliding_window",
        ),
    ];
    for (key, value, want) in cases {
        let err = load_error(key, value);
        println!("{key}: {err}");
        assert!(err.contains(want), "{key}: {err}");
    }
}

#[test]
fn bad_tensors_are_refused_naming_the_tensor() {
    let missing = rewrite(
        |_, v| Some(v.clone()),
        |t| t.retain(|t| t.name != "blk.3.exp_probs_b.bias"),
    );
    let wrong_shape = rewrite(
        |_, v| Some(v.clone()),
        |tensors| {
            let t = tensors
                .iter_mut()
                .find(|t| t.name == "blk.1.attn_sinks.weight")
                .unwrap();
            t.dims = vec![2, 2];
        },
    );
    let unsupported = rewrite(
        |_, v| Some(v.clone()),
        |tensors| {
            let t = tensors
                .iter_mut()
                .find(|t| t.name == "blk.1.attn_sinks.weight")
                .unwrap();
            t.ty = GgmlType::I32;
        },
    );
    let bad_id = rewrite(
        |_, v| Some(v.clone()),
        |tensors| {
            let t = tensors
                .iter_mut()
                .find(|t| t.name == "blk.0.ffn_gate_tid2eid.weight")
                .unwrap();
            t.bytes[..4].copy_from_slice(&8i32.to_le_bytes());
        },
    );
    for (file, want) in [
        (missing, "tensor blk.3.exp_probs_b.bias is missing"),
        (
            wrong_shape,
            "tensor blk.1.attn_sinks.weight has dims [2, 2], the config implies [4]",
        ),
        (
            unsupported,
            "tensor blk.1.attn_sinks.weight: CPU dequantization does not support tensor type I32",
        ),
        (
            bad_id,
            "blk.0.ffn_gate_tid2eid.weight holds id 8, outside 0..8",
        ),
    ] {
        let err = Deepseek4Reference::load(&file, EXACT)
            .err()
            .expect(want)
            .to_string();
        println!("{err}");
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn qat_sim_refuses_indexer_heads_it_cannot_rotate() {
    let file = with_key("attention.indexer.key_length", Some(48u32.into()));
    let err = Deepseek4Reference::load(&file, Deepseek4Options::default())
        .err()
        .expect("loaded")
        .to_string();
    assert!(
        err.contains("indexer.key_length = 48") && err.contains("qat_sim off"),
        "{err}"
    );
}

#[test]
fn token_outside_the_vocabulary_is_refused() {
    let (file, _, _) = open(F32);
    let model = load(&file);
    let err = model.logits(&[1, 128]).unwrap_err().to_string();
    assert!(err.contains("token #1") && err.contains("128"), "{err}");
    assert_eq!(model.logits(&[]).unwrap(), Vec::<f32>::new());
}

/// The logits of `tokens` fed through one state as chunks of `sizes`, the last size repeated
/// until the tokens are used up.
fn chunked(model: &Deepseek4Reference, tokens: &[u32], sizes: &[usize]) -> Vec<f32> {
    let mut state = model.new_state();
    let mut out = Vec::with_capacity(tokens.len() * model.config().n_vocab);
    let mut rest = tokens;
    let last = sizes.last().copied().unwrap_or(tokens.len());
    for size in sizes.iter().copied().chain(std::iter::repeat(last)) {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        out.extend(model.forward(&mut state, chunk).unwrap());
        assert_eq!(state.n_past(), tokens.len() - tail.len());
        rest = tail;
    }
    out
}

/// Asserts bit equality, naming the first position that differs.
fn assert_same_bits(what: &str, got: &[f32], want: &[f32], n_vocab: usize) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: position {} token {}: got {}, one shot {}",
            i / n_vocab,
            i % n_vocab,
            got[i],
            want[i]
        );
    }
}

/// Prefill in chunks equals one shot bit for bit, with the simulation off and on: each
/// position's values come from the same f64 operations in the same order however the prompt
/// is cut (per-token ops are independent, attention and pooling read the same keys in the
/// same order), so no tolerance is needed. The 300-token prompt crosses every boundary:
/// the window slides from 128, ratio-4 blocks end every 4 tokens (the indexer drops rows from
/// 15), ratio-128 blocks at 127 and 255; chunks of 3 and 7 end at every residue, the cut
/// lists end exactly before, at and after each boundary.
#[test]
fn chunked_prefill_equals_one_shot() {
    let (file, reference, _) = open(F32);
    let tokens = &reference.tokens;
    for qat_sim in [false, true] {
        let model = Deepseek4Reference::load(&file, Deepseek4Options { qat_sim }).unwrap();
        let n_vocab = model.config().n_vocab;
        let one_shot = model.logits(tokens).unwrap();
        let schedules: [&[usize]; 7] = [
            &[3],
            &[7],
            &[32],
            &[100],
            &[300],
            // Cuts at 3, 4, 15, 16, 127, 128, 129, 255, 256.
            &[3, 1, 11, 1, 111, 1, 1, 126, 1, 44],
            // Cuts at 2, 14, 126, 254, 257.
            &[2, 12, 112, 128, 3, 43],
        ];
        for sizes in schedules {
            let got = chunked(&model, tokens, sizes);
            assert_same_bits(
                &format!("qat_sim {qat_sim}, chunks {sizes:?}"),
                &got,
                &one_shot,
                n_vocab,
            );
        }
    }
}

/// Decode: a prefill past the window, then one token per call to the end of the prompt (the
/// second ratio-128 block and 43 ratio-4 blocks are completed by single tokens).
#[test]
fn decode_after_prefill_equals_one_shot() {
    let (file, reference, _) = open(F32);
    let tokens = &reference.tokens;
    for qat_sim in [false, true] {
        let model = Deepseek4Reference::load(&file, Deepseek4Options { qat_sim }).unwrap();
        let got = chunked(&model, tokens, &[130, 1]);
        let one_shot = model.logits(tokens).unwrap();
        assert_same_bits(
            &format!("qat_sim {qat_sim}: prefill 130, decode 170"),
            &got,
            &one_shot,
            model.config().n_vocab,
        );
    }
}

#[test]
fn decode_from_the_first_token_equals_one_shot() {
    let (file, reference, _) = open(F32);
    let model = Deepseek4Reference::load(&file, Deepseek4Options::default()).unwrap();
    let tokens = &reference.tokens;
    assert_same_bits(
        "one token per call",
        &chunked(&model, tokens, &[1]),
        &model.logits(tokens).unwrap(),
        model.config().n_vocab,
    );
}

#[test]
fn reset_state_equals_a_new_state() {
    let (file, reference, _) = open(F32);
    let model = Deepseek4Reference::load(&file, Deepseek4Options::default()).unwrap();
    let tokens = &reference.tokens[..140];
    let mut state = model.new_state();
    let first = model.forward(&mut state, tokens).unwrap();
    assert_ne!(state, model.new_state());
    // An empty chunk changes nothing.
    let before = state.clone();
    assert!(model.forward(&mut state, &[]).unwrap().is_empty());
    assert_eq!(state, before);
    state.reset();
    assert_eq!(state, model.new_state());
    // ... and to the state of the same file loaded afresh.
    let fresh = Deepseek4Reference::load(&file, Deepseek4Options::default()).unwrap();
    assert_eq!(state, fresh.new_state());
    assert_eq!(state.n_past(), 0);
    assert_eq!(model.forward(&mut state, tokens).unwrap(), first);
    assert_eq!(fresh.logits(tokens).unwrap(), first);
}

#[test]
fn state_of_another_model_is_refused() {
    let (file, reference, _) = open(F32);
    let model = load(&file);
    // Another config, and the same file with the simulation on: their keys differ.
    let others = [
        load(&with_key("attention.sliding_window", Some(64u32.into()))),
        Deepseek4Reference::load(&file, Deepseek4Options::default()).unwrap(),
    ];
    for other in others {
        let mut state = model.new_state();
        let err = other
            .forward(&mut state, &reference.tokens[..2])
            .unwrap_err()
            .to_string();
        assert!(err.contains("new_state"), "{err}");
        assert_eq!(state.n_past(), 0);
    }
}

/// Our FP8 E4M3 and FP4 E2M1 roundings against ml_dtypes on every value and tie of each
/// format and 1500 random f32 inputs each (`fixtures/quant/minifloat`): bit-exact.
#[test]
fn minifloat_roundings_match_ml_dtypes() {
    let text = std::fs::read_to_string(fixtures().join("quant/minifloat/ml_dtypes.txt")).unwrap();
    let mut counts = [0usize; 2];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(' ').collect();
        let bits = |s: &str| f32::from_bits(u32::from_str_radix(s, 16).unwrap());
        let (x, want) = (bits(fields[1]), bits(fields[2]));
        let (got, count) = match fields[0] {
            "e4m3" => (qat::round_e4m3(x as f64), &mut counts[0]),
            "e2m1" => (qat::round_e2m1(x as f64), &mut counts[1]),
            other => panic!("format {other}"),
        };
        assert_eq!(got, want as f64, "{line}: {x:e}");
        *count += 1;
    }
    assert_eq!(counts, [2006, 1530]);
}

/// Our block roundings against the original engine's own functions on rows of Flash's sizes
/// (`fixtures/quant/minifloat/ds4_rows.bin`, made by compiling `ds4.c`'s
/// `dsv4_fp8_kv_quantize_row_inplace_cpu` and `dsv4_indexer_qat_rows_inplace_cpu`): keys of
/// 512 (FP8 over the first 448 dims) and indexer heads of 128 (Hadamard then FP4), 16 each.
/// Equal bit for bit: the engine's f32 arithmetic can differ from our f64 only where a
/// value lies within an f32 rounding of a tie or a scale boundary, which none of these does.
#[test]
fn qat_roundings_match_the_original_engine() {
    let bytes = std::fs::read(fixtures().join("quant/minifloat/ds4_rows.bin")).unwrap();
    let values: Vec<f64> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
        .collect();
    let (rows, key_dim, n_rot, index_dim) = (16, 512, 64, 128);
    let (keys, rest) = values.split_at(2 * rows * key_dim);
    let (key_in, key_out) = keys.split_at(rows * key_dim);
    let (index_in, index_out) = rest.split_at(rows * index_dim);
    assert_eq!(index_out.len(), rows * index_dim);
    for (r, (x, want)) in key_in
        .chunks(key_dim)
        .zip(key_out.chunks(key_dim))
        .enumerate()
    {
        let mut got = x.to_vec();
        qat::round_fp8_blocks(&mut got[..key_dim - n_rot]);
        assert_eq!(got, want, "key row {r}");
    }
    for (r, (x, want)) in index_in
        .chunks(index_dim)
        .zip(index_out.chunks(index_dim))
        .enumerate()
    {
        let mut got = x.to_vec();
        qat::hadamard(&mut got);
        qat::round_fp4_blocks(&mut got);
        assert_eq!(got, want, "indexer row {r}");
    }
}

/// The simulation on vs off on both tiny models: the difference the issue asks to report.
/// It moves every key's non-RoPE half by up to 2^-4 of its block's largest value (FP8's 3
/// mantissa bits) and the indexer's scores far more (FP4), which changes some of its picks.
/// Measured (printed): F32 NMSE 1.6e-3, max 0.97, top-1 0.967 (10 of 300 positions); Q8_0
/// NMSE 1.6e-3, top-1 0.963. Apart, on F32 (measured once, by switching one rounding off):
/// the FP8 keys alone NMSE 1.5e-3, top-1 0.973; the FP4 indexer alone NMSE 5.1e-4, top-1
/// 0.997, from position 17 (its first changed pick). The bounds, NMSE <= 1e-2 and top-1 >= 0.9, leave 6x and 3x
/// margins and still say the simulation perturbs the model rather than replaces it (an
/// unrelated model: NMSE ~1, top-1 ~0.01); the roundings' own tests pin the values.
#[test]
fn qat_sim_moves_the_logits_by_a_bounded_amount() {
    for name in [F32, Q8_0] {
        let (file, reference, _) = open(name);
        let off = logits(&file, &reference.tokens);
        let on = Deepseek4Reference::load(&file, Deepseek4Options::default())
            .unwrap()
            .logits(&reference.tokens)
            .unwrap();
        let n_vocab = reference.n_vocab;
        let a = agreement(&on, &off, n_vocab);
        println!("{name}: qat_sim on vs off: {a:?}");
        let first = (0..reference.tokens.len())
            .find(|&t| on[t * n_vocab..(t + 1) * n_vocab] != off[t * n_vocab..(t + 1) * n_vocab]);
        println!("{name}: first position that differs: {first:?}");
        assert_eq!(first, Some(0), "keys are rounded from the first position");
        assert!(a.nmse > 0.0 && a.nmse <= 1e-2 && a.top1 >= 0.9, "{a:?}");
    }
}

/// `moetile synth --preset tiny-ds4 --quant MIX --seed SEED`, as GGUF.
fn synth_tiny_ds4(mix: Mix, seed: u64) -> GgufFile {
    let mut bytes = Vec::new();
    let preset = Preset::by_name("tiny-ds4").unwrap();
    Synth::new(preset, mix, seed)
        .write_to(&mut bytes, &mut |_, _| {})
        .unwrap();
    GgufFile::from_bytes(bytes).unwrap()
}

/// A synthesized deepseek4 runs on the reference with logits a model could have: finite,
/// spread over the vocabulary (standard deviation of order one), varying with the position;
/// and its chunked prefill equals one shot. The 140-token prompt crosses the raw window (32
/// keys), the indexer's top-k (8 of the ratio-4 rows, from position 35) and the first
/// ratio-128 row (position 127).
#[test]
fn synthesized_tiny_ds4_runs_on_the_reference() {
    // The original engine's q2 mix: IQ2_XXS/Q2_K experts, F16 and Q8_0 elsewhere.
    let file = synth_tiny_ds4(Mix::Iq2XxsQ2K, 5);
    let tokens: Vec<u32> = (0..140u32).map(|i| (i * 37 + 11) % 500).collect();
    for qat_sim in [true, false] {
        let model = Deepseek4Reference::load(&file, Deepseek4Options { qat_sim }).unwrap();
        let cfg = model.config();
        let ratios = [
            Compression::None,
            Compression::None,
            Compression::Ratio4,
            Compression::Ratio128,
        ];
        assert_eq!(cfg.compression, ratios);
        assert_eq!(
            (cfg.n_experts, cfg.n_experts_used, cfg.hash_layers),
            (16, 4, 1)
        );
        assert_eq!((cfg.sliding_window, cfg.indexer_top_k), (32, 8));
        let n_vocab = cfg.n_vocab;
        let logits = model.logits(&tokens).unwrap();
        assert!(logits.iter().all(|v| v.is_finite()), "qat_sim {qat_sim}");
        let mut argmaxes = std::collections::HashSet::new();
        let mut deviations = Vec::new();
        for (pos, row) in logits.chunks(n_vocab).enumerate() {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n_vocab as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n_vocab as f64;
            assert!(
                (0.2..20.0).contains(&var.sqrt()),
                "qat_sim {qat_sim}, position {pos}: logit deviation {}",
                var.sqrt()
            );
            deviations.push(var.sqrt());
            let best = (0..n_vocab).max_by(|&a, &b| row[a].total_cmp(&row[b]));
            argmaxes.insert(best);
        }
        let range = deviations
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &d| (lo.min(d), hi.max(d)));
        println!(
            "qat_sim {qat_sim}: logit deviation per position {:.3}..{:.3}, {} distinct argmaxes \
             over {} positions",
            range.0,
            range.1,
            argmaxes.len(),
            tokens.len()
        );
        assert!(argmaxes.len() > tokens.len() / 4, "{argmaxes:?}");
        let got = chunked(&model, &tokens, &[5, 30, 1, 64]);
        assert_same_bits(&format!("qat_sim {qat_sim}"), &got, &logits, n_vocab);
    }
}

/// `n` ids of the C-library LCG `x = (1103515245 x + 12345) mod 2^31` from x = 1, id
/// `(x >> 16) mod n_vocab`: the generator of every deepseek4 fixture prompt.
fn lcg_ids(n: usize, n_vocab: u32) -> Vec<u32> {
    let mut x: u64 = 1;
    (0..n)
        .map(|_| {
            x = (1_103_515_245 * x + 12_345) % (1 << 31);
            (x >> 16) as u32 % n_vocab
        })
        .collect()
}

/// Every path of the architecture against llama.cpp, on a model where each one selects:
/// `moetile synth --preset tiny-ds4 --quant f16 --seed 5` (16 experts, 4 used; layer 0
/// hash-routed; the ratio-4 layer's indexer keeps 8 rows; window 32), which llama.cpp ran
/// widened to F32 (exactly: its F16 matmuls would round activations to F16).
/// `tiny-ds4-f16-seed5.llama.golden` holds llama.cpp's logits (F32 KV cache, flash attention
/// off, stored f32) at every position of 250 LCG ids (README-deepseek4.md). Measured: NMSE
/// 4.1e-12, the worst position's 2.8e-11, max |diff| 1.9e-5, top-1 1.0: f32 rounding.
///
/// The logits alone do not show that routing and selection did what they should, so the
/// state's records are checked too: layer 0's experts are its `ffn_gate_tid2eid` rows, token
/// by token, and the indexer left out every visible row beyond its top 8 (from position 35,
/// when a query first sees 9 ratio-4 rows).
#[test]
fn synthesized_tiny_ds4_agrees_with_llama_cpp() {
    let file = synth_tiny_ds4(Mix::F16, 5);
    let want = Golden::read(&fixtures().join("models/tiny-ds4-f16-seed5.llama.golden")).unwrap();
    assert_eq!(want.tokens, lcg_ids(250, 512), "the golden's prompt");
    let model = load(&file);
    let cfg = model.config();
    let mut state = model.new_state();
    let got = model.forward(&mut state, &want.tokens).unwrap();
    check("synthesized tiny-ds4 vs llama.cpp", &got, &want, |a| {
        a.max_row_nmse <= 1e-8 && a.top1 >= 0.98
    });

    let k = cfg.n_experts_used;
    let info = file.tensor("blk.0.ffn_gate_tid2eid.weight").unwrap();
    let table: Vec<usize> = file
        .tensor_bytes(info)
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect();
    let routed = state.routed_experts(0).unwrap();
    assert_eq!(routed.len(), want.tokens.len() * k);
    for (t, &token) in want.tokens.iter().enumerate() {
        let token = token as usize;
        assert_eq!(
            routed[t * k..(t + 1) * k],
            table[token * k..(token + 1) * k],
            "layer 0, position {t}, token {token}"
        );
    }
    // The router's own choice differs from the table's, or the check above proves nothing.
    let biased = state.routed_experts(1).unwrap();
    assert!(
        (0..want.tokens.len()).any(|t| biased[t * k..(t + 1) * k] != routed[t * k..(t + 1) * k])
    );

    let top_k = cfg.indexer_top_k;
    for (layer, compression) in cfg.compression.iter().enumerate() {
        let dropped = state.indexer_dropped(layer).unwrap();
        let want_dropped = match compression {
            Compression::Ratio4 => (0..want.tokens.len())
                .map(|t| ((t + 1) / 4).saturating_sub(top_k))
                .sum(),
            _ => 0,
        };
        println!("layer {layer} ({compression:?}): the indexer left out {dropped} rows");
        assert_eq!(dropped, want_dropped, "layer {layer}");
    }
    assert!(state.indexer_dropped(2).unwrap() > 0);
}

/// The bound of `synthesized_tiny_ds4_agrees_with_llama_cpp` catches a wrong selection: the
/// same weights with the indexer keeping every visible row, or with layer 0 routed by its
/// router instead of its table, miss llama.cpp's logits by far more than 1e-8. Measured:
/// NMSE 5.7e-2 (top-1 0.70) and 0.86 (top-1 0.09).
#[test]
fn synthesized_tiny_ds4_bound_catches_the_indexer_and_the_hash_table() {
    let want = Golden::read(&fixtures().join("models/tiny-ds4-f16-seed5.llama.golden")).unwrap();
    let variant = |edit: &dyn Fn(&mut Deepseek4Dims)| {
        let mut preset = Preset::by_name("tiny-ds4").unwrap();
        let Family::Deepseek4(dims) = &mut preset.family else {
            panic!("tiny-ds4 is deepseek4")
        };
        edit(dims);
        let mut bytes = Vec::new();
        Synth::new(preset, Mix::F16, 5)
            .write_to(&mut bytes, &mut |_, _| {})
            .unwrap();
        GgufFile::from_bytes(bytes).unwrap()
    };
    for (what, file) in [
        (
            "indexer keeps every row",
            variant(&|dims| dims.indexer_top_k = 1 << 20),
        ),
        (
            "layer 0 routed by the router",
            variant(&|dims| dims.hash_layers = 0),
        ),
    ] {
        let a = agreement(&logits(&file, &want.tokens), &want.logits, want.n_vocab);
        println!("{what}: {a:?}");
        assert!(a.max_row_nmse > 1e-6, "{what}: {a:?}");
    }
}
