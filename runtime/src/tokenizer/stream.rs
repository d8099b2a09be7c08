//! Incremental detokenization: tokens arrive one at a time and often split a multi-byte
//! character between them, so text is released only once it is complete UTF-8.

use super::Tokenizer;

/// Turns a stream of token ids into text without ever emitting half a character.
///
/// Bytes that cannot begin a valid UTF-8 sequence are emitted as U+FFFD as soon as that is
/// certain; a trailing incomplete sequence is held until the next token completes it, or
/// flushed as U+FFFD by [`finish`](Self::finish).
///
/// ```
/// # use moetile::tokenizer::{Tokenizer, Vocab, ModelKind, TokenType};
/// # let vocab = Vocab {
/// #     model: ModelKind::Spm,
/// #     tokens: ["<0xE2>", "<0x82>", "<0xAC>"].map(String::from).to_vec(),
/// #     types: vec![TokenType::Byte; 3],
/// #     ..Vocab::default()
/// # };
/// # let tokenizer = Tokenizer::new(vocab)?;
/// // "€" is E2 82 AC, here spelled by three byte tokens.
/// let mut stream = tokenizer.stream_decoder();
/// assert_eq!(stream.push(0), "");
/// assert_eq!(stream.push(1), "");
/// assert_eq!(stream.push(2), "€");
/// # Ok::<(), moetile::Error>(())
/// ```
#[derive(Debug)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    pending: Vec<u8>,
    skip_control: bool,
}

impl<'t> StreamDecoder<'t> {
    pub(super) fn new(tokenizer: &'t Tokenizer) -> Self {
        Self {
            tokenizer,
            pending: Vec::new(),
            skip_control: false,
        }
    }

    /// Drops control tokens (BOS, EOS, `<|im_end|>`...) instead of writing their text, as
    /// llama.cpp does when printing generated text.
    pub fn skip_control(mut self, yes: bool) -> Self {
        self.skip_control = yes;
        self
    }

    /// Adds one token; returns the text that became complete (possibly empty).
    ///
    /// Ids outside the vocabulary add nothing.
    pub fn push(&mut self, id: u32) -> String {
        if !(self.skip_control && self.tokenizer.is_control(id)) {
            self.pending
                .extend_from_slice(self.tokenizer.token_bytes(id));
        }
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(valid) => {
                    text.push_str(valid);
                    self.pending.clear();
                    return text;
                }
                Err(e) => {
                    let valid_up_to = e.valid_up_to();
                    // Valid by the error's own account.
                    text.push_str(
                        std::str::from_utf8(&self.pending[..valid_up_to]).unwrap_or_default(),
                    );
                    match e.error_len() {
                        // Cannot become valid whatever follows: replace and go on.
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid_up_to + bad);
                        }
                        // An incomplete character at the end: keep it for the next token.
                        None => {
                            self.pending.drain(..valid_up_to);
                            return text;
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: whatever incomplete sequence is held comes out as U+FFFD.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}
