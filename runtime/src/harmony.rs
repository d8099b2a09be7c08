//! gpt-oss's "harmony" answers, split by channel as they stream.
//!
//! After the prompt's `<|start|>assistant`, a gpt-oss model writes one or more messages, each a
//! header naming its channel and the text after `<|message|>`:
//! `<|channel|>analysis<|message|>...<|end|><|start|>assistant<|channel|>final<|message|>...`,
//! the last one ended by `<|return|>` (or `<|call|>` for a tool call). `analysis` is the
//! reasoning, `commentary` tool calls and preambles, `final` the answer meant for the user.
//! The tokenizer writes these tags as text (as llama.cpp does for gpt-oss vocabularies), so
//! [`ChannelParser`] reads them from the generated text, which arrives in pieces that may cut
//! a tag anywhere.
//!
//! ```
//! use moetile::harmony::{Channel, ChannelParser};
//! let mut parser = ChannelParser::new();
//! let mut final_text = String::new();
//! for piece in ["<|chan", "nel|>analysis<|message|>Easy.<|e", "nd|><|start|>assistant",
//!               "<|channel|>final<|message|>4"] {
//!     for (channel, text) in parser.push(piece) {
//!         if channel == Channel::Final {
//!             final_text.push_str(&text);
//!         }
//!     }
//! }
//! assert!(parser.finish().is_empty());
//! assert_eq!(final_text, "4");
//! ```

use crate::tokenizer::Tokenizer;

/// Whether `tokenizer`'s model answers in harmony (its vocabulary has the header tags).
pub fn writes_harmony(tokenizer: &Tokenizer) -> bool {
    [CHANNEL, MESSAGE]
        .iter()
        .all(|tag| tokenizer.token_id(tag).is_some())
}

/// The channel of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// The model's reasoning (chain of thought), not meant for the user.
    Analysis,
    /// Tool calls and what the model says around them.
    Commentary,
    /// The answer.
    Final,
    /// A channel harmony does not define, by name.
    Other(String),
}

impl Channel {
    fn from_name(name: &str) -> Channel {
        match name {
            "analysis" => Channel::Analysis,
            "commentary" => Channel::Commentary,
            "final" => Channel::Final,
            other => Channel::Other(other.to_owned()),
        }
    }
}

/// Tags that end a message's text.
const MESSAGE_ENDS: [&str; 4] = ["<|end|>", "<|return|>", "<|call|>", "<|start|>"];
const MESSAGE: &str = "<|message|>";
const CHANNEL: &str = "<|channel|>";

/// Splits a harmony answer by channel; see the [module docs](self).
#[derive(Debug, Default)]
pub struct ChannelParser {
    /// The channel of the message being read, `None` while reading a header.
    channel: Option<Channel>,
    /// Text not handed out yet: a header so far, or the end of a message's text that may be
    /// the start of a tag.
    pending: String,
    /// Whether any message has begun.
    seen_message: bool,
}

impl ChannelParser {
    /// A parser at the start of the assistant's turn (the text after the prompt).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a piece of generated text; returns the message text now certain, with its channel
    /// (pieces of one message may come out in several parts).
    pub fn push(&mut self, piece: &str) -> Vec<(Channel, String)> {
        self.pending.push_str(piece);
        let mut out = Vec::new();
        loop {
            match &self.channel {
                None => {
                    let Some(at) = self.pending.find(MESSAGE) else {
                        return out;
                    };
                    let channel = header_channel(&self.pending[..at]);
                    self.pending.drain(..at + MESSAGE.len());
                    self.channel = Some(channel);
                    self.seen_message = true;
                }
                Some(channel) => {
                    let end = MESSAGE_ENDS
                        .iter()
                        .filter_map(|tag| self.pending.find(tag).map(|at| (at, tag.len())))
                        .min();
                    let (text_len, consumed) = match end {
                        Some((at, len)) => (at, at + len),
                        None => {
                            let keep = partial_tag_len(&self.pending);
                            let len = self.pending.len() - keep;
                            (len, len)
                        }
                    };
                    if text_len > 0 {
                        out.push((channel.clone(), self.pending[..text_len].to_owned()));
                    }
                    self.pending.drain(..consumed);
                    if end.is_none() {
                        return out;
                    }
                    self.channel = None;
                }
            }
        }
    }

    /// Ends the answer: text held as a possible tag is the message's after all; an
    /// unfinished header is dropped, unless no message ever began (a model not writing
    /// harmony), in which case all its text is the answer.
    pub fn finish(&mut self) -> Vec<(Channel, String)> {
        let text = std::mem::take(&mut self.pending);
        let channel = match self.channel.take() {
            Some(channel) => channel,
            None if !self.seen_message => Channel::Final,
            None => return Vec::new(),
        };
        if text.is_empty() {
            Vec::new()
        } else {
            vec![(channel, text)]
        }
    }
}

/// The channel a header names (`<|start|>assistant<|channel|>final`, `<|channel|>commentary
/// to=functions.f <|constrain|>json`...); a header without one is the answer's.
fn header_channel(header: &str) -> Channel {
    match header.rfind(CHANNEL) {
        Some(at) => {
            let rest = &header[at + CHANNEL.len()..];
            let name = rest
                .split(|c: char| c.is_whitespace() || c == '<')
                .next()
                .unwrap_or_default();
            Channel::from_name(name)
        }
        None => Channel::Final,
    }
}

/// Length of the longest end of `text` that begins a message-ending tag without completing
/// it: text to hold until the next piece tells.
fn partial_tag_len(text: &str) -> usize {
    MESSAGE_ENDS
        .iter()
        .flat_map(|tag| (1..tag.len()).rev().map(move |n| &tag[..n]))
        .filter(|prefix| text.ends_with(prefix))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer with reasoning, a tool-call preamble and the final text, as gpt-oss writes
    /// it (the closing `<|return|>` included, as when the text is not cut at it).
    const ANSWER: &str = "<|channel|>analysis<|message|>User asks 2+2. Easy: 4 <3.<|end|>\
                          <|start|>assistant<|channel|>commentary to=functions.calc \
                          <|constrain|>json<|message|>{\"x\": \"<|\"}<|end|>\
                          <|start|>assistant<|channel|>final<|message|>It is **4** <|fin.<|return|>";

    /// The text of each message, joining its parts.
    fn parse(pieces: &[&str]) -> Vec<(Channel, String)> {
        let mut parser = ChannelParser::new();
        let mut out: Vec<(Channel, String)> = Vec::new();
        let parts = pieces
            .iter()
            .flat_map(|p| parser.push(p))
            .collect::<Vec<_>>();
        for (channel, text) in parts.into_iter().chain(parser.finish()) {
            match out.last_mut() {
                Some((last, joined)) if *last == channel => joined.push_str(&text),
                _ => out.push((channel, text)),
            }
        }
        out
    }

    fn expected() -> Vec<(Channel, String)> {
        vec![
            (Channel::Analysis, "User asks 2+2. Easy: 4 <3.".into()),
            (Channel::Commentary, "{\"x\": \"<|\"}".into()),
            (Channel::Final, "It is **4** <|fin.".into()),
        ]
    }

    #[test]
    fn whole_answer_splits_by_channel() {
        assert_eq!(parse(&[ANSWER]), expected());
    }

    /// Tags arrive cut at every place: one character at a time, and the answer split in two
    /// at each byte.
    #[test]
    fn tags_cut_between_pieces_are_reassembled() {
        let chars: Vec<String> = ANSWER.chars().map(String::from).collect();
        let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(parse(&chars), expected());
        for at in 0..=ANSWER.len() {
            let (a, b) = ANSWER.split_at(at);
            assert_eq!(parse(&[a, b]), expected(), "split at {at}");
        }
    }

    /// The final text is released as soon as no tag can begin in it, and held while one may.
    #[test]
    fn text_is_released_as_soon_as_it_is_certain() {
        let mut parser = ChannelParser::new();
        assert!(parser.push("<|channel|>final<|message|>Hel").len() == 1);
        assert_eq!(parser.push("lo <|"), [(Channel::Final, "lo ".to_owned())]);
        assert_eq!(parser.push("x"), [(Channel::Final, "<|x".to_owned())]);
        assert!(parser.push("<|ret").is_empty());
        assert!(parser.push("urn|>").is_empty());
        assert!(parser.finish().is_empty());
    }

    /// Text that never opens a message (a model not writing harmony) is the answer; a header
    /// left unfinished after a message is dropped.
    #[test]
    fn plain_text_is_the_answer_and_unfinished_headers_are_dropped() {
        assert_eq!(
            parse(&["Just ", "text."]),
            [(Channel::Final, "Just text.".to_owned())]
        );
        assert_eq!(
            parse(&["<|channel|>analysis<|message|>hm<|end|><|start|>assistant<|chan"]),
            [(Channel::Analysis, "hm".to_owned())]
        );
        assert_eq!(
            parse(&["<|channel|>draft<|message|>x"]),
            [(Channel::Other("draft".into()), "x".to_owned())]
        );
    }
}
