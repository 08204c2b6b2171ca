//! A backend's request shape, built once from its config: the key header,
//! static headers, query parameters, the path with `{model}`, and its names
//! for the models (see `config::backend_shape`).

use std::collections::HashMap;

use http::{HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::config::{BackendAuth, BackendConfig};

/// Characters left as they are in a query component or a path segment.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The Messages API version sent to Anthropic backends when neither the
/// config nor the client names one (<https://docs.anthropic.com/en/api/versioning>).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Default)]
pub struct Shape {
    /// The header with the key (`authorization: Bearer ...`, `api-key`,
    /// `x-api-key`), marked sensitive.
    pub auth: Option<(HeaderName, HeaderValue)>,
    /// Added unless the request already has the header (a forwarded client one).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `name=value&...`, encoded; empty for none.
    query: String,
    query_names: Vec<String>,
    /// Public model name -> the backend's.
    models: HashMap<String, String>,
}

impl Shape {
    /// Reads the key and the `{env: NAME}` header values from the environment.
    pub fn build(b: &BackendConfig) -> Result<Self, String> {
        let auth = match (&b.api_key_env, b.auth()) {
            (Some(var), mode) => {
                let key = std::env::var(var).map_err(|_| format!("`{var}` is not set"))?;
                let (name, value) = match mode {
                    BackendAuth::Bearer => ("authorization", format!("Bearer {key}")),
                    BackendAuth::ApiKey => ("api-key", key),
                    BackendAuth::XApiKey => ("x-api-key", key),
                    BackendAuth::None => return Err("`auth: none` with a key".into()),
                };
                let mut value = HeaderValue::from_str(&value)
                    .map_err(|_| format!("the key in `{var}` is not a valid header value"))?;
                value.set_sensitive(true);
                Some((HeaderName::from_static(name), value))
            }
            (None, _) => None,
        };
        let mut headers = Vec::new();
        for (name, source) in &b.headers {
            let value = source
                .value()
                .ok_or_else(|| format!("header `{name}`: its environment variable is not set"))?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| format!("header `{name}`: not a valid header value"))?;
            value.set_sensitive(true);
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a header name"))?;
            headers.push((name, value));
        }
        if b.protocol() == crate::protocols::Protocol::Anthropic
            && !b.headers.contains_key("anthropic-version")
        {
            // Anthropic refuses a request without it; a client's own
            // (forwarded) wins, as for every static header.
            headers.push((
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(ANTHROPIC_VERSION),
            ));
        }
        let query = b
            .query
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(k, UNRESERVED),
                    utf8_percent_encode(v, UNRESERVED)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        Ok(Self {
            auth,
            headers,
            query,
            query_names: b.query.keys().cloned().collect(),
            models: b
                .models
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// The backend's name for `model`, when it has its own.
    pub fn upstream_model(&self, model: &str) -> Option<&str> {
        self.models.get(model).map(String::as_str)
    }

    /// The upstream request target: `base_path` (with `{model}` replaced by
    /// `model`, one encoded path segment), the rest of the client's path, and
    /// the client's query without the backend's parameters, then those.
    pub fn target(&self, base_path: &str, rest: &str, query: Option<&str>, model: &str) -> String {
        let mut target = String::with_capacity(base_path.len() + rest.len() + 64);
        match base_path.split_once(crate::config::MODEL_PLACEHOLDER) {
            Some((before, after)) => {
                target.push_str(before);
                // "." and ".." would climb the upstream's path.
                if model == "." || model == ".." {
                    target.push_str(&model.replace('.', "%2E"));
                } else {
                    target.extend(utf8_percent_encode(model, UNRESERVED));
                }
                target.push_str(after);
            }
            None => target.push_str(base_path),
        }
        target.push_str(rest);
        let mut sep = '?';
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            let name = pair.split('=').next().unwrap_or_default();
            let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            if pair.is_empty() || self.query_names.iter().any(|n| *n == decoded) {
                continue;
            }
            target.push(sep);
            target.push_str(pair);
            sep = '&';
        }
        if !self.query.is_empty() {
            target.push(sep);
            target.push_str(&self.query);
        }
        target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(yaml: &str) -> Shape {
        let b: BackendConfig = serde_yaml_ng::from_str(yaml).unwrap();
        Shape::build(&b).unwrap()
    }

    #[test]
    fn azure_path_and_query() {
        let s = shape(
            "url: https://r.openai.azure.com/openai/deployments/{model}\nquery: {api-version: 2024-10-21}\nmodels: {gpt-4o: my gpt4o}\n",
        );
        let model = s.upstream_model("gpt-4o").unwrap();
        assert_eq!(
            s.target(
                "/openai/deployments/{model}",
                "/chat/completions",
                Some("api-version=1&x=2"),
                model
            ),
            "/openai/deployments/my%20gpt4o/chat/completions?x=2&api-version=2024-10-21"
        );
        assert_eq!(
            s.target("/openai/deployments/{model}", "/embeddings", None, ".."),
            "/openai/deployments/%2E%2E/embeddings?api-version=2024-10-21"
        );
        assert_eq!(s.upstream_model("gpt-4o-mini"), None);
    }

    #[test]
    fn plain_backends_keep_the_clients_query() {
        let s = Shape::default();
        assert_eq!(
            s.target("/v1", "/models", Some("a=1"), "m"),
            "/v1/models?a=1"
        );
        assert_eq!(s.target("/v1", "/models", None, "m"), "/v1/models");
    }
}
