//! Byte-level BPE (GGUF model `gpt2`): words from the pre-tokenizer are cut into bytes, each
//! byte spelled as the printable character GPT-2 assigned it, then adjacent symbols are merged
//! in the order of `tokenizer.ggml.merges` (lowest rank first, leftmost first among equals),
//! as llama.cpp's `llm_tokenizer_bpe_session` does.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::pretokenize::PreTokenizer;
use crate::{Error, Result};

/// GPT-2's byte-to-character table: printable Latin-1 bytes stand for themselves, the others
/// are shifted to U+0100 onwards so that every token is printable text.
pub(crate) fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut shifted = 0u32;
    for (byte, slot) in table.iter_mut().enumerate() {
        let b = byte as u32;
        let printable =
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let code = if printable {
            b
        } else {
            shifted += 1;
            255 + shifted
        };
        // Every code here is below U+0144, so always a valid char.
        *slot = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
    }
    table
}

/// The inverse of [`byte_to_char`]: `Some(byte)` for the 256 characters it produces.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let code = c as u32;
    match code {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(code as u8),
        // The shifted bytes in increasing order: 0x00..=0x20, 0x7F..=0xA0, then 0xAD.
        0x100..=0x120 => Some((code - 0x100) as u8),
        0x121..=0x142 => Some((code - 0x121 + 0x7F) as u8),
        0x143 => Some(0xAD),
        _ => None,
    }
}

/// A merge rule: the pair `(left, right)` of symbol ids becomes `result` at priority `rank`.
#[derive(Clone, Copy, Debug)]
struct Merge {
    rank: u32,
    result: u32,
}

/// The merge table and pre-tokenizer of a byte-level BPE vocabulary.
///
/// Symbols are numbered like tokens; merge results that are not themselves tokens (legal in a
/// merges list, absent from real vocabularies) get ids from `n_vocab` on, so a merge is one
/// hash lookup on a pair of integers.
#[derive(Debug)]
pub(crate) struct Bpe {
    pre: PreTokenizer,
    merges: HashMap<(u32, u32), Merge>,
    n_vocab: u32,
    /// The token of each single byte, `None` where the vocabulary lacks it.
    byte_tokens: [Option<u32>; 256],
}

impl Bpe {
    /// Builds the merge table. `token_id` finds a token by its (byte-encoded) text.
    pub(crate) fn new(
        pre: PreTokenizer,
        merges: &[String],
        n_vocab: u32,
        token_id: &HashMap<String, u32>,
    ) -> Result<Self> {
        let chars = byte_to_char();
        let byte_tokens = chars.map(|c| token_id.get(c.encode_utf8(&mut [0; 4]) as &str).copied());
        let mut extra_symbols = HashMap::new();
        let mut symbol = |text: &str| -> u32 {
            if let Some(&id) = token_id.get(text) {
                return id;
            }
            let next = n_vocab + extra_symbols.len() as u32;
            *extra_symbols.entry(text.to_owned()).or_insert(next)
        };
        let mut table = HashMap::with_capacity(merges.len());
        for (rank, rule) in merges.iter().enumerate() {
            // Split at the first space after the first byte, as llama.cpp does, so a left side
            // that starts with a space still parses.
            let split = rule.bytes().skip(1).position(|b| b == b' ').map(|i| i + 1);
            let Some(at) = split else {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.ggml.merges[{rank}] = {rule:?} is not two symbols separated by a space; \
                     the GGUF's merges list is corrupt, re-convert the model"
                )));
            };
            let (left, right) = (&rule[..at], &rule[at + 1..]);
            let merged = format!("{left}{right}");
            let key = (symbol(left), symbol(right));
            let result = symbol(&merged);
            // The first (lowest-rank) rule for a pair wins, like llama.cpp's map emplace.
            table.entry(key).or_insert(Merge {
                rank: rank as u32,
                result,
            });
        }
        Ok(Self {
            pre,
            merges: table,
            n_vocab,
            byte_tokens,
        })
    }

    /// Whether a BOS token is added by default for this pre-tokenizer.
    pub(crate) fn add_bos_default(&self) -> bool {
        self.pre.add_bos
    }

    /// Appends the tokens of `text` (plain text without special tokens) to `out`.
    pub(crate) fn encode(&self, text: &str, token_id: &HashMap<String, u32>, out: &mut Vec<u32>) {
        let chars = byte_to_char();
        let mut encoded = String::new();
        for word in self.pre.split(text) {
            if self.pre.ignore_merges {
                encoded.clear();
                encoded.extend(word.bytes().map(|b| chars[b as usize]));
                if let Some(&id) = token_id.get(encoded.as_str()) {
                    out.push(id);
                    continue;
                }
            }
            self.encode_word(word.as_bytes(), out);
        }
    }

    /// Merges the bytes of one word.
    fn encode_word(&self, bytes: &[u8], out: &mut Vec<u32>) {
        const NONE: u32 = u32::MAX;
        // One symbol per byte, linked so merged-away symbols are skipped; `end` is the byte
        // range end, so a symbol covers bytes[start..end] with start its own index.
        struct Sym {
            id: u32,
            prev: usize,
            next: usize,
            end: usize,
        }
        let n = bytes.len();
        let mut syms: Vec<Sym> = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| Sym {
                id: self.byte_tokens[b as usize].unwrap_or(NONE),
                prev: i.wrapping_sub(1),
                next: i + 1,
                end: i + 1,
            })
            .collect();
        let mut queue = BinaryHeap::new();
        let push = |queue: &mut BinaryHeap<_>, syms: &[Sym], left: usize| {
            let Some(right) = syms.get(left).map(|s| s.next).filter(|&r| r < n) else {
                return;
            };
            if let Some(m) = self.merges.get(&(syms[left].id, syms[right].id)) {
                queue.push(Reverse((m.rank, left, syms[left].id, syms[right].id)));
            }
        };
        for left in 0..n.saturating_sub(1) {
            push(&mut queue, &syms, left);
        }
        while let Some(Reverse((_, left, left_id, right_id))) = queue.pop() {
            let right = syms[left].next;
            // Stale entries: either side has merged with something else since.
            if syms[left].id != left_id || right >= n || syms[right].id != right_id {
                continue;
            }
            let merge = self.merges[&(left_id, right_id)];
            syms[left].id = merge.result;
            syms[left].end = syms[right].end;
            syms[left].next = syms[right].next;
            syms[right].id = NONE;
            if syms[left].next < n {
                let next = syms[left].next;
                syms[next].prev = left;
            }
            let prev = syms[left].prev;
            if prev < n {
                push(&mut queue, &syms, prev);
            }
            push(&mut queue, &syms, left);
        }
        let mut i = 0;
        while i < n {
            let sym = &syms[i];
            if sym.id < self.n_vocab {
                out.push(sym.id);
            } else {
                // A merge result outside the vocabulary, or a byte the vocabulary lacks: spell
                // it byte by byte; llama.cpp drops bytes that have no token, and so do we.
                out.extend(
                    bytes[i..sym.end]
                        .iter()
                        .filter_map(|&b| self.byte_tokens[b as usize]),
                );
            }
            i = sym.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_round_trips() {
        let table = byte_to_char();
        for (b, &c) in table.iter().enumerate() {
            assert_eq!(char_to_byte(c), Some(b as u8), "byte {b:#x} -> {c:?}");
        }
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(char_to_byte('a'), Some(b'a'));
        assert_eq!(char_to_byte('€'), None);
    }
}
