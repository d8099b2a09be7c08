//! Tool calls in an answer, written in the Hermes / Qwen form
//! `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, returned as OpenAI's
//! `tool_calls`. The text before the first opening tag goes out as content as it comes;
//! everything from the tag on is held to the end and parsed then.

use serde::Deserialize;
use serde_json::Value;

use super::watch::TextWatch;

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// One call: the function's name and its arguments as JSON text (as OpenAI sends them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The function called.
    pub name: String,
    /// Its arguments, a JSON object as text.
    pub arguments: String,
}

/// A plain answer's text on its way to the client; read for `<tool_call>` blocks when the
/// model was offered tools.
pub struct HermesText {
    calls: Option<TextWatch>,
}

impl HermesText {
    /// An answer, read for tool calls if `tools`.
    pub fn new(tools: bool) -> Self {
        HermesText {
            calls: tools.then(|| TextWatch::new(vec![OPEN.to_string()])),
        }
    }

    /// Adds `piece`; returns the content that may go out now.
    pub fn push(&mut self, piece: String) -> String {
        match &mut self.calls {
            Some(watch) => watch.push(&piece).0,
            None => piece,
        }
    }

    /// At the end of the answer: the rest of the content and the calls.
    pub fn finish(&mut self) -> (String, Vec<ToolCall>) {
        self.calls
            .as_mut()
            .map(|watch| parse(&watch.take()))
            .unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct CallJson {
    name: String,
    #[serde(default)]
    arguments: Value,
}

/// Parses `held`, the answer from its first opening tag on, into the text between and after
/// the calls and the calls. An unclosed block (the answer was cut short) or one that is not
/// `{"name": ..., "arguments": ...}` leaves it all content: the model wrote something else.
fn parse(held: &str) -> (String, Vec<ToolCall>) {
    let mut calls = Vec::new();
    let mut content = String::new();
    let mut text = held;
    while let Some(start) = text.find(OPEN) {
        content.push_str(&text[..start]);
        let block = &text[start + OPEN.len()..];
        let Some(end) = block.find(CLOSE) else {
            return (held.to_string(), Vec::new());
        };
        let Ok(call) = serde_json::from_str::<CallJson>(block[..end].trim()) else {
            return (held.to_string(), Vec::new());
        };
        let arguments = match call.arguments {
            Value::String(text) => text,
            Value::Null => "{}".to_string(),
            other => other.to_string(),
        };
        calls.push(ToolCall {
            name: call.name,
            arguments,
        });
        text = &block[end + CLOSE.len()..];
    }
    content.push_str(text);
    (content.trim().to_string(), calls)
}

#[cfg(test)]
mod tests {
    use super::super::answer::{AnswerFormat, AnswerText, Delta};
    use super::super::scheduler::Finish;
    use super::*;

    /// The content and calls of an answer in `pieces`, read as the server reads it.
    fn answer(pieces: &[&str]) -> (String, Vec<ToolCall>) {
        let mut answer = AnswerText::new(AnswerFormat::Plain, true);
        let mut content = Delta::default();
        for piece in pieces {
            content.push(answer.push(piece.to_string()));
        }
        let (rest, calls, finish) = answer.finish(Finish::Stop);
        assert_eq!(finish == Finish::ToolCalls, !calls.is_empty());
        content.push(rest);
        assert_eq!(content.reasoning, "");
        (content.content, calls)
    }

    #[test]
    fn calls_are_parsed_from_pieces_and_the_text_before_is_content() {
        let (content, calls) = answer(&[
            "Let me look.\n<tool",
            "_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n",
            "<tool_call>\n{\"name\": \"now\", \"arguments\": \"{}\"}\n</tool_call>",
        ]);
        assert_eq!(content, "Let me look.\n");
        assert_eq!(
            calls,
            [
                ToolCall {
                    name: "weather".into(),
                    arguments: r#"{"city":"Oslo"}"#.into()
                },
                ToolCall {
                    name: "now".into(),
                    arguments: "{}".into()
                },
            ]
        );
    }

    #[test]
    fn what_is_not_a_call_stays_text() {
        let cut = "<tool_call>\n{\"name\": \"weather\", \"argu";
        assert_eq!(answer(&["So: ", cut]), (format!("So: {cut}"), Vec::new()));
        let prose = "<tool_call>maybe later</tool_call>";
        assert_eq!(answer(&[prose]), (prose.to_string(), Vec::new()));
        assert_eq!(
            answer(&["plain <tool"]),
            ("plain <tool".to_string(), Vec::new())
        );
    }
}
