//! gpt-oss's "harmony" answers, split into messages as they stream.
//!
//! After the prompt's `<|start|>assistant`, a gpt-oss model writes one or more messages, each a
//! header naming its channel and the text after `<|message|>`:
//! `<|channel|>analysis<|message|>...<|end|><|start|>assistant<|channel|>final<|message|>...`,
//! the last one ended by `<|return|>` (or `<|call|>` for a tool call). `analysis` is the
//! reasoning, `commentary` tool calls and preambles, `final` the answer meant for the user. A
//! tool call's header names its recipient, before or after the channel:
//! `<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{...}<|call|>`.
//! The tokenizer writes these tags as text (as llama.cpp does for gpt-oss vocabularies), so
//! [`ChannelParser`] reads them from the generated text, which arrives in pieces that may cut
//! a tag anywhere.
//!
//! ```
//! use moetile::harmony::{Channel, ChannelParser, Event};
//! let mut parser = ChannelParser::new();
//! let mut final_text = String::new();
//! let mut in_final = false;
//! for piece in ["<|chan", "nel|>analysis<|message|>Easy.<|e", "nd|><|start|>assistant",
//!               "<|channel|>final<|message|>4"] {
//!     for event in parser.push(piece) {
//!         match event {
//!             Event::Start(header) => in_final = header.channel == Channel::Final,
//!             Event::Text(text) if in_final => final_text.push_str(&text),
//!             _ => {}
//!         }
//!     }
//! }
//! assert_eq!(parser.finish(), []);
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

/// What a message's header says: its channel and, for a tool call, whom it is addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The message's channel ([`Channel::Final`] when the header names none).
    pub channel: Channel,
    /// The `to=` of the header (`functions.get_weather`), if any: the message is a call.
    pub recipient: Option<String>,
}

impl Header {
    /// The function a call addresses: the recipient's name in the `functions` namespace,
    /// where tools a client offers live (built-in tools such as `browser.search` are not).
    pub fn function(&self) -> Option<&str> {
        self.recipient.as_deref()?.strip_prefix("functions.")
    }
}

/// What the parser read from the text so far, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message begins.
    Start(Header),
    /// More of the open message's text (never empty); one message's text may come in
    /// several parts.
    Text(String),
    /// A tag ended the open message (`<|end|>`, `<|call|>`, `<|return|>` or the next
    /// `<|start|>`). Where the end token stops generation instead, the text holds no tag and
    /// the answer's end is the message's.
    End,
}

/// Tags that end a message's text.
const MESSAGE_ENDS: [&str; 4] = ["<|end|>", "<|return|>", "<|call|>", "<|start|>"];
const MESSAGE: &str = "<|message|>";
const CHANNEL: &str = "<|channel|>";
/// Every tag of harmony's: none is ever part of a message's text, even where a model writes
/// one out of place.
const TAGS: [&str; 7] = [
    MESSAGE_ENDS[0],
    MESSAGE_ENDS[1],
    MESSAGE_ENDS[2],
    MESSAGE_ENDS[3],
    MESSAGE,
    CHANNEL,
    "<|constrain|>",
];

/// Splits a harmony answer into messages; see the [module docs](self).
#[derive(Debug, Default)]
pub struct ChannelParser {
    /// Whether a message is open (its text being read); a header is read otherwise.
    in_message: bool,
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

    /// Adds a piece of generated text; returns what became certain.
    pub fn push(&mut self, piece: &str) -> Vec<Event> {
        self.pending.push_str(piece);
        let mut out = Vec::new();
        loop {
            if !self.in_message {
                let Some(at) = self.pending.find(MESSAGE) else {
                    return out;
                };
                out.push(Event::Start(parse_header(&self.pending[..at])));
                self.pending.drain(..at + MESSAGE.len());
                self.in_message = true;
                self.seen_message = true;
                continue;
            }
            let tag = TAGS
                .iter()
                .filter_map(|&tag| self.pending.find(tag).map(|at| (at, tag)))
                .min();
            let Some((at, tag)) = tag else {
                let len = self.pending.len() - partial_tag_len(&self.pending);
                if len > 0 {
                    out.push(Event::Text(self.pending[..len].to_owned()));
                }
                self.pending.drain(..len);
                return out;
            };
            if at > 0 {
                out.push(Event::Text(self.pending[..at].to_owned()));
            }
            // A header's `<|channel|>` ends the message without `<|end|><|start|>` (a model
            // skipping them) and stays, to begin the next header; a stray `<|message|>` or
            // `<|constrain|>` is dropped.
            let ends = MESSAGE_ENDS.contains(&tag) || tag == CHANNEL;
            let consumed = if tag == CHANNEL { at } else { at + tag.len() };
            self.pending.drain(..consumed);
            if ends {
                out.push(Event::End);
                self.in_message = false;
            }
        }
    }

    /// Ends the answer: text held as a possible tag is the open message's after all; an
    /// unfinished header is dropped, unless no message ever began (a model not writing
    /// harmony), in which case all its text, without tags, is a final message.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut text = std::mem::take(&mut self.pending);
        if !self.in_message {
            for tag in TAGS {
                text = text.replace(tag, "");
            }
        }
        let mut out = Vec::new();
        if !self.in_message {
            if self.seen_message || text.is_empty() {
                return out;
            }
            out.push(Event::Start(Header {
                channel: Channel::Final,
                recipient: None,
            }));
        }
        self.in_message = false;
        if !text.is_empty() {
            out.push(Event::Text(text));
        }
        out
    }
}

/// What a header says (`<|start|>assistant<|channel|>final`, `<|channel|>commentary
/// to=functions.f <|constrain|>json`, `<|start|>assistant to=functions.f<|channel|>commentary
/// json`...); one without a channel is the answer's.
fn parse_header(header: &str) -> Header {
    let channel = match header.rfind(CHANNEL) {
        Some(at) => {
            let rest = &header[at + CHANNEL.len()..];
            let name = rest
                .split(|c: char| c.is_whitespace() || c == '<')
                .next()
                .unwrap_or_default();
            Channel::from_name(name)
        }
        None => Channel::Final,
    };
    let recipient = header
        .split(|c: char| c.is_whitespace() || c == '<' || c == '>')
        .find_map(|word| word.strip_prefix("to="))
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    Header { channel, recipient }
}

/// Length of the longest end of `text` that begins a tag without completing it: text to hold
/// until the next piece tells.
fn partial_tag_len(text: &str) -> usize {
    TAGS.iter()
        .flat_map(|tag| (1..tag.len()).rev().map(move |n| &tag[..n]))
        .filter(|prefix| text.ends_with(prefix))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer with reasoning, a tool call (recipient after the channel) and the final
    /// text, as gpt-oss writes it (the closing `<|return|>` included, as when the text is not
    /// cut at it).
    const ANSWER: &str = "<|channel|>analysis<|message|>User asks 2+2. Easy: 4 <3.<|end|>\
                          <|start|>assistant<|channel|>commentary to=functions.calc \
                          <|constrain|>json<|message|>{\"x\": \"<|\"}<|end|>\
                          <|start|>assistant<|channel|>final<|message|>It is **4** <|fin.<|return|>";

    /// One message read whole: its header, its text, and whether a tag ended it.
    type Message = (Header, String, bool);

    /// The messages of `pieces`, joining each one's parts.
    fn parse(pieces: &[&str]) -> Vec<Message> {
        let mut parser = ChannelParser::new();
        let events: Vec<Event> = pieces.iter().flat_map(|p| parser.push(p)).collect();
        let mut out: Vec<Message> = Vec::new();
        for event in events.into_iter().chain(parser.finish()) {
            match event {
                Event::Start(header) => out.push((header, String::new(), false)),
                Event::Text(text) => {
                    assert!(!text.is_empty());
                    out.last_mut().expect("text in a message").1.push_str(&text);
                }
                Event::End => out.last_mut().expect("a message to end").2 = true,
            }
        }
        out
    }

    fn header(channel: Channel, recipient: Option<&str>) -> Header {
        Header {
            channel,
            recipient: recipient.map(str::to_owned),
        }
    }

    fn expected() -> Vec<Message> {
        vec![
            (
                header(Channel::Analysis, None),
                "User asks 2+2. Easy: 4 <3.".into(),
                true,
            ),
            (
                header(Channel::Commentary, Some("functions.calc")),
                "{\"x\": \"<|\"}".into(),
                true,
            ),
            (
                header(Channel::Final, None),
                "It is **4** <|fin.".into(),
                true,
            ),
        ]
    }

    #[test]
    fn whole_answer_splits_into_messages() {
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

    /// The recipient may come before the channel (the form the gpt-oss template writes calls
    /// in), and only `functions.` recipients are the client's functions.
    #[test]
    fn recipients_are_read_before_or_after_the_channel() {
        let call = " to=functions.get_weather<|channel|>commentary json<|message|>{}";
        let [(h, text, false)] = &parse(&[call])[..] else {
            panic!("{:?}", parse(&[call]));
        };
        assert_eq!(
            (h, text.as_str()),
            (
                &header(Channel::Commentary, Some("functions.get_weather")),
                "{}"
            )
        );
        assert_eq!(h.function(), Some("get_weather"));
        let builtin = parse(&["<|channel|>analysis to=browser.search<|message|>{}"]);
        assert_eq!(builtin[0].0.function(), None);
        assert_eq!(header(Channel::Final, None).function(), None);
    }

    /// The final text is released as soon as no tag can begin in it, and held while one may.
    #[test]
    fn text_is_released_as_soon_as_it_is_certain() {
        let mut parser = ChannelParser::new();
        assert_eq!(
            parser.push("<|channel|>final<|message|>Hel"),
            [
                Event::Start(header(Channel::Final, None)),
                Event::Text("Hel".into())
            ]
        );
        assert_eq!(parser.push("lo <|"), [Event::Text("lo ".into())]);
        assert_eq!(parser.push("x"), [Event::Text("<|x".into())]);
        assert!(parser.push("<|ret").is_empty());
        assert_eq!(parser.push("urn|>"), [Event::End]);
        assert!(parser.finish().is_empty());
    }

    /// Text that never opens a message (a model not writing harmony) is a final message; a
    /// header left unfinished after a message is dropped; a message the answer's end cut has
    /// no `End`.
    #[test]
    fn plain_text_is_the_answer_and_unfinished_headers_are_dropped() {
        assert_eq!(
            parse(&["Just ", "text."]),
            [(header(Channel::Final, None), "Just text.".into(), false)]
        );
        assert_eq!(
            parse(&["<|channel|>analysis<|message|>hm<|end|><|start|>assistant<|chan"]),
            [(header(Channel::Analysis, None), "hm".into(), true)]
        );
        assert_eq!(
            parse(&["<|channel|>draft<|message|>x"]),
            [(
                header(Channel::Other("draft".into()), None),
                "x".into(),
                false
            )]
        );
        assert!(parse(&[]).is_empty());
    }

    /// A tag out of place never reaches the text: a `<|channel|>` in a message's text begins
    /// the next message's header, other stray tags are dropped, and so are those in text that
    /// never opened a message.
    #[test]
    fn tags_out_of_place_are_not_text() {
        assert_eq!(
            parse(&["<|message|>a<|constrain|>b<|message|>c<|channel|>final<|message|>d"]),
            [
                (header(Channel::Final, None), "abc".into(), true),
                (header(Channel::Final, None), "d".into(), false),
            ]
        );
        assert_eq!(
            parse(&["no <|start|>har<|channel|>mony<|end|>"]),
            [(header(Channel::Final, None), "no harmony".into(), false)]
        );
    }
}
