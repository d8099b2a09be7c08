//! SentencePiece-style BPE (GGUF model `llama`): spaces become `▁`, the text starts as one
//! symbol per character, and the adjacent pair whose concatenation is the highest-scoring token
//! merges first (leftmost among equal scores), as llama.cpp's `llm_tokenizer_spm_session`
//! does. Characters left without a token fall back to `<0xXX>` byte tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// The character SentencePiece writes for a space.
pub(crate) const SPACE: char = '\u{2581}';

/// A candidate merge of the symbols starting at `left` and `right`.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the merged text, to recognise entries made stale by other merges.
    len: usize,
}

impl Ord for Bigram {
    /// Higher score first; among equal scores the leftmost.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}

/// Appends the tokens of `text` (already `▁`-escaped, without special tokens) to `out`.
///
/// `token_id` finds tokens by text, `score` gives a token's merge score, `byte_token` the
/// fallback token of a byte (if the vocabulary has one).
pub(crate) fn encode(
    text: &str,
    token_id: &HashMap<String, u32>,
    score: impl Fn(u32) -> f32,
    byte_token: impl Fn(u8) -> Option<u32>,
    out: &mut Vec<u32>,
) {
    // Symbols are byte ranges [start, end) of `text`, linked; `end == start` marks one merged
    // into its left neighbour.
    struct Sym {
        end: usize,
        prev: usize,
        next: usize,
    }
    let starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let n = starts.len();
    let mut syms: Vec<Sym> = (0..n)
        .map(|i| Sym {
            end: starts.get(i + 1).copied().unwrap_or(text.len()),
            prev: i.wrapping_sub(1),
            next: i + 1,
        })
        .collect();
    let mut queue = BinaryHeap::new();
    let push = |queue: &mut BinaryHeap<Bigram>, syms: &[Sym], left: usize, right: usize| {
        if left >= n || right >= n {
            return;
        }
        let merged = &text[starts[left]..syms[right].end];
        if let Some(&id) = token_id.get(merged) {
            queue.push(Bigram {
                score: score(id),
                left,
                right,
                len: merged.len(),
            });
        }
    };
    for i in 1..n {
        push(&mut queue, &syms, i - 1, i);
    }
    while let Some(bigram) = queue.pop() {
        let (left, right) = (bigram.left, bigram.right);
        let left_len = syms[left].end - starts[left];
        let right_len = syms[right].end - starts[right];
        if left_len == 0 || right_len == 0 || left_len + right_len != bigram.len {
            continue;
        }
        syms[left].end = syms[right].end;
        syms[left].next = syms[right].next;
        syms[right].end = starts[right];
        if syms[left].next < n {
            let next = syms[left].next;
            syms[next].prev = left;
        }
        push(&mut queue, &syms, syms[left].prev, left);
        push(&mut queue, &syms, left, syms[left].next);
    }
    let mut i = 0;
    while i < n {
        let piece = &text[starts[i]..syms[i].end];
        match token_id.get(piece) {
            Some(&id) => out.push(id),
            None => out.extend(piece.bytes().filter_map(&byte_token)),
        }
        i = syms[i].next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: `ab` outscores `bc`, so `abc` becomes `ab` + `c`.
    fn toy() -> (HashMap<String, u32>, Vec<f32>) {
        let tokens = ["a", "b", "c", "ab", "bc", "<0x7A>"];
        let scores = vec![0.0, 0.0, 0.0, -1.0, -2.0, 0.0];
        let ids = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        (ids, scores)
    }

    fn run(text: &str) -> Vec<u32> {
        let (ids, scores) = toy();
        let mut out = Vec::new();
        encode(
            text,
            &ids,
            |id| scores[id as usize],
            |b| (b == b'z').then_some(5),
            &mut out,
        );
        out
    }

    #[test]
    fn higher_score_merges_first() {
        assert_eq!(run("abc"), [3, 2]);
        assert_eq!(run("bc"), [4]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        // 'z' has a byte token, 'é' (two bytes) has none and is dropped.
        assert_eq!(run("azé"), [0, 5]);
    }
}
