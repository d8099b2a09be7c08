//! Pre-tokenizers of byte-level BPE: the regexes that cut text into words before merging,
//! chosen by the GGUF's `tokenizer.ggml.pre`.
//!
//! The patterns are the ones in each model's `tokenizer.json` (as listed by llama.cpp's
//! `llama-vocab.cpp`), run with `fancy-regex` because they need look-ahead (`\s+(?!\S)`). A
//! regex engine rather than hand-written splitters keeps the table plain data: adding a
//! family is a new row, and `\p{L}`/`\p{N}`/`\s` come with the `regex` crate's Unicode tables.
//!
//! Several patterns apply in sequence (as Hugging Face's `Sequence` of `Split`s and llama.cpp
//! do): each one cuts every piece left by the previous one, and both matches and the gaps
//! between them become pieces.

use fancy_regex::Regex;

/// Contractions, case-insensitive as in `(?i:'s|'t|...)`, spelled out for clarity.
const CONTRACTIONS: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";

/// One family of pre-tokenizers: the `tokenizer.ggml.pre` names that share its patterns.
struct Family {
    names: &'static [&'static str],
    /// Patterns; `{C}` stands for [`CONTRACTIONS`].
    patterns: &'static [&'static str],
    /// Whether a word that is a token as a whole skips merging (llama.cpp's `ignore_merges`).
    ignore_merges: bool,
    /// Whether BOS is prepended unless the GGUF says otherwise.
    add_bos: bool,
}

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str =
    r"{C}|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const FAMILIES: &[Family] = &[
    Family {
        names: &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "lfm2",
        ],
        patterns: &[LLAMA3],
        ignore_merges: true,
        add_bos: true,
    },
    Family {
        names: &["dbrx", "smaug-bpe", "chatglm-bpe"],
        patterns: &[LLAMA3],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["glm4", "glm5"],
        patterns: &[LLAMA3],
        ignore_merges: true,
        add_bos: false,
    },
    Family {
        names: &[
            "qwen2",
            "deepseek-r1-qwen",
            "megrez",
            "stablelm2",
            "hunyuan",
            "grok-2",
        ],
        patterns: &[
            r"{C}|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["qwen35"],
        patterns: &[
            r"{C}|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["deepseek-v3"],
        patterns: &[
            r"\p{N}{1,3}",
            r"[一-龥぀-ゟ゠-ヿ]+",
            r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
        ],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["gpt-4o", "llama4", "minimax-m2"],
        patterns: &[
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["bailingmoe", "bailingmoe2", "llada-moe"],
        patterns: &[
            r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
        ],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &[
            "gpt-2",
            "phi-2",
            "mpt",
            "olmo",
            "jais",
            "exaone4",
            "roberta-bpe",
        ],
        patterns: &[GPT2],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &[
            "starcoder",
            "refact",
            "command-r",
            "smollm",
            "codeshell",
            "exaone",
        ],
        patterns: &[r"\p{N}", GPT2],
        ignore_merges: false,
        add_bos: false,
    },
    Family {
        names: &["default"],
        patterns: &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
        ignore_merges: false,
        add_bos: false,
    },
];

/// Every name [`PreTokenizer::new`] accepts, for error messages.
pub(crate) fn known_names() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.names.iter().copied())
        .collect()
}

/// A compiled pre-tokenizer.
#[derive(Debug)]
pub(crate) struct PreTokenizer {
    regexes: Vec<Regex>,
    pub(crate) ignore_merges: bool,
    pub(crate) add_bos: bool,
}

impl PreTokenizer {
    /// The pre-tokenizer called `name` in `tokenizer.ggml.pre`, or `None` if we have no row
    /// for it.
    pub(crate) fn new(name: &str) -> Option<Self> {
        let family = FAMILIES.iter().find(|f| f.names.contains(&name))?;
        let regexes = family
            .patterns
            .iter()
            .map(|p| {
                // The table is ours and tested: a pattern that does not compile is a bug here.
                Regex::new(&p.replace("{C}", CONTRACTIONS)).expect("built-in pre-tokenizer regex")
            })
            .collect();
        Some(Self {
            regexes,
            ignore_merges: family.ignore_merges,
            add_bos: family.add_bos,
        })
    }

    /// Cuts `text` into words, in order; their concatenation is `text`.
    pub(crate) fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = vec![text];
        for regex in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                split_one(regex, piece, &mut next);
            }
            pieces = next;
        }
        pieces.retain(|p| !p.is_empty());
        pieces
    }
}

/// Appends the matches of `regex` in `text` and the gaps between them to `out`.
fn split_one<'t>(regex: &Regex, text: &'t str, out: &mut Vec<&'t str>) {
    let mut last = 0;
    for found in regex.find_iter(text) {
        // The only error is fancy-regex's backtrack limit, which these patterns do not reach on
        // any input we know of; should one, the rest of the piece stays one word.
        let Ok(m) = found else { break };
        if m.start() > last {
            out.push(&text[last..m.start()]);
        }
        if m.end() > m.start() {
            out.push(m.as_str());
        }
        last = m.end();
    }
    if last < text.len() {
        out.push(&text[last..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_pattern_compiles() {
        for name in known_names() {
            assert!(PreTokenizer::new(name).is_some(), "{name}");
        }
    }

    #[test]
    fn qwen2_splits_digits_and_keeps_one_space_for_the_next_word() {
        let pre = PreTokenizer::new("qwen2").unwrap();
        assert_eq!(
            pre.split("Hello   world 123 it's\n\n  x"),
            [
                "Hello", "  ", " world", " ", "1", "2", "3", " it", "'s", "\n\n", " ", " x"
            ]
        );
    }

    #[test]
    fn llama3_groups_digits_by_three() {
        let pre = PreTokenizer::new("llama-bpe").unwrap();
        assert_eq!(pre.split("1234567"), ["123", "456", "7"]);
    }

    /// gpt-oss's o200k pre-tokenizer against Hugging Face `tokenizers` and Python's `regex`
    /// on tricky strings (contractions in every case, digit runs, letters with marks, CJK,
    /// emoji sequences, whitespace and newline runs, punctuation):
    /// `tests/fixtures/vocab/o200k-pretokenize.json`, written by `make_o200k_pretokenize.py`
    /// there with tiktoken's own pattern, which our row must be.
    #[test]
    fn o200k_splits_as_hugging_face_and_tiktoken_do() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/vocab/o200k-pretokenize.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let family = FAMILIES.iter().find(|f| f.names.contains(&"gpt-4o"));
        assert_eq!(
            family.unwrap().patterns,
            [fixture["pattern"].as_str().unwrap()]
        );
        let pre = PreTokenizer::new("gpt-4o").unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() >= 30);
        for case in cases {
            let text = case["text"].as_str().unwrap();
            let want: Vec<&str> = case["words"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap())
                .collect();
            assert_eq!(pre.split(text), want, "{text:?}");
        }
    }

    #[test]
    fn unknown_name_is_none() {
        assert!(PreTokenizer::new("no-such-pre").is_none());
    }
}
