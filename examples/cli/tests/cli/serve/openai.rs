//! `moetile serve` driven by a third-party client, async-openai, as an application would drive
//! it: the client's requests must be what the server takes, and the server's answers must
//! parse into the client's types. What it generates is what `moetile run` generates.

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionRequestAssistantMessageArgs,
    ChatCompletionRequestMessage, ChatCompletionRequestToolMessageArgs,
    ChatCompletionRequestUserMessage, ChatCompletionStreamOptions, ChatCompletionTool,
    CompletionFinishReason, CompletionUsage, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs, FinishReason, FunctionCall, FunctionObjectArgs,
};
use async_openai::types::completions::CreateCompletionRequestArgs;
use futures_util::StreamExt;

use super::{Server, TOOLS_TEMPLATE, run_greedy, run_report};

/// The key the server is started with.
const KEY: &str = "sk-test";

/// Stream options that ask for the closing chunk with `usage`.
fn with_usage() -> ChatCompletionStreamOptions {
    ChatCompletionStreamOptions {
        include_usage: Some(true),
        include_obfuscation: None,
    }
}

/// A greedy chat request of `messages`, at most `max` tokens.
fn chat(
    messages: Vec<ChatCompletionRequestMessage>,
    max: u32,
) -> anyhow::Result<CreateChatCompletionRequest> {
    Ok(CreateChatCompletionRequestArgs::default()
        .model("tiny")
        .messages(messages)
        .temperature(0.0)
        .max_completion_tokens(max)
        .build()?)
}

/// The API error a request failed with.
fn api_error<T: std::fmt::Debug>(
    result: Result<T, OpenAIError>,
) -> (u16, async_openai::error::ApiError) {
    match result {
        Err(OpenAIError::ApiError(e)) => (e.status_code.as_u16(), e.api_error),
        other => panic!("not an API error: {other:?}"),
    }
}

#[test]
fn async_openai_gets_what_run_generates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let template = dir.path().join("tools.jinja");
    std::fs::write(&template, TOOLS_TEMPLATE)?;
    let server = Server::start(&[
        "--api-key",
        KEY,
        "--chat-template-file",
        template.to_str().unwrap(),
    ]);
    let config = OpenAIConfig::new()
        .with_api_base(format!("{}/v1", server.base))
        .with_api_key(KEY);
    let client = Client::with_config(config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let models = client.models().list().await?;
        assert_eq!(models.data.len(), 1);
        assert_eq!(models.data[0].id, "tiny");

        // Chat, whole: the template renders ChatML without tools.
        let chatml = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
        let (text, tokens) = run_greedy(chatml, 6);
        let finish = if tokens == 6 {
            FinishReason::Length
        } else {
            FinishReason::Stop
        };
        let hi: Vec<ChatCompletionRequestMessage> =
            vec![ChatCompletionRequestUserMessage::from("Hi").into()];
        let request = chat(hi.clone(), 6)?;
        let answer = client.chat().create(request.clone()).await?;
        assert_eq!(answer.object, "chat.completion");
        let choice = &answer.choices[0];
        assert_eq!(choice.message.content.as_deref(), Some(text.as_str()));
        assert_eq!(choice.finish_reason, Some(finish));
        let usage = answer.usage.expect("usage");
        assert_eq!(usage.completion_tokens as usize, tokens);
        assert_eq!(
            usage.total_tokens,
            usage.prompt_tokens + usage.completion_tokens
        );

        // Chat, streamed: the same text in deltas, then the usage of the same request.
        let mut streamed = request;
        streamed.stream_options = Some(with_usage());
        let mut stream = client.chat().create_stream(streamed).await?;
        let (mut pieces, mut finishes, mut last_usage) = (String::new(), Vec::new(), None);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            for choice in &chunk.choices {
                pieces.push_str(choice.delta.content.as_deref().unwrap_or(""));
                finishes.extend(choice.finish_reason);
            }
            last_usage = chunk.usage;
        }
        assert_eq!(pieces, text);
        assert_eq!(finishes, [finish]);
        let streamed_usage: CompletionUsage = last_usage.expect("a closing usage chunk");
        assert_eq!(streamed_usage.prompt_tokens, usage.prompt_tokens);
        assert_eq!(streamed_usage.completion_tokens, usage.completion_tokens);

        // Completions, sampled with a seed and streamed: run's tokens with run's samplers
        // (OpenAI's request has no top-k or min-p: the server's are off, and so are run's).
        let prompt = "Once upon a time";
        let sampled = run_report(&[
            "--cpu", "-p", prompt, "-n", "8", "--seed", "7", "--temp", "0.9", "--top-p", "0.9",
            "--top-k", "0", "--min-p", "0",
        ]);
        let request = CreateCompletionRequestArgs::default()
            .model("tiny")
            .prompt(prompt)
            .max_tokens(8u32)
            .temperature(0.9)
            .top_p(0.9)
            .seed(7)
            .stream_options(with_usage())
            .build()?;
        let mut stream = client.completions().create_stream(request.clone()).await?;
        let (mut pieces, mut last_usage) = (String::new(), None);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            pieces.extend(chunk.choices.iter().map(|c| c.text.as_str()));
            last_usage = chunk.usage;
        }
        assert_eq!(pieces, sampled["text"].as_str().unwrap());
        let tokens = sampled["token_ids"].as_array().unwrap().len();
        let usage = last_usage.expect("a closing usage chunk");
        assert_eq!(usage.completion_tokens as usize, tokens);
        assert_eq!(usage.prompt_tokens, 10);
        // Whole: the same.
        let mut whole = request;
        whole.stream_options = None;
        let answer = client.completions().create(whole).await?;
        assert_eq!(answer.choices[0].text, pieces);
        let finish = if tokens == 8 {
            CompletionFinishReason::Length
        } else {
            CompletionFinishReason::Stop
        };
        assert_eq!(answer.choices[0].finish_reason, Some(finish));

        // Tools: a conversation with a call and its result, the tools offered through the
        // template (the random model writes no call of its own: `tool_calls` answers are
        // checked against these types in the server's unit tests).
        let now = ChatCompletionTool {
            function: FunctionObjectArgs::default()
                .name("now")
                .description("The time of day")
                .parameters(serde_json::json!({"type": "object", "properties": {}}))
                .build()?,
        };
        let call = ChatCompletionMessageToolCall {
            id: "call-0".into(),
            function: FunctionCall {
                name: "now".into(),
                arguments: "{}".into(),
            },
        };
        let conversation: Vec<ChatCompletionRequestMessage> = vec![
            ChatCompletionRequestUserMessage::from("Time?").into(),
            ChatCompletionRequestAssistantMessageArgs::default()
                .tool_calls(vec![call.into()])
                .build()?
                .into(),
            ChatCompletionRequestToolMessageArgs::default()
                .tool_call_id("call-0")
                .content("noon")
                .build()?
                .into(),
        ];
        let plain = client.chat().create(chat(conversation.clone(), 2)?).await?;
        let mut offered = chat(conversation, 2)?;
        offered.tools = Some(now.into());
        let answer = client.chat().create(offered).await?;
        let prompt_tokens = |usage: Option<CompletionUsage>| usage.expect("usage").prompt_tokens;
        assert!(prompt_tokens(answer.usage) > prompt_tokens(plain.usage));
        assert_eq!(
            answer.choices[0].message.role,
            async_openai::types::chat::Role::Assistant
        );

        // Errors come back as the client's API errors.
        let mut two = chat(hi.clone(), 2)?;
        two.n = Some(2);
        let (status, error) = api_error(client.chat().create(two).await);
        assert_eq!(status, 400);
        assert_eq!(error.param.as_deref(), Some("n"));
        assert_eq!(error.r#type.as_deref(), Some("invalid_request_error"));
        let mut other = chat(hi.clone(), 2)?;
        other.model = "gpt-9".into();
        let (status, error) = api_error(client.chat().create(other).await);
        assert_eq!(status, 404);
        assert_eq!(error.code.as_deref(), Some("model_not_found"));
        let keyless = Client::with_config(
            OpenAIConfig::new()
                .with_api_base(format!("{}/v1", server.base))
                .with_api_key("sk-wrong"),
        );
        let (status, error) = api_error(keyless.models().list().await);
        assert_eq!(status, 401);
        assert_eq!(error.code.as_deref(), Some("invalid_api_key"));
        anyhow::Ok(())
    })?;
    // Still serving.
    assert_eq!(server.get("/health").status, 200);
    Ok(())
}
