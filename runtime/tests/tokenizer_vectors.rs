//! The tokenizer against llama.cpp on real vocabularies (tests/fixtures/vocab/):
//! - llama.cpp's own `test-tokenizer-0` vectors (`.inp`/`.out`), run as that test runs them:
//!   `add_special = false`, `parse_special = false`;
//! - random inputs tokenized by llama.cpp's `llama-tokenize` with BOS and special-token parsing
//!   on and off (`.fuzz.inp`/`.fuzz.out`, written by `make_fuzz.py`);
//! - decoding back to the input, and streaming decode agreeing with `decode`.
//!
//! Large GGUFs are stored xz-compressed (`.gguf.xz`).

use std::path::PathBuf;

use moetile::chat::{ChatMessage, ChatTemplate};
use moetile::gguf::GgufFile;
use moetile::tokenizer::{Tokenizer, Vocab};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/vocab")
        .join(name)
}

/// `ggml-vocab-{name}.gguf`, decompressed when only the `.xz` is there.
fn open_vocab(name: &str) -> GgufFile {
    let plain = fixture(&format!("ggml-vocab-{name}.gguf"));
    if plain.exists() {
        return GgufFile::open(&plain).unwrap_or_else(|e| panic!("{}: {e}", plain.display()));
    }
    let packed = fixture(&format!("ggml-vocab-{name}.gguf.xz"));
    let compressed = std::fs::read(&packed).unwrap_or_else(|e| panic!("{}: {e}", packed.display()));
    let mut bytes = Vec::new();
    lzma_rs::xz_decompress(&mut compressed.as_slice(), &mut bytes).expect("valid xz");
    GgufFile::from_bytes(bytes).unwrap_or_else(|e| panic!("{}: {e}", packed.display()))
}

fn tokenizer(name: &str) -> Tokenizer {
    let tok = Tokenizer::from_gguf(&open_vocab(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(tok.warnings().is_empty(), "{name}: {:?}", tok.warnings());
    tok
}

/// Inputs of an `.inp` file: separated by `\n__ggml_vocab_test__\n`, which also ends the file.
fn read_inputs(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut inputs: Vec<String> = text
        .split("\n__ggml_vocab_test__\n")
        .map(str::to_owned)
        .collect();
    assert_eq!(
        inputs.pop().as_deref(),
        Some(""),
        "{file} ends with a separator"
    );
    inputs
}

fn parse_ids(line: &str) -> Vec<u32> {
    line.split_whitespace()
        .map(|x| x.parse().expect("token id"))
        .collect()
}

/// Runs every (input, flags, expected) case; reports all mismatches, then fails.
fn check_cases(what: &str, tok: &Tokenizer, cases: &[(String, bool, bool, Vec<u32>)]) {
    assert!(cases.len() >= 30, "{what}: only {} cases", cases.len());
    let mut failures = Vec::new();
    for (i, (input, add_special, parse_special, want)) in cases.iter().enumerate() {
        let got = tok.encode(input, *add_special, *parse_special);
        if &got != want {
            failures.push(format!(
                "case {i} {input:?} (add_special {add_special}, parse_special {parse_special})\n  want {want:?}\n  got  {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// llama.cpp's `test-tokenizer-0` vectors for `vectors`, tokenized with `tok`.
fn check_llama_vectors(vectors: &str, tok: &Tokenizer) {
    let inputs = read_inputs(&format!("ggml-vocab-{vectors}.gguf.inp"));
    let out = std::fs::read_to_string(fixture(&format!("ggml-vocab-{vectors}.gguf.out"))).unwrap();
    let outputs: Vec<&str> = out.lines().collect();
    assert_eq!(inputs.len(), outputs.len(), "{vectors}: inputs and outputs");
    let cases: Vec<_> = inputs
        .into_iter()
        .zip(outputs)
        .map(|(i, o)| (i, false, false, parse_ids(o)))
        .collect();
    check_cases(vectors, tok, &cases);
    check_decoding(vectors, tok, cases.iter().map(|c| c.0.as_str()));
}

/// Random inputs with llama-tokenize's answers (`make_fuzz.py`).
fn check_fuzz_vectors(name: &str, tok: &Tokenizer) {
    let inputs = read_inputs(&format!("ggml-vocab-{name}.gguf.fuzz.inp"));
    let out =
        std::fs::read_to_string(fixture(&format!("ggml-vocab-{name}.gguf.fuzz.out"))).unwrap();
    let outputs: Vec<&str> = out.lines().collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{name}: fuzz inputs and outputs"
    );
    let cases: Vec<_> = inputs
        .into_iter()
        .zip(outputs)
        .map(|(input, line)| {
            let (flags, ids) = line.split_once(" : ").expect("'flags : ids'");
            let (add_bos, parse_special) = flags.split_once(' ').expect("two flags");
            (input, add_bos == "1", parse_special == "1", parse_ids(ids))
        })
        .collect();
    check_cases(&format!("{name} fuzz"), tok, &cases);
}

/// `decode(encode(x)) == x`, and a stream decoder fed the same ids writes the same text.
fn check_decoding<'a>(what: &str, tok: &Tokenizer, inputs: impl Iterator<Item = &'a str>) {
    for input in inputs {
        let ids = tok.encode(input, false, false);
        assert_eq!(
            tok.decode(&ids),
            input,
            "{what}: round trip of {input:?} via {ids:?}"
        );
        let mut stream = tok.stream_decoder();
        let mut streamed: String = ids.iter().map(|&id| stream.push(id)).collect();
        streamed.push_str(&stream.finish());
        // The stream keeps the space SentencePiece put in front (it continues a prompt).
        let expected = if tok
            .token_text(ids.first().copied().unwrap_or(0))
            .is_some_and(|t| t.starts_with('▁'))
        {
            format!(" {input}")
        } else {
            input.to_owned()
        };
        assert_eq!(streamed, expected, "{what}: streamed {input:?}");
    }
}

#[test]
fn qwen2_matches_llama_cpp() {
    let tok = tokenizer("qwen2");
    check_llama_vectors("qwen2", &tok);
    check_fuzz_vectors("qwen2", &tok);
}

#[test]
fn qwen35_matches_llama_cpp() {
    // ggml-vocab-qwen35.gguf is ggml-vocab-qwen2.gguf with `tokenizer.ggml.pre = "qwen35"`.
    let mut vocab = Vocab::from_gguf(&open_vocab("qwen2")).unwrap();
    vocab.pre = Some("qwen35".into());
    check_llama_vectors("qwen35", &Tokenizer::new(vocab).unwrap());
}

#[test]
fn llama_bpe_matches_llama_cpp() {
    let tok = tokenizer("llama-bpe");
    check_llama_vectors("llama-bpe", &tok);
    check_fuzz_vectors("llama-bpe", &tok);
}

#[test]
fn gpt2_matches_llama_cpp() {
    check_llama_vectors("gpt-2", &tokenizer("gpt-2"));
}

#[test]
fn llama_spm_matches_llama_cpp() {
    let tok = tokenizer("llama-spm");
    check_llama_vectors("llama-spm", &tok);
    check_fuzz_vectors("llama-spm", &tok);
}

#[test]
fn qwen2_special_tokens_and_end_of_generation() {
    let tok = tokenizer("qwen2");
    assert_eq!(tok.vocab_size(), 151_936);
    assert_eq!((tok.bos(), tok.eos()), (Some(151_643), Some(151_643)));
    assert!(!tok.adds_bos());
    let im_end = tok.token_id("<|im_end|>").unwrap();
    assert_eq!(tok.special_tokens().eot, Some(im_end));
    assert!(tok.is_end_of_generation(im_end) && tok.is_end_of_generation(151_643));
    assert!(!tok.is_end_of_generation(tok.token_id("<|im_start|>").unwrap()));
    assert_eq!(tok.token_bytes(tok.token_id("Ġworld").unwrap()), b" world");
}

#[test]
fn qwen2_chat_prompt_tokenizes_like_llama_cpp() {
    let gguf = open_vocab("qwen2");
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let template = ChatTemplate::from_gguf(&gguf, &tok).unwrap();
    assert!(!template.is_fallback());
    let messages = [
        ChatMessage::new("user", "Hello!"),
        ChatMessage::new("assistant", "Hi there."),
        ChatMessage::new("user", "Bye"),
    ];
    let prompt = template.render(&messages, true).unwrap();
    // Rendered by Jinja2 with Hugging Face's settings.
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n\
         <|im_start|>assistant\nHi there.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    );
    // llama-tokenize's ids for that prompt (BOS per the model: none; special tokens parsed).
    let want = [
        151644, 8948, 198, 2610, 525, 264, 10950, 17847, 151645, 198, 151644, 872, 198, 9707, 0,
        151645, 198, 151644, 77091, 198, 13048, 1052, 13, 151645, 198, 151644, 872, 198, 1359, 68,
        151645, 198, 151644, 77091, 198,
    ];
    assert_eq!(tok.encode(&prompt, true, true), want);
}

#[test]
fn spm_vocabulary_without_a_template_falls_back_to_chatml() {
    let gguf = open_vocab("llama-spm");
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let template = ChatTemplate::from_gguf(&gguf, &tok).unwrap();
    assert!(template.is_fallback());
    assert!(tok.adds_bos());
    assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
    assert_eq!(tok.encode("Hello", true, false)[0], 1);
}
