//! The vocabulary synthetic models carry: a real 512-token byte-level BPE vocabulary (the one
//! the whole-model test fixtures were trained with, kept in `vocab.txt`), padded with unused
//! tokens to the preset's vocabulary size.
//!
//! `vocab.txt` has three sections, each a header line then one entry per line: `[tokens]`
//! (ordinary tokens, ids from 0), `[control]` (control tokens, the ids after them) and
//! `[merges]` (BPE merge rules, highest priority first). Byte-level BPE spells spaces and
//! newlines as `Ġ` and `Ċ`, so no entry contains a line break.

use crate::tokenizer::TokenType;

const DATA: &str = include_str!("vocab.txt");

/// The embedded vocabulary, padded to `n_vocab` tokens.
pub(crate) struct SynthVocab {
    pub tokens: Vec<String>,
    pub types: Vec<TokenType>,
    pub merges: Vec<String>,
}

impl SynthVocab {
    /// Tokens that decode to text (ordinary and control); ids at or past it are padding.
    pub fn real_len() -> usize {
        let (tokens, control, _) = sections();
        tokens.len() + control.len()
    }

    /// The id of control token `text`.
    pub fn control_id(text: &str) -> Option<u32> {
        let (tokens, control, _) = sections();
        control
            .iter()
            .position(|t| *t == text)
            .map(|i| (tokens.len() + i) as u32)
    }

    /// The vocabulary with `n_vocab` tokens (at least [`real_len`](Self::real_len)): padding
    /// is `[PADi]`, typed unused, as llama.cpp's converter pads Qwen vocabularies.
    pub fn padded(n_vocab: usize) -> SynthVocab {
        let (tokens, control, merges) = sections();
        let real = tokens.len() + control.len();
        SynthVocab {
            tokens: tokens
                .iter()
                .chain(&control)
                .map(|t| t.to_string())
                .chain((real..n_vocab).map(|i| format!("[PAD{i}]")))
                .collect(),
            types: std::iter::repeat_n(TokenType::Normal, tokens.len())
                .chain(std::iter::repeat_n(TokenType::Control, control.len()))
                .chain(std::iter::repeat_n(
                    TokenType::Unused,
                    n_vocab.saturating_sub(real),
                ))
                .collect(),
            merges: merges.iter().map(|m| m.to_string()).collect(),
        }
    }
}

/// `(ordinary tokens, control tokens, merges)` of `vocab.txt`.
fn sections() -> (Vec<&'static str>, Vec<&'static str>, Vec<&'static str>) {
    let mut out: [Vec<&str>; 3] = Default::default();
    let mut current = None;
    for line in DATA.lines() {
        match line {
            "[tokens]" => current = Some(0),
            "[control]" => current = Some(1),
            "[merges]" => current = Some(2),
            entry => {
                if let Some(i) = current {
                    out[i].push(entry);
                }
            }
        }
    }
    let [tokens, control, merges] = out;
    (tokens, control, merges)
}
