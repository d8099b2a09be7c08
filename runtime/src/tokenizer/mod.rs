//! Tokenizers built from the GGUF's `tokenizer.ggml.*` metadata: byte-level BPE (pre-tokenizer
//! chosen by `tokenizer.ggml.pre`) and SentencePiece-style, with streaming UTF-8-safe decoding.
//!
//! The behaviour follows llama.cpp's `llama-vocab.cpp`, whose tokenizer test vectors
//! (`ggml-vocab-*.gguf` with `.inp`/`.out`) are this module's acceptance tests: special tokens
//! are cut out of the text first (longest first), the remaining text is tokenized by the
//! model's algorithm, and BOS/EOS are added as the metadata asks.
//!
//! ```
//! use moetile::tokenizer::{ModelKind, SpecialTokens, TokenType, Tokenizer, Vocab};
//! // A toy SentencePiece vocabulary (normally: `Tokenizer::from_gguf(&gguf)`).
//! let vocab = Vocab {
//!     model: ModelKind::Spm,
//!     tokens: ["<s>", "▁", "h", "i", "▁h", "▁hi"].map(String::from).to_vec(),
//!     scores: vec![0.0, -1.0, -1.0, -1.0, -2.0, -3.0],
//!     types: [TokenType::Control].into_iter().chain([TokenType::Normal; 5]).collect(),
//!     special: SpecialTokens { bos: Some(0), ..SpecialTokens::default() },
//!     ..Vocab::default()
//! };
//! let tokenizer = Tokenizer::new(vocab)?;
//! let ids = tokenizer.encode("hi", true, false);
//! assert_eq!(ids, [0, 5]); // BOS, "▁hi"
//! assert_eq!(tokenizer.decode(&ids[1..]), "hi");
//! # Ok::<(), moetile::Error>(())
//! ```

mod bpe;
mod pretokenize;
mod spm;
mod stream;

use std::collections::HashMap;

pub use stream::StreamDecoder;

use crate::gguf::GgufFile;
use crate::{Error, Result};
use bpe::Bpe;
use pretokenize::PreTokenizer;

/// The tokenization algorithm, from `tokenizer.ggml.model`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModelKind {
    /// `gpt2`: byte-level BPE with ranked merges and a regex pre-tokenizer.
    #[default]
    Bpe,
    /// `llama`: SentencePiece-style BPE over characters with scores and byte fallback.
    Spm,
}

impl ModelKind {
    /// The kind called `name` in `tokenizer.ggml.model`.
    pub fn from_gguf_name(name: &str) -> Result<Self> {
        match name {
            "gpt2" => Ok(Self::Bpe),
            "llama" => Ok(Self::Spm),
            other => Err(Error::Tokenizer(format!(
                "tokenizer.ggml.model = {other:?} is not supported; moetile reads \"gpt2\" \
                 (byte-level BPE) and \"llama\" (SentencePiece) vocabularies"
            ))),
        }
    }
}

/// A token's type, as stored in `tokenizer.ggml.token_type` (llama.cpp's numbering).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// 0: no type given; decodes to nothing, as in llama.cpp.
    Undefined,
    /// 1: ordinary text.
    #[default]
    Normal,
    /// 2: the unknown-token placeholder.
    Unknown,
    /// 3: a control token (BOS, EOS, chat markers), matched in text only with `parse_special`.
    Control,
    /// 4: an added token that is always matched in text as a whole.
    UserDefined,
    /// 5: a reserved slot; decodes to nothing.
    Unused,
    /// 6: a byte-fallback token `<0xXX>`.
    Byte,
}

impl TokenType {
    /// The type numbered `code` in the GGUF; unknown numbers are [`TokenType::Undefined`].
    pub fn from_code(code: i32) -> Self {
        match code {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }

    /// The type's number in the GGUF: the inverse of [`from_code`](Self::from_code).
    pub fn code(self) -> i32 {
        match self {
            Self::Undefined => 0,
            Self::Normal => 1,
            Self::Unknown => 2,
            Self::Control => 3,
            Self::UserDefined => 4,
            Self::Unused => 5,
            Self::Byte => 6,
        }
    }

    /// Whether text that spells this token is cut out before tokenizing.
    fn is_special(self) -> bool {
        matches!(self, Self::Control | Self::UserDefined | Self::Unknown)
    }
}

/// Ids of the special tokens named in the metadata (`tokenizer.ggml.bos_token_id` etc.).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of sequence.
    pub bos: Option<u32>,
    /// End of sequence.
    pub eos: Option<u32>,
    /// End of turn (`<|im_end|>`, `<|eot_id|>`); found by its text when the metadata omits it.
    pub eot: Option<u32>,
    /// End of message (`<|eom_id|>`).
    pub eom: Option<u32>,
    /// Unknown token.
    pub unk: Option<u32>,
    /// Padding.
    pub pad: Option<u32>,
}

/// Everything a tokenizer is built from: the GGUF's `tokenizer.ggml.*` keys as plain data.
#[derive(Clone, Debug, Default)]
pub struct Vocab {
    /// `tokenizer.ggml.model`.
    pub model: ModelKind,
    /// `tokenizer.ggml.pre`; BPE only, `None` means llama.cpp's "default" (with a warning).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: token texts, indexed by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores`: SentencePiece merge scores; empty means all zero.
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.token_type`; empty means all [`TokenType::Normal`].
    pub types: Vec<TokenType>,
    /// `tokenizer.ggml.merges`: BPE rules `"left right"`, highest priority first.
    pub merges: Vec<String>,
    /// Special token ids.
    pub special: SpecialTokens,
    /// `tokenizer.ggml.add_bos_token`; `None` takes the model's default.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`; `None` means false.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece); `None` means true.
    pub add_space_prefix: Option<bool>,
}

impl Vocab {
    /// Reads the `tokenizer.ggml.*` keys of `gguf`.
    ///
    /// Absent optional keys stay `None`/empty, except that SentencePiece vocabularies get
    /// llama.cpp's default ids (BOS 1, EOS 2, unknown 0) when the file names none. Special ids
    /// stored as negative numbers mean "none".
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = ModelKind::from_gguf_name(gguf.get_str("tokenizer.ggml.model")?)?;
        let key = "tokenizer.ggml.scores";
        let scores = match gguf.get(key) {
            None => Vec::new(),
            Some(v) => match (v.as_f32_array(), v.as_i32_array()) {
                (Some(floats), _) => floats.to_vec(),
                (None, Some(ints)) => ints.iter().map(|&i| i as f32).collect(),
                (None, None) => {
                    return Err(Error::Tokenizer(format!(
                        "{key} is {}, expected an array of f32 or i32; re-convert the model",
                        v.type_description()
                    )));
                }
            },
        };
        let special_id = |name: &str, default: Option<u32>| -> Result<Option<u32>> {
            let key = format!("tokenizer.ggml.{name}_token_id");
            match gguf.get(&key) {
                None => Ok(default),
                Some(v) => match v.as_i64() {
                    Some(id) if id < 0 => Ok(None),
                    Some(id) => Ok(u32::try_from(id).ok()),
                    None => Err(Error::Tokenizer(format!(
                        "{key} is {}, expected an integer token id; re-convert the model",
                        v.type_description()
                    ))),
                },
            }
        };
        let spm = model == ModelKind::Spm;
        Ok(Self {
            model,
            pre: gguf.get_str_opt("tokenizer.ggml.pre")?.map(str::to_owned),
            tokens: gguf.get_str_array("tokenizer.ggml.tokens")?.to_vec(),
            scores,
            types: gguf
                .get_i32_array_opt("tokenizer.ggml.token_type")?
                .map(|codes| codes.iter().map(|&c| TokenType::from_code(c)).collect())
                .unwrap_or_default(),
            merges: match (model, gguf.get_str_array_opt("tokenizer.ggml.merges")?) {
                (_, Some(merges)) => merges.to_vec(),
                (ModelKind::Spm, None) => Vec::new(),
                (ModelKind::Bpe, None) => {
                    return Err(Error::Tokenizer(
                        "tokenizer.ggml.merges is missing, and a \"gpt2\" (BPE) vocabulary needs it; \
                         re-convert the model"
                            .to_owned(),
                    ));
                }
            },
            special: SpecialTokens {
                bos: special_id("bos", spm.then_some(1))?,
                eos: special_id("eos", spm.then_some(2))?,
                eot: special_id("eot", None)?,
                eom: special_id("eom", None)?,
                unk: special_id("unknown", spm.then_some(0))?,
                pad: special_id("padding", None)?,
            },
            add_bos: gguf.get_bool_opt("tokenizer.ggml.add_bos_token")?,
            add_eos: gguf.get_bool_opt("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: gguf.get_bool_opt("tokenizer.ggml.add_space_prefix")?,
        })
    }
}

/// Texts of tokens that end generation, as llama.cpp recognises them when the metadata does
/// not list them (`<|im_end|>` for Qwen, `<|eot_id|>` for Llama 3...).
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<｜end▁of▁sentence｜>",
];

/// The tags of gpt-oss's (harmony's) message headers, which llama.cpp renders as text whatever
/// the vocabulary's token types say.
const HARMONY_TAGS: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// The algorithm-specific half of a tokenizer.
#[derive(Debug)]
enum Model {
    Bpe(Box<Bpe>),
    Spm { add_space_prefix: bool },
}

/// A tokenizer: text to token ids and back.
#[derive(Debug)]
pub struct Tokenizer {
    model: Model,
    tokens: Vec<String>,
    types: Vec<TokenType>,
    scores: Vec<f32>,
    token_id: HashMap<String, u32>,
    /// The bytes each token stands for, concatenated; token `i` is
    /// `piece_bytes[piece_ends[i - 1]..piece_ends[i]]`.
    piece_bytes: Vec<u8>,
    piece_ends: Vec<usize>,
    /// Control, user-defined and unknown tokens, longest text first: the order in which they
    /// are cut out of the input.
    special_by_length: Vec<u32>,
    special: SpecialTokens,
    end_of_generation: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    warnings: Vec<String>,
}

/// A piece of input: text still to tokenize, or a special token already recognised.
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

impl Tokenizer {
    /// The tokenizer a GGUF file describes (`tokenizer.ggml.*`); [`Error::NoTokenizer`] for a
    /// file that describes none (see [`from_gguf_opt`](Self::from_gguf_opt)).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        Self::from_gguf_opt(gguf)?.ok_or(Error::NoTokenizer)
    }

    /// The tokenizer a GGUF file describes, or `None` where it has none: `tokenizer.ggml.model`
    /// absent, or `"none"`/`"no_vocab"` as llama.cpp writes for models that run on token ids
    /// alone (its test models). Such a model still runs: its prompts are token ids and its
    /// generations are read as ids. Other `tokenizer.ggml.*` keys are then ignored, as llama.cpp
    /// ignores them.
    pub fn from_gguf_opt(gguf: &GgufFile) -> Result<Option<Self>> {
        match gguf.get_str_opt("tokenizer.ggml.model")? {
            None | Some("none" | "no_vocab") => Ok(None),
            Some(_) => Self::new(Vocab::from_gguf(gguf)?).map(Some),
        }
    }

    /// Builds a tokenizer from plain vocabulary data.
    ///
    /// Fails on an empty vocabulary, score or type arrays shorter than the token list, a
    /// malformed merge rule, or (BPE) a pre-tokenizer we have no patterns for. Special ids
    /// outside the vocabulary are dropped with a warning (see [`warnings`](Self::warnings)).
    pub fn new(vocab: Vocab) -> Result<Self> {
        let Vocab {
            model,
            pre,
            tokens,
            scores,
            types,
            merges,
            special,
            add_bos,
            add_eos,
            add_space_prefix,
        } = vocab;
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(Error::Tokenizer(format!(
                "tokenizer.ggml.tokens has {n} entries; a vocabulary needs between 1 and 2^32 - 1 tokens"
            )));
        }
        for (key, len) in [
            ("tokenizer.ggml.scores", scores.len()),
            ("tokenizer.ggml.token_type", types.len()),
        ] {
            if len != 0 && len < n {
                return Err(Error::Tokenizer(format!(
                    "{key} has {len} entries for {n} tokens; the GGUF is truncated or corrupt, re-convert the model"
                )));
            }
        }
        let mut types = if types.is_empty() {
            vec![TokenType::Normal; n]
        } else {
            types
        };
        types.truncate(n);
        let mut warnings = Vec::new();
        let mut token_id = HashMap::with_capacity(n);
        for (id, text) in tokens.iter().enumerate() {
            if text.is_empty() {
                warnings.push(format!(
                    "token {id} has empty text; it can be decoded but never produced"
                ));
            } else {
                token_id.insert(text.clone(), id as u32);
            }
        }

        let mut special = special;
        for (name, slot) in [
            ("bos", &mut special.bos),
            ("eos", &mut special.eos),
            ("eot", &mut special.eot),
            ("eom", &mut special.eom),
            ("unk", &mut special.unk),
            ("pad", &mut special.pad),
        ] {
            if let Some(id) = slot.filter(|&id| id as usize >= n) {
                warnings.push(format!(
                    "{name} token id {id} is outside the vocabulary of {n}; ignoring it"
                ));
                *slot = None;
            }
        }

        // End-of-generation tokens: the metadata's, plus those recognised by text, which
        // llama.cpp also promotes to control tokens so plain text never produces them.
        let mut end_of_generation: Vec<u32> = [special.eos, special.eot, special.eom]
            .into_iter()
            .flatten()
            .collect();
        for text in END_OF_GENERATION_TEXTS {
            if let Some(&id) = token_id.get(*text) {
                end_of_generation.push(id);
                types[id as usize] = TokenType::Control;
                if special.eot.is_none()
                    && !matches!(*text, "<|return|>" | "<|call|>" | "<|eom_id|>")
                {
                    special.eot = Some(id);
                }
            }
        }
        // gpt-oss (harmony) ends turns with <|return|> or <|call|>; its <|end|> only ends a
        // message, as llama.cpp special-cases.
        let has = |t: &str| token_id.contains_key(t);
        if has("<|return|>")
            && has("<|call|>")
            && let Some(&end) = token_id.get("<|end|>")
        {
            end_of_generation.retain(|&id| id != end);
            types[end as usize] = TokenType::UserDefined;
            if special.eot == Some(end) {
                special.eot = None;
            }
        }
        // The tags of harmony's message headers are written out as text, as llama.cpp does
        // for them, so that an answer's channels can be read from its text
        // (`crate::harmony`).
        for text in HARMONY_TAGS {
            if let Some(&id) = token_id.get(*text) {
                types[id as usize] = TokenType::UserDefined;
            }
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();

        let (model, add_bos_default) = match model {
            ModelKind::Bpe => {
                let name = match pre {
                    Some(name) => name,
                    None => {
                        warnings.push(
                            "tokenizer.ggml.pre is missing; using llama.cpp's \"default\" pre-tokenizer, \
                             which splits text differently from most models: re-convert the model with a \
                             current convert_hf_to_gguf.py"
                                .to_owned(),
                        );
                        "default".to_owned()
                    }
                };
                let Some(pre) = PreTokenizer::new(&name) else {
                    return Err(Error::Tokenizer(format!(
                        "tokenizer.ggml.pre = {name:?} is not a pre-tokenizer moetile knows; known: {}",
                        pretokenize::known_names().join(", ")
                    )));
                };
                let bpe = Bpe::new(pre, &merges, n as u32, &token_id)?;
                let default = bpe.add_bos_default();
                (Model::Bpe(Box::new(bpe)), default)
            }
            ModelKind::Spm => (
                Model::Spm {
                    add_space_prefix: add_space_prefix.unwrap_or(true),
                },
                true,
            ),
        };

        let mut piece_bytes = Vec::new();
        let mut piece_ends = Vec::with_capacity(n);
        for (text, &ty) in tokens.iter().zip(&types) {
            append_piece(&model, text, ty, &mut piece_bytes);
            piece_ends.push(piece_bytes.len());
        }

        let mut special_by_length: Vec<u32> = (0..n as u32)
            .filter(|&id| types[id as usize].is_special() && !tokens[id as usize].is_empty())
            .collect();
        special_by_length.sort_by_key(|&id| (std::cmp::Reverse(tokens[id as usize].len()), id));

        Ok(Self {
            model,
            tokens,
            types,
            scores,
            token_id,
            piece_bytes,
            piece_ends,
            special_by_length,
            special,
            end_of_generation,
            add_bos: add_bos.unwrap_or(add_bos_default) && special.bos.is_some(),
            add_eos: add_eos.unwrap_or(false) && special.eos.is_some(),
            warnings,
        })
    }

    /// Tokenizes `text`.
    ///
    /// `add_special` adds BOS/EOS where the model asks for them (`add_bos_token`...);
    /// `parse_special` lets text such as `<|im_start|>` become its control token (otherwise
    /// it is tokenized as plain text; user-defined tokens are matched either way).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.extend(self.special.bos);
        }
        let fragments = self.cut_special(text, parse_special);
        match &self.model {
            Model::Bpe(bpe) => {
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(t) => bpe.encode(t, &self.token_id, &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            Model::Spm { add_space_prefix } => {
                // SentencePiece sees a space before the text, and again after every special
                // token, as llama.cpp does.
                let mut after_special = true;
                let mut escaped = String::new();
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(t) => {
                            escaped.clear();
                            if *add_space_prefix && after_special {
                                escaped.push(spm::SPACE);
                            }
                            escaped
                                .extend(t.chars().map(|c| if c == ' ' { spm::SPACE } else { c }));
                            let score =
                                |id: u32| self.scores.get(id as usize).copied().unwrap_or(0.0);
                            spm::encode(
                                &escaped,
                                &self.token_id,
                                score,
                                |b| self.byte_token(b),
                                &mut out,
                            );
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.special.eos);
        }
        out
    }

    /// Splits `text` at the special tokens it spells, longest tokens first (llama.cpp's
    /// `tokenizer_st_partition`).
    fn cut_special<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut fragments = if text.is_empty() {
            Vec::new()
        } else {
            vec![Fragment::Text(text)]
        };
        for &id in &self.special_by_length {
            if !parse_special && self.types[id as usize] != TokenType::UserDefined {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            if !fragments
                .iter()
                .any(|f| matches!(f, Fragment::Text(t) if t.contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                match fragment {
                    Fragment::Text(mut rest) => {
                        while let Some(at) = rest.find(needle) {
                            if at > 0 {
                                next.push(Fragment::Text(&rest[..at]));
                            }
                            next.push(Fragment::Token(id));
                            rest = &rest[at + needle.len()..];
                        }
                        if !rest.is_empty() {
                            next.push(Fragment::Text(rest));
                        }
                    }
                    token => next.push(token),
                }
            }
            fragments = next;
        }
        fragments
    }

    /// The SentencePiece fallback token of a byte: `<0xXX>`, else the byte as a one-character
    /// token, else the unknown token.
    fn byte_token(&self, byte: u8) -> Option<u32> {
        self.token_id
            .get(format!("<0x{byte:02X}>").as_str())
            .or_else(|| {
                if byte.is_ascii() {
                    self.token_id
                        .get((byte as char).encode_utf8(&mut [0; 4]) as &str)
                } else {
                    None
                }
            })
            .copied()
            .or(self.special.unk)
    }

    /// The text of `ids`, with control tokens written as their text.
    ///
    /// The pieces are concatenated byte for byte (invalid UTF-8 becomes U+FFFD); for
    /// SentencePiece models with `add_space_prefix`, the space that encoding put in front of
    /// the text is removed from the first non-control token, so `decode(encode(t))` is `t`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        let mut strip_space = matches!(
            self.model,
            Model::Spm {
                add_space_prefix: true
            }
        );
        for &id in ids {
            let mut piece = self.token_bytes(id);
            if strip_space && !piece.is_empty() && !self.is_control(id) {
                piece = piece.strip_prefix(b" ").unwrap_or(piece);
                strip_space = false;
            }
            bytes.extend_from_slice(piece);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The raw bytes token `id` stands for (possibly part of a UTF-8 character); empty for ids
    /// outside the vocabulary and for unused tokens.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        if i >= self.piece_ends.len() {
            return &[];
        }
        let start = if i == 0 { 0 } else { self.piece_ends[i - 1] };
        &self.piece_bytes[start..self.piece_ends[i]]
    }

    /// A decoder for generated tokens that yields text only in whole characters.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    /// Number of tokens in the vocabulary (logits have this many entries or more).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The stored text of token `id` (`Ġ`/`▁` spellings included).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The token whose stored text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_id.get(text).copied()
    }

    /// The type of token `id`, `None` outside the vocabulary.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// Whether `id` is a control (or unknown) token: one llama.cpp hides when printing text.
    pub fn is_control(&self, id: u32) -> bool {
        matches!(
            self.token_type(id),
            Some(TokenType::Control | TokenType::Unknown)
        )
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.special.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.special.eos
    }

    /// All special ids from the metadata (EOT filled in by text when absent).
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Whether [`encode`](Self::encode) with `add_special` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether generation should stop at `id` (EOS, EOT, EOM and the end markers llama.cpp
    /// recognises by text).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.binary_search(&id).is_ok()
    }

    /// Every end-of-generation token, ascending.
    pub fn end_of_generation_tokens(&self) -> &[u32] {
        &self.end_of_generation
    }

    /// Things worth telling the user that did not stop the tokenizer from loading (missing
    /// pre-tokenizer, special ids out of range...).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Appends the bytes token text `text` of type `ty` stands for.
fn append_piece(model: &Model, text: &str, ty: TokenType, out: &mut Vec<u8>) {
    match ty {
        TokenType::Control | TokenType::UserDefined | TokenType::Unknown => {
            out.extend_from_slice(text.as_bytes())
        }
        TokenType::Normal => match model {
            Model::Bpe(_) => {
                for c in text.chars() {
                    // A character outside GPT-2's byte table (malformed vocabulary) stays as is.
                    match bpe::char_to_byte(c) {
                        Some(b) => out.push(b),
                        None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
            }
            Model::Spm { .. } => {
                for c in text.chars() {
                    let c = if c == spm::SPACE { ' ' } else { c };
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
            }
        },
        TokenType::Byte => match parse_byte_token(text) {
            Some(b) => out.push(b),
            None => out.extend_from_slice(text.as_bytes()),
        },
        TokenType::Unused | TokenType::Undefined => {}
    }
}

/// The byte of a `<0xXX>` token.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests;
