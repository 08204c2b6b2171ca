//! How a backend wants its requests: which header carries the key, extra
//! headers and query parameters, and its own names for the models. Azure
//! OpenAI takes `api-key`, an `api-version` query parameter and a deployment
//! in the path; Anthropic takes `x-api-key` and `anthropic-version`; an
//! OpenAI-compatible server takes `Authorization: Bearer`.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::checks::env_value;

/// The header that carries the backend's key (`api_key_env`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendAuth {
    /// `Authorization: Bearer KEY` (OpenAI and the servers that copy it).
    #[default]
    Bearer,
    /// `api-key: KEY` (Azure OpenAI).
    ApiKey,
    /// `x-api-key: KEY` (Anthropic).
    XApiKey,
    /// No key header.
    None,
}

impl BackendAuth {
    /// The header this mode sets, if any.
    pub fn header_name(self) -> Option<&'static str> {
        match self {
            Self::Bearer => Some("authorization"),
            Self::ApiKey => Some("api-key"),
            Self::XApiKey => Some("x-api-key"),
            Self::None => None,
        }
    }
}

/// A static header value: literal in the file, or `{env: NAME}` for a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    Literal(String),
    /// Only the variable's name is kept here, so the config's Debug output
    /// never holds the value; it is read when the pools are built.
    Env(String),
}

impl HeaderSource {
    /// The value (from the environment for `Env`).
    pub fn value(&self) -> Option<String> {
        match self {
            Self::Literal(v) => Some(v.clone()),
            Self::Env(var) => env_value(var),
        }
    }
}

/// Headers the gateway owns on the way upstream: framing, the connection,
/// the host, and the request id (`pools[].request_id_header`).
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "accept-encoding",
];

/// `headers:` of a backend: names lowercased and checked, values literal or
/// `{env: NAME}` (the variable must be set), each a valid header value.
pub fn static_headers<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, HeaderSource>, D::Error> {
    let raw = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        let header = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| de::Error::custom(format!("`{name}` is not a header name")))?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(de::Error::custom(format!(
                "`{header}` is set by the gateway and cannot be configured"
            )));
        }
        let source = match value {
            serde_json::Value::String(v) => HeaderSource::Literal(v),
            serde_json::Value::Object(m) if m.len() == 1 => match m.get("env") {
                Some(serde_json::Value::String(var)) => HeaderSource::Env(var.clone()),
                _ => {
                    return Err(de::Error::custom(format!(
                        "header `{header}` must be a string or {{env: NAME}}"
                    )))
                }
            },
            _ => {
                return Err(de::Error::custom(format!(
                    "header `{header}` must be a string (quote numbers and dates) or {{env: NAME}}"
                )))
            }
        };
        let Some(value) = source.value() else {
            let HeaderSource::Env(var) = &source else {
                unreachable!("a literal always has a value")
            };
            return Err(de::Error::custom(format!(
                "header `{header}`: environment variable `{var}` is not set"
            )));
        };
        // The value itself stays out of the message: it may be a secret.
        if http::HeaderValue::from_str(&value).is_err() {
            return Err(de::Error::custom(format!(
                "header `{header}`: the value is not a valid header value (control characters?)"
            )));
        }
        out.insert(header.as_str().to_string(), source);
    }
    Ok(out)
}

/// `query:` of a backend: names and values as they are, neither empty.
pub fn query_params<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, String>::deserialize(d)?;
    if let Some((name, _)) = raw.iter().find(|(k, v)| k.is_empty() || v.is_empty()) {
        return Err(de::Error::custom(format!(
            "query parameter `{name}` needs a name and a value"
        )));
    }
    Ok(raw)
}

/// `models:` of a backend: public name -> the backend's name, neither empty.
pub fn model_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, String>::deserialize(d)?;
    if let Some((public, _)) = raw
        .iter()
        .find(|(k, v)| k.trim().is_empty() || v.trim().is_empty())
    {
        return Err(de::Error::custom(format!(
            "model `{public}` needs a name on both sides"
        )));
    }
    Ok(raw)
}
