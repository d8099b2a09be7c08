//! Unit tests on toy vocabularies; the real vocabularies are tested against llama.cpp's vectors
//! in `runtime/tests/tokenizer_vectors.rs`.

use super::*;

/// A byte-level BPE vocabulary: the 256 byte characters, then merges `h e`, `he l`, `hel l`,
/// `hell o`, `Ġ w`, and two special tokens.
fn toy_bpe(pre: &str) -> Vocab {
    let chars = bpe::byte_to_char();
    let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    let merges: Vec<String> = ["h e", "he l", "hel l", "hell o", "Ġ w"]
        .map(String::from)
        .to_vec();
    for m in &merges {
        tokens.push(m.replace(' ', ""));
    }
    tokens.push("<|im_end|>".into()); // 261
    tokens.push("<think>".into()); // 262
    let mut types = vec![TokenType::Normal; tokens.len()];
    types[261] = TokenType::Control;
    types[262] = TokenType::UserDefined;
    Vocab {
        model: ModelKind::Bpe,
        pre: Some(pre.into()),
        tokens,
        types,
        merges,
        special: SpecialTokens {
            eos: Some(261),
            ..SpecialTokens::default()
        },
        ..Vocab::default()
    }
}

#[test]
fn bpe_merges_by_rank_and_decodes_back() {
    let tok = Tokenizer::new(toy_bpe("qwen2")).unwrap();
    let ids = tok.encode("hello w", false, false);
    assert_eq!(ids, [259, 260]);
    assert_eq!(tok.decode(&ids), "hello w");
    // Bytes without merges stay single tokens.
    let ids = tok.encode("x\n", false, false);
    assert_eq!(tok.decode(&ids), "x\n");
    assert_eq!(ids.len(), 2);
}

#[test]
fn control_tokens_need_parse_special_but_user_defined_do_not() {
    let tok = Tokenizer::new(toy_bpe("qwen2")).unwrap();
    let plain = tok.encode("<think>hello<|im_end|>", false, false);
    assert_eq!(plain[..2], [262, 259]);
    assert!(!plain.contains(&261), "{plain:?}");
    let parsed = tok.encode("<think>hello<|im_end|>", false, true);
    assert_eq!(parsed, [262, 259, 261]);
    assert_eq!(tok.decode(&parsed), "<think>hello<|im_end|>");
    assert!(tok.is_end_of_generation(261));
    assert!(!tok.is_end_of_generation(259));
}

#[test]
fn bos_is_added_only_when_asked_and_known() {
    let mut vocab = toy_bpe("llama-bpe");
    vocab.special.bos = Some(262);
    let tok = Tokenizer::new(vocab.clone()).unwrap();
    assert!(tok.adds_bos(), "llama-bpe adds BOS by default");
    assert_eq!(tok.encode("hello", true, false), [262, 259]);
    assert_eq!(tok.encode("hello", false, false), [259]);
    vocab.add_bos = Some(false);
    assert!(!Tokenizer::new(vocab).unwrap().adds_bos());
}

#[test]
fn unknown_pre_tokenizer_is_an_error_that_lists_the_known_ones() {
    let err = Tokenizer::new(toy_bpe("no-such-pre"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no-such-pre") && err.contains("qwen2"),
        "{err}"
    );
}

#[test]
fn missing_pre_tokenizer_warns_and_uses_default() {
    let mut vocab = toy_bpe("x");
    vocab.pre = None;
    let tok = Tokenizer::new(vocab).unwrap();
    assert!(
        tok.warnings()
            .iter()
            .any(|w| w.contains("tokenizer.ggml.pre"))
    );
    assert_eq!(tok.encode("hello", false, false), [259]);
}

#[test]
fn special_ids_outside_the_vocabulary_are_dropped_with_a_warning() {
    let mut vocab = toy_bpe("qwen2");
    vocab.special.bos = Some(100_000);
    let tok = Tokenizer::new(vocab).unwrap();
    assert_eq!(tok.bos(), None);
    assert!(tok.warnings().iter().any(|w| w.contains("100000")));
}

#[test]
fn malformed_merge_is_an_error_naming_it() {
    let mut vocab = toy_bpe("qwen2");
    vocab.merges.push("nospace".into());
    let err = Tokenizer::new(vocab).unwrap_err().to_string();
    assert!(
        err.contains("merges[5]") && err.contains("nospace"),
        "{err}"
    );
}

#[test]
fn short_score_array_is_an_error() {
    let mut vocab = toy_bpe("qwen2");
    vocab.scores = vec![0.0; 3];
    assert!(
        Tokenizer::new(vocab)
            .unwrap_err()
            .to_string()
            .contains("tokenizer.ggml.scores")
    );
}

/// A SentencePiece vocabulary with byte fallback.
fn toy_spm() -> Vocab {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TokenType::Byte);
    }
    for t in ["▁", "h", "i", "▁h", "▁hi", "!"] {
        tokens.push(t.into());
        types.push(TokenType::Normal);
    }
    let mut scores = vec![0.0; tokens.len()];
    // "▁h" (262) merges first, then "▁h" + "i" into "▁hi" (263).
    scores[259..265].copy_from_slice(&[-1.0, -1.0, -1.0, -2.0, -3.0, -1.0]);
    Vocab {
        model: ModelKind::Spm,
        tokens,
        scores,
        types,
        special: SpecialTokens {
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            ..SpecialTokens::default()
        },
        ..Vocab::default()
    }
}

#[test]
fn spm_adds_space_prefix_bos_and_falls_back_to_bytes() {
    let tok = Tokenizer::new(toy_spm()).unwrap();
    let ids = tok.encode("hi hi!é", true, false);
    // BOS, "▁hi", "▁hi", "!", then é = C3 A9 as byte tokens (3 + byte).
    assert_eq!(ids, [1, 263, 263, 264, 3 + 0xC3, 3 + 0xA9]);
    assert_eq!(tok.decode(&ids), "<s>hi hi!é");
    assert_eq!(tok.decode(&ids[1..]), "hi hi!é");
    assert_eq!(tok.token_bytes(3 + 0xC3), [0xC3]);
    // Without the space prefix "hi" is "h" "i" (no "hi" token).
    let mut vocab = toy_spm();
    vocab.add_space_prefix = Some(false);
    let tok = Tokenizer::new(vocab).unwrap();
    assert_eq!(tok.encode("hi", false, false), [260, 261]);
}

#[test]
fn spm_puts_a_space_after_each_special_token() {
    let tok = Tokenizer::new(toy_spm()).unwrap();
    assert_eq!(tok.encode("hi</s>hi", false, true), [263, 2, 263]);
}

#[test]
fn stream_decoder_holds_partial_characters_and_flushes_invalid_bytes() {
    let tok = Tokenizer::new(toy_spm()).unwrap();
    let byte = |b: u8| 3 + b as u32;
    let mut stream = tok.stream_decoder();
    // "é" split across two tokens.
    assert_eq!(stream.push(byte(0xC3)), "");
    assert_eq!(stream.push(byte(0xA9)), "é");
    // A stray continuation byte can never become valid: replaced at once.
    assert_eq!(stream.push(byte(0xA9)), "\u{FFFD}");
    // A lead byte followed by ASCII: the lead byte is replaced, the ASCII kept.
    assert_eq!(stream.push(byte(0xE2)), "");
    assert_eq!(stream.push(264), "\u{FFFD}!");
    // An incomplete tail at the end is flushed by finish.
    assert_eq!(stream.push(byte(0xF0)), "");
    assert_eq!(stream.finish(), "\u{FFFD}");
    assert_eq!(stream.finish(), "");
}

#[test]
fn stream_decoder_can_skip_control_tokens() {
    let tok = Tokenizer::new(toy_spm()).unwrap();
    let mut stream = tok.stream_decoder().skip_control(true);
    assert_eq!(stream.push(263), " hi");
    assert_eq!(stream.push(2), "");
    let mut stream = tok.stream_decoder();
    assert_eq!(stream.push(2), "</s>");
}

#[test]
fn out_of_range_ids_decode_to_nothing() {
    let tok = Tokenizer::new(toy_spm()).unwrap();
    assert!(tok.token_bytes(1_000_000).is_empty());
    assert_eq!(tok.decode(&[1_000_000, 263]), "hi");
}

#[test]
fn empty_text_gives_only_what_add_special_adds() {
    let tok = Tokenizer::new(toy_spm()).unwrap();
    assert_eq!(tok.encode("", true, false), [1]);
    assert!(tok.encode("", false, false).is_empty());
}

#[test]
fn a_file_without_a_tokenizer_has_none_and_from_gguf_says_so() {
    use crate::gguf::GgufWriter;
    let file = |model: Option<&str>| {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", "qwen3moe").unwrap();
        if let Some(model) = model {
            w.add_metadata("tokenizer.ggml.model", model).unwrap();
        }
        GgufFile::from_bytes(w.to_bytes(&[]).unwrap()).unwrap()
    };
    // Absent, or llama.cpp's two names for "no vocabulary".
    for model in [None, Some("none"), Some("no_vocab")] {
        let gguf = file(model);
        assert!(
            Tokenizer::from_gguf_opt(&gguf).unwrap().is_none(),
            "{model:?}"
        );
        let err = Tokenizer::from_gguf(&gguf).unwrap_err();
        assert!(matches!(err, Error::NoTokenizer), "{model:?}: {err}");
        assert!(err.to_string().contains("token ids"), "{err}");
    }
    // A named kind is a tokenizer, or an error about it: never silently none.
    let err = Tokenizer::from_gguf_opt(&file(Some("bert"))).unwrap_err();
    assert!(err.to_string().contains("\"bert\""), "{err}");
    assert!(Tokenizer::from_gguf_opt(&file(Some("gpt2"))).is_err());
}
