//! Local token counting, used only when an upstream sends no `usage`
//! (some OpenAI-compatible servers ignore `stream_options.include_usage`).

use std::borrow::Cow;
use std::sync::OnceLock;

use serde::Deserialize;
use tiktoken_rs::CoreBPE;

use super::counter::ToolCallView;
use crate::json::JsonStr;

static O200K: OnceLock<CoreBPE> = OnceLock::new();
static CL100K: OnceLock<CoreBPE> = OnceLock::new();

// The encoders are built on first use only (a few hundred ms, off the async
// threads): each costs tens of MB (o200k took a gateway from 37 to 95 MB RSS),
// which gateways whose upstreams send usage never need.
fn encoder_for(model: &str) -> &'static CoreBPE {
    // Older OpenAI families use cl100k; everything newer (and unknown models) o200k.
    let legacy = model.starts_with("gpt-3.5")
        || (model.starts_with("gpt-4")
            && !model.starts_with("gpt-4o")
            && !model.starts_with("gpt-4.1"))
        || model.starts_with("text-embedding");
    if legacy {
        CL100K.get_or_init(|| {
            tiktoken_rs::cl100k_base().expect("cl100k tables ship with tiktoken-rs")
        })
    } else {
        O200K.get_or_init(|| tiktoken_rs::o200k_base().expect("o200k tables ship with tiktoken-rs"))
    }
}

pub fn count_text(model: &str, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    encoder_for(model).encode_ordinary(text).len() as u64
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    Strings(Vec<Cow<'a, str>>),
    Parts(Vec<Part<'a>>),
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<JsonStr<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    /// Earlier tool calls in the conversation are prompt tokens too.
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallView<'a>>>,
}

#[derive(Deserialize)]
struct PromptView<'a> {
    #[serde(borrow, default)]
    messages: Option<Vec<Message<'a>>>,
    #[serde(borrow, default)]
    prompt: Option<Content<'a>>,
    #[serde(borrow, default)]
    input: Option<Content<'a>>,
    /// Tool (and legacy function) definitions reach the model as text: a
    /// request could otherwise carry thousands of prompt tokens unbilled.
    #[serde(default)]
    tools: Option<serde_json::Value>,
    #[serde(default)]
    functions: Option<serde_json::Value>,
}

fn content_tokens(model: &str, c: &Content<'_>) -> u64 {
    match c {
        Content::Text(t) => count_text(model, t),
        Content::Strings(items) => items.iter().map(|t| count_text(model, t)).sum(),
        Content::Parts(parts) => parts
            .iter()
            .filter_map(|p| p.text.as_deref())
            .map(|t| count_text(model, t))
            .sum(),
        Content::Other(_) => 0,
    }
}

/// Prompt tokens of a chat, completion or embeddings request body, counted the way
/// OpenAI's cookbook does for chat (3 tokens per message plus 3 for the reply priming).
pub fn count_prompt(model: &str, body: &[u8]) -> u64 {
    let Ok(view) = serde_json::from_slice::<PromptView<'_>>(body) else {
        return 0;
    };
    let mut total = 0;
    if let Some(messages) = &view.messages {
        total += 3;
        for m in messages {
            total += 3 + m.content.as_ref().map_or(0, |c| content_tokens(model, c));
            let calls = m
                .tool_calls
                .iter()
                .flatten()
                .filter_map(|c| c.function.as_ref());
            for f in calls {
                for t in [&f.name, &f.arguments].into_iter().flatten() {
                    total += count_text(model, t);
                }
            }
        }
    }
    for c in [&view.prompt, &view.input].into_iter().flatten() {
        total += content_tokens(model, c);
    }
    for defs in [&view.tools, &view.functions].into_iter().flatten() {
        total += count_text(model, &defs.to_string());
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_text_and_prompts() {
        assert_eq!(count_text("gpt-4o-mini", ""), 0);
        let hello = count_text("gpt-4o-mini", "Hello world");
        assert_eq!(hello, 2);
        let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello world"},{"role":"user","content":[{"type":"text","text":"Hello world"}]}]}"#;
        assert_eq!(count_prompt("gpt-4o-mini", body), 3 + (3 + 2) * 2);
        let body = br#"{"model":"text-embedding-3-small","input":["Hello world","Hello world"]}"#;
        assert_eq!(count_prompt("text-embedding-3-small", body), 4);
        let body = br#"{"model":"gpt-3.5-turbo-instruct","prompt":"Hello world"}"#;
        assert_eq!(count_prompt("gpt-3.5-turbo-instruct", body), 2);
    }

    #[test]
    fn tool_definitions_and_earlier_tool_calls_count_as_prompt() {
        let plain =
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello world"}]}"#;
        let base = count_prompt("gpt-4o-mini", plain);
        let tools = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello world"}],"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather for a city","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}"#;
        assert!(count_prompt("gpt-4o-mini", tools) > base + 15);
        let history = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello world"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}]}"#;
        let expected = base
            + 3
            + count_text("gpt-4o-mini", "get_weather")
            + count_text("gpt-4o-mini", r#"{"city":"Paris"}"#);
        assert_eq!(count_prompt("gpt-4o-mini", history), expected);
    }
}
