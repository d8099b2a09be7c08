//! Chat templates: renders `tokenizer.chat_template` from the GGUF with minijinja, with a ChatML
//! fallback for files that carry none.
//!
//! Templates are written for Hugging Face's Jinja2 setup, which this module mirrors: blocks trim
//! the newline after them and strip the indentation before them, `{% break %}`/`{% continue %}`
//! work, Python string and dict methods (`.strip()`, `.startswith()`, `.items()`...) come from
//! `minijinja-contrib`'s pycompat, `tojson` writes plain JSON as Python's `json.dumps` does
//! (minijinja's own escapes `<`, `>`, `&` and `'` for HTML, which would change prompts), and
//! `raise_exception(msg)` fails the render with the template's message. The rendered prompt is
//! meant to be tokenized with `parse_special = true`.
//!
//! ```
//! use moetile::chat::{ChatMessage, ChatTemplate};
//! let template = ChatTemplate::chatml();
//! let prompt = template.render(&[ChatMessage::new("user", "Hi!")], true)?;
//! assert_eq!(prompt, "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
//! # Ok::<(), moetile::Error>(())
//! ```

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, Value};

use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// ChatML, the format of Qwen and many others; used when the GGUF has no template.
pub const CHATML: &str = "{%- for message in messages %}\
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\
{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role` saying `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template with the variables it renders against.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    variables: BTreeMap<String, Value>,
    is_fallback: bool,
}

/// The name the template is registered under in its environment.
const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compiles `source`; `bos_token` and `eos_token` are the texts templates see under those
    /// names (empty when the vocabulary has none).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build();
        // The default delimiters always build.
        env.set_syntax(syntax.expect("Jinja2's default syntax"));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(NAME, without_generation_tags(source))
            .map_err(|e| Error::ChatTemplate(format!("the template does not parse: {e:#}")))?;
        let variables = BTreeMap::from([
            ("bos_token".to_owned(), Value::from(bos_token)),
            ("eos_token".to_owned(), Value::from(eos_token)),
        ]);
        Ok(Self {
            env,
            source: source.to_owned(),
            variables,
            is_fallback: false,
        })
    }

    /// The ChatML fallback.
    pub fn chatml() -> Self {
        // CHATML is a constant that the tests render: it always compiles.
        let mut template =
            Self::new(CHATML, "", "").expect("the built-in ChatML template compiles");
        template.is_fallback = true;
        template
    }

    /// The GGUF's template (`tokenizer.chat_template`), or ChatML when it has none; BOS and
    /// EOS texts come from `tokenizer`.
    pub fn from_gguf(gguf: &GgufFile, tokenizer: &Tokenizer) -> Result<Self> {
        let source = gguf.get_str_opt("tokenizer.chat_template")?;
        Self::for_tokenizer(source, tokenizer)
    }

    /// `source` if there is one, else ChatML, with the BOS and EOS texts of `tokenizer`: how a
    /// template given in place of the model's own (a server's `--chat-template-file`) is built.
    pub fn for_tokenizer(source: Option<&str>, tokenizer: &Tokenizer) -> Result<Self> {
        let text = |id: Option<u32>| id.and_then(|id| tokenizer.token_text(id)).unwrap_or("");
        Self::from_source_or_chatml(source, text(tokenizer.bos()), text(tokenizer.eos()))
    }

    /// `source` if there is one, else [`chatml`](Self::chatml).
    pub fn from_source_or_chatml(
        source: Option<&str>,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self> {
        match source {
            Some(source) => Self::new(source, bos_token, eos_token),
            None => Ok(Self::chatml()),
        }
    }

    /// Sets a variable templates may read, such as Qwen 3's `enable_thinking` (a flag) or
    /// gpt-oss's `reasoning_effort` (`"low"`, `"medium"`, `"high"`) and `builtin_tools` (a
    /// list).
    pub fn set_variable(&mut self, name: &str, value: impl serde::Serialize) {
        self.variables
            .insert(name.to_owned(), Value::from(minijinja::value::Serde(value)));
    }

    /// Fixes the time `strftime_now` formats (seconds since the Unix epoch, UTC) instead of
    /// the current one, so a template that prints the date renders reproducibly.
    pub fn set_clock(&mut self, unix_seconds: i64) -> Result<()> {
        let time = jiff::Timestamp::from_second(unix_seconds)
            .map_err(|e| Error::ChatTemplate(format!("clock {unix_seconds}: {e}")))?;
        self.env
            .add_function("strftime_now", move |format: String| {
                format_utc(time, &format).map(Value::from)
            });
        Ok(())
    }

    /// Renders the conversation; `add_generation_prompt` appends the opening of the
    /// assistant's turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| minijinja::context! { role => m.role.as_str(), content => m.content.as_str() })
            .collect();
        let mut context = self.variables.clone();
        context.insert("messages".to_owned(), Value::from(messages));
        self.render_context(context, add_generation_prompt)
    }

    /// Renders messages in OpenAI's JSON shape, each an object with `role` and `content` and,
    /// where the conversation has them, `tool_calls`, `tool_call_id` or `name`, which templates
    /// read as they are; `tools` (function definitions) is the templates' `tools` variable,
    /// for those that [offer tools](Self::offers_tools).
    pub fn render_json(
        &self,
        messages: &[serde_json::Value],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_json_with(messages, tools, &[], add_generation_prompt)
    }

    /// [`render_json`](Self::render_json) with `variables` set for this rendering only, over
    /// those of [`set_variable`](Self::set_variable): what a server's request chooses, such as
    /// gpt-oss's `reasoning_effort`, without changing the template other requests share.
    pub fn render_json_with(
        &self,
        messages: &[serde_json::Value],
        tools: Option<&[serde_json::Value]>,
        variables: &[(&str, serde_json::Value)],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let mut context = self.variables.clone();
        for (name, value) in variables {
            context.insert(
                (*name).to_owned(),
                Value::from(minijinja::value::Serde(value)),
            );
        }
        context.insert(
            "messages".to_owned(),
            Value::from(minijinja::value::Serde(messages)),
        );
        if let Some(tools) = tools {
            context.insert(
                "tools".to_owned(),
                Value::from(minijinja::value::Serde(tools)),
            );
        }
        self.render_context(context, add_generation_prompt)
    }

    /// Whether the template reads a `tools` variable (Qwen, Hermes, Llama 3.1 and others
    /// describe the functions a model may call with it); one that does not would drop them.
    pub fn offers_tools(&self) -> bool {
        self.source.contains("tools")
    }

    /// Renders against `context` (variables, messages, tools).
    fn render_context(
        &self,
        mut context: BTreeMap<String, Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        context.insert(
            "add_generation_prompt".to_owned(),
            Value::from(add_generation_prompt),
        );
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| Error::ChatTemplate(format!("{e:#}")))?;
        template.render(Value::from(context)).map_err(|e| {
            if e.kind() == ErrorKind::InvalidOperation
                && let Some(message) = e.detail().and_then(|d| d.strip_prefix(RAISED))
            {
                Error::ChatTemplate(format!("the template refused the conversation: {message}"))
            } else {
                Error::ChatTemplate(format!("rendering failed: {e:#}"))
            }
        })
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether this is the ChatML fallback rather than the model's own template.
    pub fn is_fallback(&self) -> bool {
        self.is_fallback
    }
}

/// Hugging Face's `{% generation %}...{% endgeneration %}` only marks the assistant's text for
/// training masks and renders its body unchanged: turned into `{% if true %}...{% endif %}`,
/// keeping the whitespace control of the original tags.
fn without_generation_tags(source: &str) -> String {
    if !source.contains("generation") {
        return source.to_owned();
    }
    let tag = |name: &str| {
        // Fixed patterns: they compile.
        fancy_regex::Regex::new(&format!(r"\{{%(-|\+)?\s*{name}\s*(-|\+)?%\}}"))
            .expect("tag pattern")
    };
    let source = tag("endgeneration").replace_all(source, "{%${1} endif ${2}%}");
    tag("generation")
        .replace_all(&source, "{%${1} if true ${2}%}")
        .into_owned()
}

/// `strftime_now(format)`: the current UTC date and time, which Llama 3, Mistral and gpt-oss
/// templates print into their system prompts.
fn strftime_now(format: String) -> std::result::Result<Value, minijinja::Error> {
    format_utc(jiff::Timestamp::now(), &format).map(Value::from)
}

/// Formats `time` in UTC with C's strftime directives (`%Y %m %d %e %b %B %a %A %H %M %S %j
/// %%`...), as [`strftime_now`] does.
fn format_utc(
    time: jiff::Timestamp,
    format: &str,
) -> std::result::Result<String, minijinja::Error> {
    jiff::fmt::strtime::format(format, time).map_err(|e| {
        minijinja::Error::new(ErrorKind::InvalidOperation, format!("strftime_now: {e}"))
    })
}

/// Marks errors raised by the template itself, to tell them from engine errors.
const RAISED: &str = "raise_exception: ";

/// `raise_exception(message)`: the templates' way to reject a conversation.
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{message}"),
    ))
}

/// `tojson`, as Hugging Face defines it: `json.dumps(value, ensure_ascii=False, indent=indent,
/// sort_keys=sort_keys)` with Python's default separators (`", "` and `": "`, or `","` and
/// `": "` when indented). `ensure_ascii` is accepted and ignored, as HF ignores it.
fn tojson(
    value: Value,
    indent: Option<usize>,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let indent = match indent {
        Some(width) => Some(width),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let failed = |e: serde_json::Error| {
        minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}"))
    };
    let json = if sort_keys {
        let mut json = serde_json::to_value(&value).map_err(failed)?;
        json.sort_all_objects();
        to_python_json(&json, indent)
    } else {
        to_python_json(&value, indent)
    };
    let json = json.map_err(failed)?;
    Ok(Value::from_safe_string(
        String::from_utf8(json).expect("serde_json writes UTF-8"),
    ))
}

/// `value` as Python's `json.dumps` lays it out: one line, or one item per line with `indent`
/// spaces per level.
fn to_python_json(
    value: &impl serde::Serialize,
    indent: Option<usize>,
) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::new();
    match indent {
        Some(width) => {
            let indent = " ".repeat(width);
            let style = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
            value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, style))?;
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out, OneLine,
        ))?,
    }
    Ok(out)
}

/// Python's one-line separators, `", "` between items and `": "` after keys (serde_json's
/// compact style has no spaces).
struct OneLine;

impl serde_json::ser::Formatter for OneLine {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.begin_array_value(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tools part of the Hermes / Qwen 2.5 templates: function definitions in a system
    /// turn, an assistant's calls as `<tool_call>` blocks, results as `<tool_response>`.
    const HERMES_TOOLS: &str = r#"{%- if tools %}
{{- '<|im_start|>system\n<tools>' }}
{%- for tool in tools %}{{- '\n' + tool | tojson }}{%- endfor %}
{{- '\n</tools><|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'assistant' and message.tool_calls %}
{{- '<|im_start|>assistant' }}
{%- for call in message.tool_calls %}
{{- '\n<tool_call>\n{"name": "' + call.function.name + '", "arguments": ' + call.function.arguments + '}\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- elif message.role == 'tool' %}
{{- '<|im_start|>user\n<tool_response>\n' + message.content + '\n</tool_response><|im_end|>\n' }}
{%- else %}
{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"#;

    #[test]
    fn json_messages_render_tools_calls_and_results() {
        let template = ChatTemplate::new(HERMES_TOOLS, "", "").unwrap();
        assert!(template.offers_tools());
        assert!(!ChatTemplate::chatml().offers_tools());
        let tools = [serde_json::json!({"type": "function", "function": {"name": "now"}})];
        let messages = [
            serde_json::json!({"role": "user", "content": "Time?"}),
            serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "now", "arguments": "{}"}}]}),
            serde_json::json!({"role": "tool", "tool_call_id": "call_1", "content": "noon"}),
        ];
        let prompt = template.render_json(&messages, Some(&tools), true).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"now\"}}\n</tools><|im_end|>\n\
             <|im_start|>user\nTime?<|im_end|>\n\
             <|im_start|>assistant\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call><|im_end|>\n\
             <|im_start|>user\n<tool_response>\nnoon\n</tool_response><|im_end|>\n\
             <|im_start|>assistant\n"
        );
        // Plain messages render as `render` renders them.
        let plain = [serde_json::json!({"role": "user", "content": "Hi"})];
        assert_eq!(
            template.render_json(&plain, None, true).unwrap(),
            template
                .render(&[ChatMessage::new("user", "Hi")], true)
                .unwrap()
        );
    }

    /// A template in the style of Qwen 2.5 / Qwen 3: default system prompt, `.startswith`,
    /// `.split`/`.rstrip` on the thinking block, reverse slicing, namespaces, `tojson`, and
    /// `enable_thinking`.
    const QWEN_STYLE: &str = r#"{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content.strip() + '<|im_end|>\n' }}
{%- else %}
    {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
{%- endif %}
{%- set ns = namespace(last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if message.role == "user" and not message.content.startswith('<tool_response>') %}
        {%- set ns.last_query_index = index %}
        {%- break %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == "user" or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- if '</think>' in content %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
        {{- '<|im_start|>assistant\n' + content + '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {{- '<|im_start|>user\n<tool_response>\n' + message.content + '\n</tool_response><|im_end|>\n' }}
    {%- elif message.role != "system" %}
        {{- raise_exception('unexpected role ' + message.role) }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"#;

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "  Be brief.\n"),
            ChatMessage::new("user", "What is 2+2?"),
            ChatMessage::new("assistant", "<think>\nadd\n</think>\n\n4"),
            ChatMessage::new("user", "And 3+3?"),
        ]
    }

    #[test]
    fn qwen_style_template_renders_like_jinja2() {
        let template = ChatTemplate::new(QWEN_STYLE, "", "<|im_end|>").unwrap();
        let prompt = template.render(&conversation(), true).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nBe brief.<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
             <|im_start|>assistant\n4<|im_end|>\n\
             <|im_start|>user\nAnd 3+3?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn default_system_prompt_and_thinking_switch() {
        let mut template = ChatTemplate::new(QWEN_STYLE, "", "").unwrap();
        let messages = [ChatMessage::new("user", "Hi")];
        let prompt = template.render(&messages, false).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
        template.set_variable("enable_thinking", false);
        let prompt = template.render(&messages, true).unwrap();
        assert!(
            prompt.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"),
            "{prompt:?}"
        );
    }

    /// A variable given for one rendering wins over the template's own and does not stay.
    #[test]
    fn variables_of_one_rendering_do_not_stay() {
        let mut template =
            ChatTemplate::new("{{ reasoning_effort | default('medium') }}", "", "").unwrap();
        let effort = |t: &ChatTemplate, vars: &[(&str, serde_json::Value)]| {
            t.render_json_with(&[], None, vars, false).unwrap()
        };
        assert_eq!(effort(&template, &[]), "medium");
        assert_eq!(
            effort(&template, &[("reasoning_effort", "high".into())]),
            "high"
        );
        template.set_variable("reasoning_effort", "low");
        assert_eq!(
            effort(&template, &[("reasoning_effort", "high".into())]),
            "high"
        );
        assert_eq!(effort(&template, &[]), "low");
    }

    #[test]
    fn raise_exception_reports_the_templates_message() {
        let template = ChatTemplate::new(QWEN_STYLE, "", "").unwrap();
        let err = template
            .render(&[ChatMessage::new("narrator", "x")], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unexpected role narrator"), "{err}");
    }

    #[test]
    fn chatml_fallback_matches_the_format() {
        let template = ChatTemplate::from_source_or_chatml(None, "", "").unwrap();
        assert!(template.is_fallback());
        let prompt = template.render(&conversation()[..2], true).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\n  Be brief.\n<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(
            !template
                .render(&conversation()[..1], false)
                .unwrap()
                .contains("assistant")
        );
    }

    #[test]
    fn bos_and_eos_are_variables() {
        let template = ChatTemplate::new(
            "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}",
            "<s>",
            "</s>",
        )
        .unwrap();
        assert_eq!(
            template
                .render(&[ChatMessage::new("user", "x")], false)
                .unwrap(),
            "<s>x</s>"
        );
    }

    #[test]
    fn tojson_writes_python_style_json_without_html_escapes() {
        let template = ChatTemplate::new(
            r#"{{ {"a": 1, "b": [true, none, 2.5], "s": "<é\"\n>"} | tojson }}|{{ [1, {"k": "v"}] | tojson(indent=2) }}|{{ {"b": 1, "a": 2} | tojson(sort_keys=true) }}|{{ "  x  " | trim }}"#,
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            template.render(&[], false).unwrap(),
            "{\"a\": 1, \"b\": [true, null, 2.5], \"s\": \"<é\\\"\\n>\"}|[\n  1,\n  {\n    \"k\": \"v\"\n  }\n]|{\"a\": 2, \"b\": 1}|x"
        );
    }

    #[test]
    fn dates_format_like_strftime() {
        let at = |seconds| jiff::Timestamp::from_second(seconds).unwrap();
        // 2024-07-26 13:05:09 UTC, a Friday; 2000-03-01 (after a leap day); the epoch.
        assert_eq!(
            format_utc(
                at(1_722_000_309),
                "%d %b %Y|%Y-%m-%d %H:%M:%S|%A %B %j|%a%e%%"
            )
            .unwrap(),
            "26 Jul 2024|2024-07-26 13:25:09|Friday July 208|Fri26%"
        );
        assert_eq!(
            format_utc(at(951_868_800), "%Y-%m-%d %j").unwrap(),
            "2000-03-01 061"
        );
        assert_eq!(format_utc(at(0), "%Y-%m-%d %a").unwrap(), "1970-01-01 Thu");
        assert_eq!(format_utc(at(86_400 * 4), "%e|%j").unwrap(), " 5|005");
        assert!(format_utc(at(0), "%J").is_err());
    }

    #[test]
    fn generation_tags_render_their_body() {
        let template = ChatTemplate::new(
            "{%- for m in messages %}[{% generation %}{{ m.content }}{%- endgeneration -%}\n]{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            template
                .render(&[ChatMessage::new("assistant", "a")], false)
                .unwrap(),
            "[a]"
        );
    }

    #[test]
    fn syntax_errors_are_reported_at_load() {
        let err = ChatTemplate::new("{% if %}", "", "")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("chat template: the template does not parse"),
            "{err}"
        );
    }
}
