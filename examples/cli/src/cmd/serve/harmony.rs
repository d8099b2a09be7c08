//! gpt-oss's harmony answers and conversations, in OpenAI's shapes. An answer's analysis
//! channel becomes `reasoning_content`, its final channel (and commentary preambles)
//! `content`, and a message addressed to `functions.NAME` a call of NAME; no tag reaches the
//! client. Conversations sent back are reshaped for the gpt-oss template, which reads one call
//! per assistant message with its arguments as an object, and the reasoning before a call as
//! `thinking`.

use moetile::harmony::{Channel, ChannelParser, Event, Header};
use serde_json::{Value, json};

use super::answer::Delta;
use super::tools::ToolCall;

/// Where the open message's text goes.
enum Route {
    Reasoning,
    Content,
    /// Held until the message ends: the arguments of a call of `name`.
    Call {
        name: String,
        arguments: String,
    },
}

/// A harmony answer on its way to the client.
pub struct HarmonyText {
    parser: ChannelParser,
    /// Whether the model was offered tools: only then are messages to functions calls.
    tools: bool,
    route: Route,
    calls: Vec<ToolCall>,
}

impl HarmonyText {
    /// An answer, read for tool calls if `tools`.
    pub fn new(tools: bool) -> Self {
        HarmonyText {
            parser: ChannelParser::new(),
            tools,
            route: Route::Content,
            calls: Vec::new(),
        }
    }

    /// Adds `piece`; returns the reasoning and content that may go out now.
    pub fn push(&mut self, piece: &str) -> Delta {
        let events = self.parser.push(piece);
        self.read(events)
    }

    /// At the end of the answer: the rest of its text and its calls. `stopped`: the model
    /// ended its turn (`<|call|>` and `<|return|>` end generation, so the last message has
    /// no end tag); otherwise the answer was cut short, and a call it was writing is none.
    pub fn finish(&mut self, stopped: bool) -> (Delta, Vec<ToolCall>) {
        let events = self.parser.finish();
        let mut delta = self.read(events);
        self.end_message(stopped, &mut delta);
        (delta, std::mem::take(&mut self.calls))
    }

    fn read(&mut self, events: Vec<Event>) -> Delta {
        let mut delta = Delta::default();
        for event in events {
            match event {
                Event::Start(header) => self.route = self.route_of(&header),
                Event::Text(text) => match &mut self.route {
                    Route::Reasoning => delta.reasoning.push_str(&text),
                    Route::Content => delta.content.push_str(&text),
                    Route::Call { arguments, .. } => arguments.push_str(&text),
                },
                Event::End => self.end_message(true, &mut delta),
            }
        }
        delta
    }

    /// Where a message of `header` goes: a call to one of the client's functions is a call;
    /// one to another recipient (a built-in tool the client did not offer) is the model's own
    /// business, as its analysis is; the final channel and commentary preambles are for the
    /// user.
    fn route_of(&self, header: &Header) -> Route {
        if let (true, Some(name)) = (self.tools, header.function()) {
            return Route::Call {
                name: name.to_string(),
                arguments: String::new(),
            };
        }
        match (&header.recipient, &header.channel) {
            (None, Channel::Final | Channel::Commentary) => Route::Content,
            _ => Route::Reasoning,
        }
    }

    /// Ends the open message; `complete`: nothing cut it short. A call whose arguments are a
    /// JSON object joins the calls; otherwise (bad JSON, or cut short) its text is content,
    /// as a Hermes block that is not a call stays text.
    fn end_message(&mut self, complete: bool, delta: &mut Delta) {
        let Route::Call { name, arguments } = std::mem::replace(&mut self.route, Route::Content)
        else {
            return;
        };
        let json = arguments.trim();
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(_)) if complete => self.calls.push(ToolCall {
                name,
                arguments: json.to_string(),
            }),
            _ => delta.content.push_str(&arguments),
        }
    }
}

/// `messages` (OpenAI's shape, as `api.rs` passes them to templates) as the gpt-oss template
/// reads them: an assistant message's calls each in a message of its own, followed by its
/// results (matched by `tool_call_id`, else by position), since the template renders the first
/// call of a message only and names a result by the call before it; a call's `arguments` text
/// parsed (the template writes them with `tojson`, which would quote a string); the
/// `reasoning_content` of a call message without content as its `thinking`, the reasoning the
/// template keeps before a call.
pub fn template_messages(messages: Vec<Value>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut messages = messages.into_iter().peekable();
    while let Some(mut message) = messages.next() {
        let calls = match message.get_mut("tool_calls").map(Value::take) {
            Some(Value::Array(calls)) if !calls.is_empty() => calls,
            _ => {
                if let Some(object) = message.as_object_mut() {
                    object.remove("tool_calls");
                }
                out.push(message);
                continue;
            }
        };
        let content_empty = message["content"].as_str().is_none_or(str::is_empty);
        if let Some(reasoning) = message.get("reasoning_content").cloned()
            && content_empty
        {
            message["thinking"] = reasoning;
        }
        let mut results = Vec::new();
        while let Some(result) = messages.next_if(|m| m["role"] == "tool") {
            results.push(result);
        }
        let owner = |k: usize, result: &Value| {
            let by_id = result["tool_call_id"].as_str().and_then(|id| {
                calls
                    .iter()
                    .position(|call| call["id"].as_str() == Some(id))
            });
            by_id.unwrap_or(k.min(calls.len() - 1))
        };
        let owners: Vec<usize> = results
            .iter()
            .enumerate()
            .map(|(k, r)| owner(k, r))
            .collect();
        for (i, call) in calls.iter().enumerate() {
            let mut one = message.clone();
            if i > 0 {
                one["content"] = "".into();
                if let Some(object) = one.as_object_mut() {
                    object.remove("thinking");
                }
            }
            one["tool_calls"] = json!([with_parsed_arguments(call.clone())]);
            out.push(one);
            let mine = results.iter().zip(&owners).filter(|&(_, &o)| o == i);
            out.extend(mine.map(|(result, _)| result.clone()));
        }
    }
    out
}

/// `call` with its `function.arguments` text as the JSON it holds (left as text if it holds
/// none).
fn with_parsed_arguments(mut call: Value) -> Value {
    let arguments = &mut call["function"]["arguments"];
    if let Some(parsed) = arguments
        .as_str()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    {
        *arguments = parsed;
    }
    call
}

#[cfg(test)]
mod tests {
    use super::super::answer::{AnswerFormat, AnswerText};
    use super::super::scheduler::Finish;
    use super::*;

    /// What the client gets for an answer sent in `pieces` that ended for `finish`, read as
    /// the server reads it.
    fn answer(pieces: &[&str], finish: Finish) -> (Delta, Vec<ToolCall>, Finish) {
        let mut answer = AnswerText::new(AnswerFormat::Harmony, true);
        let mut delta = Delta::default();
        for piece in pieces {
            delta.push(answer.push(piece.to_string()));
        }
        let (rest, calls, finish) = answer.finish(finish);
        delta.push(rest);
        for tag in TAGS {
            assert!(!delta.reasoning.contains(tag) && !delta.content.contains(tag));
        }
        (delta, calls, finish)
    }

    /// Harmony's tags, none of which may reach the client.
    const TAGS: [&str; 7] = [
        "<|start|>",
        "<|channel|>",
        "<|constrain|>",
        "<|message|>",
        "<|end|>",
        "<|call|>",
        "<|return|>",
    ];

    /// [`answer`] of `text` cut in two at every byte, and one character at a time: all give
    /// what the whole text gives.
    fn answer_cut_everywhere(text: &str, finish: Finish) -> (Delta, Vec<ToolCall>, Finish) {
        let whole = answer(&[text], finish);
        for at in (0..=text.len()).filter(|&at| text.is_char_boundary(at)) {
            let (a, b) = text.split_at(at);
            assert_eq!(answer(&[a, b], finish), whole, "cut at {at}");
        }
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(answer(&chars, finish), whole, "a character at a time");
        whole
    }

    fn delta(reasoning: &str, content: &str) -> Delta {
        Delta {
            reasoning: reasoning.into(),
            content: content.into(),
        }
    }

    /// The text after the prompt's `<|start|>assistant` up to `<|return|>`, which ends
    /// generation and so is not in the text.
    #[test]
    fn reasoning_and_final_go_to_their_fields() {
        let text = "<|channel|>analysis<|message|>2+2 <is> 4.<|end|>\
                    <|start|>assistant<|channel|>final<|message|>**4** «<|x»";
        assert_eq!(
            answer_cut_everywhere(text, Finish::Stop),
            (delta("2+2 <is> 4.", "**4** «<|x»"), vec![], Finish::Stop)
        );
    }

    /// Both placements of the recipient harmony allows, after a preamble in the commentary
    /// channel; `<|call|>` ends generation.
    #[test]
    fn calls_to_functions_become_tool_calls() {
        let call = |name: &str, arguments: &str| ToolCall {
            name: name.into(),
            arguments: arguments.into(),
        };
        let after = "<|channel|>analysis<|message|>Need weather.<|end|>\
                     <|start|>assistant<|channel|>commentary<|message|>Checking.<|end|>\
                     <|start|>assistant<|channel|>commentary to=functions.get_weather \
                     <|constrain|>json<|message|>{\"city\": \"Oslo\"}";
        assert_eq!(
            answer_cut_everywhere(after, Finish::Stop),
            (
                delta("Need weather.", "Checking."),
                vec![call("get_weather", "{\"city\": \"Oslo\"}")],
                Finish::ToolCalls
            )
        );
        let before = " to=functions.now<|channel|>commentary json<|message|>{}";
        assert_eq!(
            answer_cut_everywhere(before, Finish::Stop),
            (Delta::default(), vec![call("now", "{}")], Finish::ToolCalls)
        );
    }

    /// A call whose arguments are not a JSON object, or that the answer's end cut short, is
    /// no call: its text is content, as the Hermes form leaves such blocks. Without tools
    /// offered, a message to a function is the model's reasoning; one to a built-in tool is
    /// always.
    #[test]
    fn what_is_not_a_call_is_text() {
        let bad = "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\": 1";
        assert_eq!(
            answer_cut_everywhere(bad, Finish::Stop),
            (delta("", "{\"a\": 1"), vec![], Finish::Stop)
        );
        let cut = "<|channel|>commentary to=functions.f<|message|>{\"a\": 1}";
        assert_eq!(
            answer_cut_everywhere(cut, Finish::Length),
            (delta("", "{\"a\": 1}"), vec![], Finish::Length)
        );
        let mut untold = AnswerText::new(AnswerFormat::Harmony, false);
        let mut got = untold.push(cut.to_string());
        got.push(untold.finish(Finish::Stop).0);
        assert_eq!(got, delta("{\"a\": 1}", ""));
        let builtin = "<|channel|>analysis to=browser.search<|message|>{\"q\": 1}";
        assert_eq!(
            answer_cut_everywhere(builtin, Finish::Stop),
            (delta("{\"q\": 1}", ""), vec![], Finish::Stop)
        );
    }

    /// Two calls in one assistant message become two messages, each followed by its result
    /// (matched by id though sent in the other order); arguments become objects; reasoning
    /// goes to the first call's `thinking`.
    #[test]
    fn conversations_are_reshaped_for_the_template() {
        let call = |id: &str, name: &str| {
            json!({"id": id, "type": "function",
                   "function": {"name": name, "arguments": "{\"x\": 1}"}})
        };
        let messages = vec![
            json!({"role": "user", "content": "Go"}),
            json!({"role": "assistant", "content": "", "reasoning_content": "Two calls.",
                   "tool_calls": [call("a", "f"), call("b", "g")]}),
            json!({"role": "tool", "tool_call_id": "b", "content": "from g"}),
            json!({"role": "tool", "tool_call_id": "a", "content": "from f"}),
            json!({"role": "assistant", "content": "Done.", "tool_calls": []}),
        ];
        let parsed = |id: &str, name: &str| {
            json!([{"id": id, "type": "function",
                    "function": {"name": name, "arguments": {"x": 1}}}])
        };
        assert_eq!(
            template_messages(messages),
            [
                json!({"role": "user", "content": "Go"}),
                json!({"role": "assistant", "content": "", "reasoning_content": "Two calls.",
                       "thinking": "Two calls.", "tool_calls": parsed("a", "f")}),
                json!({"role": "tool", "tool_call_id": "a", "content": "from f"}),
                json!({"role": "assistant", "content": "", "reasoning_content": "Two calls.",
                       "tool_calls": parsed("b", "g")}),
                json!({"role": "tool", "tool_call_id": "b", "content": "from g"}),
                json!({"role": "assistant", "content": "Done."}),
            ]
        );
    }
}
