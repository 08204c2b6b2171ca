//! Backend URLs, parsed once when the config is read.

/// Where a backend's path takes the request's model.
pub const MODEL_PLACEHOLDER: &str = "{model}";
const MODEL_STAND_IN: &str = "bm-model-placeholder-5f0c";

/// A backend URL taken apart once at load time; it parses itself when the
/// config is read, so a bad one is an error at its field and line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct BackendUrl {
    /// As configured, for logs, usage records and the admin pages.
    raw: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Replaces the client's `/v1`; never ends with `/`.
    pub base_path: String,
}

impl BackendUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        // `{model}` in the path (Azure's `/openai/deployments/{model}`) is not
        // URI syntax: parse with a stand-in, then put it back.
        let uri: http::Uri = url
            .replace(MODEL_PLACEHOLDER, MODEL_STAND_IN)
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("`{url}` must start with http:// or https://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("`{url}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if uri.query().is_some() {
            return Err(format!("`{url}` must not have a query string"));
        }
        if uri.host().is_some_and(|h| h.contains(MODEL_STAND_IN)) {
            return Err(format!(
                "`{url}`: {MODEL_PLACEHOLDER} may only be in the path"
            ));
        }
        let path = uri.path().trim_end_matches('/');
        let base_path = if path.is_empty() {
            "/v1".to_string()
        } else {
            path.replace(MODEL_STAND_IN, MODEL_PLACEHOLDER)
        };
        Ok(Self {
            raw: url.to_string(),
            tls,
            host,
            port,
            base_path,
        })
    }

    /// Whether the path holds `{model}`, replaced per request by the model
    /// (Azure OpenAI's deployments).
    pub fn has_model_in_path(&self) -> bool {
        self.base_path.contains(MODEL_PLACEHOLDER)
    }

    /// The Host header value an upstream expects (port only when not the default).
    pub fn host_header(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl TryFrom<String> for BackendUrl {
    type Error = String;
    fn try_from(url: String) -> Result<Self, String> {
        Self::parse(&url)
    }
}

impl std::fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}
