//! Which backend serves a request, and as whom: backend identity, Host headers
//! and keys. The real binary, fake upstreams, a real HTTP client.

mod common;

use common::{chat_body, gateway, Backend};
use fake_upstream::{FakeConfig, FakeUpstream};

/// Two backends whose names resolve to one IP:port (providers behind one CDN,
/// or one server reached under two names) are two backends: each request goes
/// out with the Host header and the key of the backend that was picked, and
/// equal weights share the load. Before backends had their own identity the
/// load balancer merged them, and every request carried the first one's Host
/// and key.
#[tokio::test]
async fn two_backends_on_one_address_keep_their_own_host_and_key() {
    let up = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    let port = up.addr().port();
    let gw = gateway()
        .backend(Backend {
            api_key_env: Some("KEY_A"),
            ..Backend::new(format!("http://127.0.0.1:{port}"))
        })
        .backend(Backend {
            api_key_env: Some("KEY_B"),
            ..Backend::new(format!("http://localhost:{port}"))
        })
        .env("KEY_A", "sk-account-a")
        .env("KEY_B", "sk-account-b")
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    for _ in 0..10 {
        let r = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(r.status(), 200);
    }
    let seen: Vec<(String, String)> = up
        .requests()
        .iter()
        .map(|r| {
            (
                r.header("host").unwrap_or_default().to_string(),
                r.header("authorization").unwrap_or_default().to_string(),
            )
        })
        .collect();
    let a = (
        format!("127.0.0.1:{port}"),
        "Bearer sk-account-a".to_string(),
    );
    let b = (
        format!("localhost:{port}"),
        "Bearer sk-account-b".to_string(),
    );
    assert!(
        seen.iter().all(|s| s == &a || s == &b),
        "a Host header went out with the other backend's key: {seen:?}"
    );
    let to_a = seen.iter().filter(|s| *s == &a).count();
    assert_eq!((to_a, seen.len() - to_a), (5, 5), "equal weights: {seen:?}");
}

/// The same server under two keys (two provider accounts, to spread their
/// rate limits) is allowed at one priority, and both keys are used.
#[tokio::test]
async fn one_url_under_two_keys_uses_both() {
    let up = FakeUpstream::start(FakeConfig::default()).await.unwrap();
    let gw = gateway()
        .backend(Backend {
            api_key_env: Some("KEY_A"),
            ..Backend::new(up.url())
        })
        .backend(Backend {
            api_key_env: Some("KEY_B"),
            ..Backend::new(up.url())
        })
        .env("KEY_A", "sk-account-a")
        .env("KEY_B", "sk-account-b")
        .start()
        .await;
    let key = gw.create_key("test", &[]);
    for _ in 0..4 {
        let r = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(r.status(), 200);
    }
    let mut keys: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or_default().to_string())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "Bearer sk-account-a",
            "Bearer sk-account-a",
            "Bearer sk-account-b",
            "Bearer sk-account-b"
        ]
    );
}
