//! What a client asked for: the endpoint from method and path, and from the JSON
//! body the model and whether it streams. The body is parsed once, borrowing from
//! the bytes; it is re-serialized only in the rare case that `stream_options` must
//! be changed in place.

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::error::GatewayError;
use crate::json::JsonStr;
use crate::protocols::Protocol;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    ListModels,
    GetModel(String),
    ImagesGenerations,
    AudioSpeech,
    AudioTranscriptions,
    AudioTranslations,
    Moderations,
    /// The Cohere/Jina shape LiteLLM serves: `model`, `query`, `documents`.
    Rerank,
    /// OpenAI's Responses API.
    Responses,
    /// Anthropic's Messages API.
    Messages,
    /// Anthropic's token count for a Messages request (free, not billed).
    MessagesCountTokens,
}

impl Endpoint {
    pub fn route(method: &str, path: &str) -> Result<Self, GatewayError> {
        let path = path.trim_end_matches('/');
        let (endpoint, allowed) = match path {
            "/v1/chat/completions" => (Self::ChatCompletions, "POST"),
            "/v1/completions" => (Self::Completions, "POST"),
            "/v1/embeddings" => (Self::Embeddings, "POST"),
            "/v1/models" => (Self::ListModels, "GET"),
            "/v1/images/generations" => (Self::ImagesGenerations, "POST"),
            "/v1/audio/speech" => (Self::AudioSpeech, "POST"),
            "/v1/audio/transcriptions" => (Self::AudioTranscriptions, "POST"),
            "/v1/audio/translations" => (Self::AudioTranslations, "POST"),
            "/v1/moderations" => (Self::Moderations, "POST"),
            "/v1/rerank" => (Self::Rerank, "POST"),
            "/v1/responses" => (Self::Responses, "POST"),
            "/v1/messages" => (Self::Messages, "POST"),
            "/v1/messages/count_tokens" => (Self::MessagesCountTokens, "POST"),
            _ => match path.strip_prefix("/v1/models/") {
                Some(id) if !id.is_empty() => (Self::GetModel(percent_decode(id)), "GET"),
                _ => {
                    return Err(GatewayError::UnknownUrl {
                        method: method.into(),
                        path: path.into(),
                    })
                }
            },
        };
        if method != allowed {
            return Err(GatewayError::MethodNotAllowed {
                method: method.into(),
                path: path.into(),
            });
        }
        Ok(endpoint)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat.completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::ListModels => "models.list",
            Self::GetModel(_) => "models.retrieve",
            Self::ImagesGenerations => "images.generations",
            Self::AudioSpeech => "audio.speech",
            Self::AudioTranscriptions => "audio.transcriptions",
            Self::AudioTranslations => "audio.translations",
            Self::Moderations => "moderations",
            Self::Rerank => "rerank",
            Self::Responses => "responses",
            Self::Messages => "messages",
            Self::MessagesCountTokens => "messages.count_tokens",
        }
    }

    /// The path it is served on (`GetModel`: the list's).
    pub fn path(&self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::ListModels | Self::GetModel(_) => "/v1/models",
            Self::ImagesGenerations => "/v1/images/generations",
            Self::AudioSpeech => "/v1/audio/speech",
            Self::AudioTranscriptions => "/v1/audio/transcriptions",
            Self::AudioTranslations => "/v1/audio/translations",
            Self::Moderations => "/v1/moderations",
            Self::Rerank => "/v1/rerank",
            Self::Responses => "/v1/responses",
            Self::Messages => "/v1/messages",
            Self::MessagesCountTokens => "/v1/messages/count_tokens",
        }
    }

    /// The protocol of the endpoint: its error shape, how clients send their
    /// key, where usage is in its answers.
    pub fn protocol(&self) -> Protocol {
        match self {
            Self::Messages | Self::MessagesCountTokens => Protocol::Anthropic,
            _ => Protocol::OpenAi,
        }
    }

    /// Endpoints whose request carries a body naming a model.
    pub fn has_body(&self) -> bool {
        !matches!(self, Self::ListModels | Self::GetModel(_))
    }

    /// Endpoints whose body is `multipart/form-data` (see `form`), not JSON.
    pub fn is_form(&self) -> bool {
        matches!(self, Self::AudioTranscriptions | Self::AudioTranslations)
    }

    /// Endpoints billed in text tokens: the tokenizer counts an answer without
    /// `usage`, and admission estimates tokens from the body. The others
    /// (images, audio, moderations, rerank) count as requests, with the tokens
    /// only of an answer that reports them: a local count of audio bytes or an
    /// image prompt would be a number no provider bills.
    pub fn counts_text_tokens(&self) -> bool {
        matches!(
            self,
            Self::ChatCompletions
                | Self::Completions
                | Self::Embeddings
                | Self::Responses
                | Self::Messages
        )
    }

    fn can_stream(&self) -> bool {
        matches!(
            self,
            Self::ChatCompletions | Self::Completions | Self::Responses | Self::Messages
        )
    }

    /// Whether the gateway asks for usage in the stream itself
    /// (`stream_options.include_usage`): only Chat Completions and legacy
    /// completions need it; Messages and Responses streams always report it.
    fn asks_for_stream_usage(&self) -> bool {
        matches!(self, Self::ChatCompletions | Self::Completions)
    }
}

/// Model ids may contain `/` (e.g. `openai/gpt-4o`), which clients percent-encode.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[derive(Debug)]
pub struct Inspected {
    pub model: String,
    pub stream: bool,
    /// The gateway added `stream_options.include_usage`; the client must not see its chunk.
    pub injected_usage: bool,
    /// The completion budget the client set (`max_tokens` or `max_completion_tokens`).
    pub max_tokens: Option<u64>,
    /// The body to send upstream (the client's, unless usage had to be requested).
    pub body: Bytes,
    /// Whether the body has a field of `ROUTING_FIELDS`.
    pub routing: bool,
    /// A form's `model` value in the body (JSON bodies are renamed by parsing).
    pub form_model: Option<std::ops::Range<usize>>,
}

/// Reads a form body (see `form`): a routing field in a form is refused
/// rather than removed unless the pool allows it (`allow_routing_fields`),
/// which admission decides.
pub fn inspect_form(
    content_type: Option<&str>,
    body: Bytes,
) -> Result<(Inspected, Option<&'static str>), GatewayError> {
    let form = super::form::read(content_type, &body)?;
    Ok((
        Inspected {
            model: form.model,
            stream: form.stream,
            injected_usage: false,
            max_tokens: None,
            body,
            routing: form.routing_field.is_some(),
            form_model: Some(form.model_span),
        },
        form.routing_field,
    ))
}

/// Request fields with which OpenRouter (`models`, `route`), LiteLLM
/// (`fallbacks`, `context_window_fallbacks`, `content_policy_fallbacks`,
/// `user_config`, `mock_response`) and client-side credentials (`api_base`,
/// `base_url`, `api_key`, `api_version`) make a backend serve another model or
/// bill another account than the one the request names: the gateway allows
/// and prices a request by its `model`, so they are removed unless the pool
/// allows them.
pub const ROUTING_FIELDS: [&str; 11] = [
    "models",
    "route",
    "fallbacks",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "user_config",
    "mock_response",
    "api_base",
    "base_url",
    "api_key",
    "api_version",
];

/// The body without `ROUTING_FIELDS` (re-serialized; only bodies that have
/// one). A body the rewrite cannot represent (a number beyond f64, such as
/// `1e400`) is refused: passing it on would keep the fields.
pub fn strip_routing_fields(body: &Bytes) -> Result<Bytes, GatewayError> {
    let mut fields = match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(fields)) => fields,
        Ok(_) => return Err(GatewayError::invalid("The body must be a JSON object.", None)),
        Err(e) => {
            return Err(GatewayError::invalid(
                format!("This request has a field the gateway removes before it goes upstream (one of {}), and the rest of the body cannot be rewritten: {e}.", ROUTING_FIELDS.join(", ")),
                None,
            ))
        }
    };
    for name in ROUTING_FIELDS {
        fields.remove(name);
    }
    Ok(Bytes::from(
        serde_json::to_vec(&fields).expect("a JSON object serializes"),
    ))
}

#[derive(Deserialize)]
struct RequestView<'a> {
    #[serde(borrow, default)]
    model: Option<JsonStr<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    /// `Some(Value::Null)` for an explicit `null`: it is rewritten like a
    /// missing `include_usage` (a spliced second key would lose to it in the
    /// upstreams where the last duplicate wins).
    #[serde(default, deserialize_with = "present")]
    stream_options: Option<serde_json::Value>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    /// The Responses API's name for it.
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    models: Option<IgnoredAny>,
    #[serde(default)]
    route: Option<IgnoredAny>,
    #[serde(default)]
    fallbacks: Option<IgnoredAny>,
    #[serde(default)]
    context_window_fallbacks: Option<IgnoredAny>,
    #[serde(default)]
    content_policy_fallbacks: Option<IgnoredAny>,
    #[serde(default)]
    user_config: Option<IgnoredAny>,
    #[serde(default)]
    mock_response: Option<IgnoredAny>,
    #[serde(default)]
    api_base: Option<IgnoredAny>,
    #[serde(default)]
    base_url: Option<IgnoredAny>,
    #[serde(default)]
    api_key: Option<IgnoredAny>,
    #[serde(default)]
    api_version: Option<IgnoredAny>,
}

impl RequestView<'_> {
    fn has_routing_field(&self) -> bool {
        [
            &self.models,
            &self.route,
            &self.fallbacks,
            &self.context_window_fallbacks,
            &self.content_policy_fallbacks,
            &self.user_config,
            &self.mock_response,
            &self.api_base,
            &self.base_url,
            &self.api_key,
            &self.api_version,
        ]
        .iter()
        .any(|f| f.is_some())
    }
}

/// A field that is there, even as `null` (`#[serde(default)]` covers absence).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

pub fn inspect(endpoint: &Endpoint, body: Bytes) -> Result<Inspected, GatewayError> {
    let bad_json = |detail: String| {
        GatewayError::invalid(
            format!("We could not parse the JSON body of your request: {detail}. The body must be a JSON object."),
            None,
        )
    };
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(bad_json(if body.is_empty() {
            "the body is empty".into()
        } else {
            "it is not a JSON object".into()
        }));
    }
    // JSON is UTF-8 (RFC 8259); serde_json skips the fields the gateway does
    // not read without checking their bytes, so a body with invalid UTF-8 in
    // one of them would otherwise go upstream (found by fuzz/request_inspect).
    let text = std::str::from_utf8(&body).map_err(|e| {
        bad_json(format!(
            "it is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    let view: RequestView<'_> = serde_json::from_str(text).map_err(|e| bad_json(e.to_string()))?;
    let routing = view.has_routing_field();
    let model = match view.model {
        Some(m) if !m.trim().is_empty() => m.into_owned(),
        _ => {
            return Err(GatewayError::invalid(
                "you must provide a model parameter",
                Some("model"),
            ))
        }
    };
    let stream = view.stream.unwrap_or(false) && endpoint.can_stream();
    let max_tokens = view
        .max_completion_tokens
        .or(view.max_tokens)
        .or(view.max_output_tokens);
    let client_wants_usage = match &view.stream_options {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Object(o)) => o
            .get("include_usage")
            .is_some_and(|v| v.as_bool() == Some(true)),
        Some(_) => {
            return Err(GatewayError::invalid(
                "Invalid type for 'stream_options': expected an object.",
                Some("stream_options"),
            ))
        }
    };
    if !stream || client_wants_usage || !endpoint.asks_for_stream_usage() {
        return Ok(Inspected {
            model,
            stream,
            injected_usage: false,
            max_tokens,
            body,
            routing,
            form_model: None,
        });
    }
    let body = if view.stream_options.is_none() {
        // Splice the option in right after the opening brace: no re-serialization,
        // so the rest of the client's body reaches the upstream byte for byte.
        let at = body.iter().position(|&b| b == b'{').expect("checked above") + 1;
        let insert: &[u8] = b"\"stream_options\":{\"include_usage\":true},";
        let rest_is_empty = body[at..]
            .iter()
            .all(|b| b.is_ascii_whitespace() || *b == b'}');
        let insert = if rest_is_empty {
            &insert[..insert.len() - 1]
        } else {
            insert
        };
        let mut out = Vec::with_capacity(body.len() + insert.len());
        out.extend_from_slice(&body[..at]);
        out.extend_from_slice(insert);
        out.extend_from_slice(&body[at..]);
        Bytes::from(out)
    } else {
        let mut value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| bad_json(e.to_string()))?;
        // An object or null (anything else was refused above).
        value["stream_options"] = match value["stream_options"].take() {
            serde_json::Value::Object(mut o) => {
                o.insert("include_usage".into(), serde_json::Value::Bool(true));
                serde_json::Value::Object(o)
            }
            _ => serde_json::json!({ "include_usage": true }),
        };
        Bytes::from(serde_json::to_vec(&value).expect("a JSON value serializes"))
    };
    Ok(Inspected {
        model,
        stream,
        injected_usage: true,
        max_tokens,
        body,
        routing,
        form_model: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> serde_json::Value {
        serde_json::from_str(body).unwrap()
    }

    /// fuzz/request_inspect's crash: invalid UTF-8 inside a string the gateway
    /// does not read was accepted, and a streaming request's rewritten body
    /// (usage asked for) was not JSON.
    #[test]
    fn a_body_that_is_not_utf8_is_refused() {
        let body: &[u8] =
            b"{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"u\xc5s\"}],\"stream\":true}";
        let e = inspect(&Endpoint::ChatCompletions, Bytes::from_static(body)).unwrap_err();
        assert!(e.to_string().contains("not valid UTF-8"), "{e}");
    }

    /// `RequestView` names each routing field once more, to see it without
    /// parsing the body twice: the two lists must not drift apart.
    #[test]
    fn every_routing_field_is_seen() {
        for name in ROUTING_FIELDS {
            let body = format!(r#"{{"model":"m","{name}":["x"]}}"#);
            let seen = inspect(&Endpoint::ChatCompletions, Bytes::from(body)).unwrap();
            assert!(seen.routing, "{name}");
        }
        let plain = inspect(&Endpoint::ChatCompletions, Bytes::from(r#"{"model":"m"}"#)).unwrap();
        assert!(!plain.routing);
    }

    #[test]
    fn routing_fields_are_stripped_or_the_request_refused() {
        let body = r#"{"model":"m","models":["x"],"fallbacks":["y"],"t":0.5}"#;
        let seen = inspect(&Endpoint::ChatCompletions, Bytes::from(body)).unwrap();
        assert!(seen.routing);
        let stripped = strip_routing_fields(&seen.body).unwrap();
        assert_eq!(
            parse(std::str::from_utf8(&stripped).unwrap()),
            parse(r#"{"model":"m","t":0.5}"#)
        );
        // A number the rewrite cannot hold must not carry the fields through.
        let body = r#"{"model":"m","models":["x"],"t":1e400}"#;
        let seen = inspect(&Endpoint::ChatCompletions, Bytes::from(body)).unwrap();
        let e = strip_routing_fields(&seen.body).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("models"), "{e}");
    }

    /// fuzz/request_inspect's crash: `stream_options` as an array panicked
    /// while the usage option was set in it.
    #[test]
    fn stream_options_that_is_not_an_object_is_refused() {
        for options in ["[true]", "[]", "1", "\"x\""] {
            let body = format!(r#"{{"model":"m","stream":true,"stream_options":{options}}}"#);
            let e = inspect(&Endpoint::ChatCompletions, Bytes::from(body)).unwrap_err();
            assert_eq!(e.status(), 400, "{options}");
            assert_eq!(e.facts().param, Some("stream_options"));
        }
    }

    /// Usage dodging: `"stream_options": null` got a second `stream_options`
    /// spliced in, and upstreams where the last duplicate wins kept `null`.
    #[test]
    fn stream_options_null_is_replaced_not_duplicated() {
        let body = Bytes::from_static(br#"{"model":"m","stream":true,"stream_options":null}"#);
        let i = inspect(&Endpoint::ChatCompletions, body).unwrap();
        assert!(i.injected_usage);
        let text = std::str::from_utf8(&i.body).unwrap();
        assert_eq!(text.matches("stream_options").count(), 1, "{text}");
        assert_eq!(parse(text)["stream_options"]["include_usage"], true);
    }

    #[test]
    fn routes() {
        assert_eq!(
            Endpoint::route("POST", "/v1/chat/completions").unwrap(),
            Endpoint::ChatCompletions
        );
        assert_eq!(
            Endpoint::route("GET", "/v1/models/openai%2Fgpt-4o").unwrap(),
            Endpoint::GetModel("openai/gpt-4o".into())
        );
        assert_eq!(
            Endpoint::route("GET", "/v1/chat/completions")
                .unwrap_err()
                .status(),
            405
        );
        assert_eq!(
            Endpoint::route("POST", "/v1/nope").unwrap_err().status(),
            404
        );
        for (path, name) in [
            ("/v1/images/generations", "images.generations"),
            ("/v1/audio/speech", "audio.speech"),
            ("/v1/audio/transcriptions/", "audio.transcriptions"),
            ("/v1/audio/translations", "audio.translations"),
            ("/v1/moderations", "moderations"),
            ("/v1/rerank", "rerank"),
        ] {
            let e = Endpoint::route("POST", path).unwrap();
            assert_eq!(e.as_str(), name);
            assert!(e.has_body() && !e.counts_text_tokens());
            assert_eq!(Endpoint::route("GET", path).unwrap_err().status(), 405);
        }
    }

    #[test]
    fn non_stream_body_is_untouched() {
        let body = Bytes::from_static(br#"{"model":"m","messages":[]}"#);
        let i = inspect(&Endpoint::ChatCompletions, body.clone()).unwrap();
        assert_eq!(
            (i.model.as_str(), i.stream, i.injected_usage),
            ("m", false, false)
        );
        assert_eq!(i.body, body);
    }

    #[test]
    fn stream_gets_usage_spliced_in() {
        let body = Bytes::from_static(br#" {"model":"m","stream":true,"messages":[]}"#);
        let i = inspect(&Endpoint::ChatCompletions, body).unwrap();
        assert!(i.stream && i.injected_usage);
        let v = parse(std::str::from_utf8(&i.body).unwrap());
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "m");
    }

    #[test]
    fn stream_options_without_usage_is_rewritten() {
        let body = Bytes::from_static(br#"{"model":"m","stream":true,"stream_options":{}}"#);
        let i = inspect(&Endpoint::ChatCompletions, body).unwrap();
        assert!(i.injected_usage);
        assert_eq!(
            parse(std::str::from_utf8(&i.body).unwrap())["stream_options"]["include_usage"],
            true
        );
    }

    #[test]
    fn client_asking_for_usage_keeps_it() {
        let body = Bytes::from_static(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        );
        let i = inspect(&Endpoint::ChatCompletions, body.clone()).unwrap();
        assert!(!i.injected_usage);
        assert_eq!(i.body, body);
    }

    #[test]
    fn bad_bodies() {
        for (body, param) in [
            ("", None),
            ("[1]", None),
            ("{not json", None),
            (r#"{"messages":[]}"#, Some("model")),
            (r#"{"model":""}"#, Some("model")),
            (r#"{"model":5}"#, None),
        ] {
            let e = inspect(&Endpoint::ChatCompletions, Bytes::from(body)).unwrap_err();
            assert_eq!(e.status(), 400, "{body}");
            match e {
                GatewayError::InvalidRequest { param: p, .. } => assert_eq!(p, param, "{body}"),
                other => panic!("{body}: expected an invalid request, got {other:?}"),
            }
        }
    }
}
