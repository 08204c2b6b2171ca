//! Backend URLs, parsed once when the config is read.

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
        let uri: http::Uri = url
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
        let path = uri.path().trim_end_matches('/');
        let base_path = if path.is_empty() {
            "/v1".to_string()
        } else {
            path.to_string()
        };
        Ok(Self {
            raw: url.to_string(),
            tls,
            host,
            port,
            base_path,
        })
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
