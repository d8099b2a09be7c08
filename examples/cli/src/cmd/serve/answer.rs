//! How the model writes its answers, chosen once from its tokenizer: plain text, with tool
//! calls in the Hermes / Qwen form (`tools.rs`), or gpt-oss's harmony, whose channels split
//! reasoning from the answer and whose headers address tool calls (`harmony.rs`). One
//! [`AnswerText`] reads either on its way to the client, so the HTTP side streams both alike.

use moetile::harmony;
use moetile::tokenizer::Tokenizer;
use serde_json::Value;

use super::harmony::HarmonyText;
use super::scheduler::Finish;
use super::tools::{HermesText, ToolCall};

/// The form of the model's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFormat {
    /// Text as it comes; calls as `<tool_call>` blocks.
    Plain,
    /// gpt-oss's harmony messages.
    Harmony,
}

impl AnswerFormat {
    /// The format of the model with `tokenizer`, told as `moetile chat` tells it.
    pub fn of(tokenizer: &Tokenizer) -> Self {
        if harmony::writes_harmony(tokenizer) {
            AnswerFormat::Harmony
        } else {
            AnswerFormat::Plain
        }
    }

    /// The conversation as the format's template reads it (see
    /// [`harmony::template_messages`](super::harmony::template_messages)); plain templates
    /// take OpenAI's shape as it is.
    pub fn template_messages(self, messages: Vec<Value>) -> Vec<Value> {
        match self {
            AnswerFormat::Plain => messages,
            AnswerFormat::Harmony => super::harmony::template_messages(messages),
        }
    }

    /// The template variables a request's `reasoning_effort` sets: gpt-oss's template reads
    /// it; other templates have no such knob, and the request is answered as if unasked.
    pub fn template_variables(self, reasoning_effort: Option<&str>) -> Vec<(&'static str, Value)> {
        match (self, reasoning_effort) {
            (AnswerFormat::Harmony, Some(effort)) => vec![("reasoning_effort", effort.into())],
            _ => Vec::new(),
        }
    }
}

/// Text of an answer for the client, by the field it goes to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta {
    /// `reasoning_content`: a harmony answer's reasoning.
    pub reasoning: String,
    /// `content`: the answer.
    pub content: String,
}

impl Delta {
    /// Text for `content` only.
    pub fn content(content: String) -> Self {
        Delta {
            reasoning: String::new(),
            content,
        }
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.reasoning.is_empty() && self.content.is_empty()
    }

    /// Appends `more`.
    pub fn push(&mut self, more: Delta) {
        self.reasoning.push_str(&more.reasoning);
        self.content.push_str(&more.content);
    }
}

/// An answer's text on its way to the client, read in its format (for tool calls when the
/// model was offered tools).
pub enum AnswerText {
    /// Plain text.
    Plain(HermesText),
    /// Harmony messages.
    Harmony(HarmonyText),
}

impl AnswerText {
    /// An answer in `format`, read for tool calls if `tools`.
    pub fn new(format: AnswerFormat, tools: bool) -> Self {
        match format {
            AnswerFormat::Plain => AnswerText::Plain(HermesText::new(tools)),
            AnswerFormat::Harmony => AnswerText::Harmony(HarmonyText::new(tools)),
        }
    }

    /// Adds `piece` of generated text; returns what may go out now.
    pub fn push(&mut self, piece: String) -> Delta {
        match self {
            AnswerText::Plain(text) => Delta::content(text.push(piece)),
            AnswerText::Harmony(text) => text.push(&piece),
        }
    }

    /// At the end of the answer, which ended for `finish`: the rest of its text, the calls,
    /// and the finish reason (`tool_calls` when there are some). A call the answer's end cut
    /// short (`finish` is `length`) is no call: its text is content.
    pub fn finish(&mut self, finish: Finish) -> (Delta, Vec<ToolCall>, Finish) {
        let (rest, calls) = match self {
            AnswerText::Plain(text) => {
                let (rest, calls) = text.finish();
                (Delta::content(rest), calls)
            }
            AnswerText::Harmony(text) => text.finish(finish == Finish::Stop),
        };
        let finish = if calls.is_empty() {
            finish
        } else {
            Finish::ToolCalls
        };
        (rest, calls, finish)
    }
}
