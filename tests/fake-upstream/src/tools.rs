//! When the fake answers with a function call instead of text, and with
//! which arguments, for chat (`tools[].function`) and the Responses API
//! (`tools[]` flat) alike.
//!
//! The rule, deterministic so tests can drive a tool round trip:
//!
//! * `tool_choice` `"none"`: never;
//! * `tool_choice` naming a function, or `"required"`: that function (the
//!   first one for `"required"`);
//! * otherwise (`"auto"` or absent): when the last message is the user's and
//!   its text contains a function's name, the first such function. A tool
//!   result as the last message gets a text answer, which ends the loop.
//!
//! The arguments are a JSON object with each `required` parameter of the
//! function's schema set to `"fake-<name>"` (`{}` when none is required).
//! A call is sent as two argument deltas and counts 2 completion tokens.

use serde_json::{Map, Value};

/// Completion tokens of a function call answer.
pub const CALL_TOKENS: usize = 2;

/// A function call the fake answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub name: String,
    pub arguments: String,
}

impl Call {
    /// The arguments in the two pieces a stream sends.
    pub fn pieces(&self) -> (&str, &str) {
        let mid = self.arguments.len() / 2;
        let mid = (mid..=self.arguments.len())
            .find(|&i| self.arguments.is_char_boundary(i))
            .unwrap_or(self.arguments.len());
        self.arguments.split_at(mid)
    }
}

/// A function tool, whichever API it was declared in.
struct Function<'a> {
    name: &'a str,
    parameters: Option<&'a Value>,
}

/// `tools` of a chat request (`{type, function: {name, parameters}}`) or a
/// Responses request (`{type, name, parameters}`).
fn functions(tools: Option<&Value>) -> Vec<Function<'_>> {
    let Some(Value::Array(tools)) = tools else {
        return Vec::new();
    };
    tools
        .iter()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .filter_map(|t| {
            let f = t.get("function").unwrap_or(t);
            Some(Function {
                name: f.get("name")?.as_str()?,
                parameters: f.get("parameters"),
            })
        })
        .collect()
}

/// `last_user_text`: the text of the last message when it is the user's
/// (`None` when the conversation ends with a tool result or the assistant).
pub fn pick(
    tools: Option<&Value>,
    tool_choice: Option<&Value>,
    last_user_text: Option<&str>,
) -> Option<Call> {
    let functions = functions(tools);
    let chosen = match tool_choice {
        Some(Value::String(s)) if s == "none" => None,
        Some(Value::String(s)) if s == "required" => functions.first(),
        Some(Value::Object(o)) => {
            // chat: {type, function: {name}}; Responses: {type, name}.
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| o.get("name"))
                .and_then(Value::as_str);
            functions.iter().find(|f| Some(f.name) == name)
        }
        _ => last_user_text.and_then(|text| functions.iter().find(|f| text.contains(f.name))),
    }?;
    let mut args = Map::new();
    if let Some(Value::Array(required)) = chosen.parameters.and_then(|p| p.get("required")) {
        for name in required.iter().filter_map(Value::as_str) {
            args.insert(name.to_owned(), Value::String(format!("fake-{name}")));
        }
    }
    Some(Call {
        name: chosen.name.to_owned(),
        arguments: Value::Object(args).to_string(),
    })
}

/// The text of a message's `content`: a string, or its parts' `text`.
pub fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_by_name_in_the_last_user_message() {
        let chat = json!([{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]);
        let flat = json!([{"type":"function","name":"get_weather","parameters":{"type":"object","required":["city"]}}]);
        for tools in [&chat, &flat] {
            let call = pick(Some(tools), None, Some("please get_weather for Paris")).unwrap();
            assert_eq!(call.name, "get_weather");
            assert_eq!(call.arguments, r#"{"city":"fake-city"}"#);
            let (a, b) = call.pieces();
            assert_eq!(format!("{a}{b}"), call.arguments);
            assert_eq!(pick(Some(tools), None, Some("hello")), None);
            assert_eq!(pick(Some(tools), None, None), None);
            assert_eq!(
                pick(Some(tools), Some(&json!("none")), Some("get_weather")),
                None
            );
            assert!(pick(Some(tools), Some(&json!("required")), None).is_some());
        }
        let named = json!({"type":"function","name":"get_weather"});
        assert!(pick(Some(&flat), Some(&named), None).is_some());
    }
}
