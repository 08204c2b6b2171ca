//! HTTP helpers shared by the tests: clients, OpenAI-shaped error bodies, headers.

use std::time::Duration;

use serde_json::Value;

/// A plain client for the proxy, with a generous timeout so that a hung
/// request fails the test instead of hanging it.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// GET `url` with a bearer token (the admin token, a key) and its JSON body.
pub async fn get_json(url: &str, token: &str) -> Value {
    client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A browser-like client for the side app: keeps its cookies and does not
/// follow redirects, so that pages' 303s stay visible.
pub fn browser_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// An error answer, already checked to be in OpenAI's shape:
/// `{"error": {"message": non-empty, "type": string, "param", "code"}}`
/// (`param` and `code` present, possibly null). The proxy and the side app
/// answer every error this way.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub body: Value,
}

impl ApiError {
    /// `error.code`, or "" when it is null.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    /// `error.message` (never empty).
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap()
    }

    /// `error.type`.
    pub fn kind(&self) -> &str {
        self.body["error"]["type"].as_str().unwrap()
    }

    /// `error.param`, None when it is null.
    pub fn param(&self) -> Option<&str> {
        self.body["error"]["param"].as_str()
    }

    /// The status with `error.code`, for one-line assertions.
    pub fn status_and_code(&self) -> (u16, &str) {
        (self.status, self.code())
    }
}

/// Reads an error response, asserting OpenAI's error shape.
pub async fn error_of(resp: reqwest::Response) -> ApiError {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("error bodies are JSON");
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(e["type"].is_string(), "OpenAI error shape: {body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
    ApiError { status, body }
}

/// A response header as text, None when it is absent.
pub fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}
