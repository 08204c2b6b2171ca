//! Attacks from outside, each test named by the attack it tries (SECURITY.md
//! lists them with the defence). The real binary, a real HTTP client.

mod common;

use common::{fake, gateway, Backend, User};

/// Sign-up does not verify emails, so an address listed as an admin's in an
/// old config (`admin_emails`), in any letter case, must not make whoever
/// registers it first an admin: admin is a role the operator grants.
#[tokio::test]
async fn signing_up_with_an_admins_email_does_not_make_you_an_admin() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .yaml("admin_emails: [boss@example.com]\n")
        .start()
        .await;
    for email in ["Boss@Example.com", "boss@example.com "] {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let resp = common::post_signup(&http, &gw, email).await;
        // The second spelling is the same account: signing up again logs in.
        assert!(matches!(resp.status().as_u16(), 200 | 201), "{email}");
        let me: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(me["email"], "boss@example.com");
        assert_eq!(
            me["is_admin"], false,
            "{email} became an admin by signing up"
        );
        let users = http
            .get(format!("{}/api/admin/users", gw.side))
            .send()
            .await
            .unwrap();
        assert_eq!(users.status(), 403, "{email} reached the admin API");
    }
    assert!(gw
        .log()
        .contains("`admin_emails` no longer makes anyone an admin"));
}

/// The operator's grant is the way in, whatever the letter case they type, and
/// the same email in another case is never a second account.
#[tokio::test]
async fn an_operator_grant_makes_an_admin_and_emails_are_one_account_in_any_case() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .yaml("plans:\n  free: {}\n")
        .start()
        .await;
    let real = User::signup(&gw, "real@example.com").await;
    assert_eq!(real.get("/api/admin/users").await.status(), 403);
    gw.cli(&["users", "grant-admin", "--email", "Real@Example.COM"]);
    assert_eq!(real.get("/api/admin/users").await.status(), 200);
    gw.cli(&["users", "revoke-admin", "--email", "real@example.com"]);
    assert_eq!(real.get("/api/admin/users").await.status(), 403);

    gw.cli(&[
        "users",
        "create",
        "--email",
        "Carol@Example.com",
        "--plan",
        "free",
    ]);
    let listed = gw.cli(&["users", "list"]);
    assert!(listed.contains("carol@example.com"), "{listed}");
    let resp = common::post_signup(&reqwest::Client::new(), &gw, "carol@EXAMPLE.com").await;
    assert_eq!(
        resp.status(),
        401,
        "a second account for another letter case"
    );
    let listed = gw.cli(&["users", "list"]);
    assert_eq!(listed.matches("carol@example.com").count(), 1, "{listed}");
}

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

async fn add_server(gw: &common::Gateway, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/api/admin/servers", gw.side))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// An admin (or whoever holds an admin session) names a gateway secret as a
/// server's key variable: the gateway would send it as the bearer token of
/// every health check and request to that server. Only variables the
/// operator set aside for upstream keys may be named.
#[tokio::test]
async fn the_admin_api_cannot_send_a_gateway_secret_to_a_server() {
    let up = fake().await;
    let catcher = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .env("BM_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("BLUESMINDS_UPSTREAM_EXTRA", "sk-extra")
        .yaml("admin:\n  token_env: BM_ADMIN_TOKEN\nadmin_servers:\n  allow_private: true\n")
        .start()
        .await;
    let stolen = add_server(
        &gw,
        serde_json::json!({"pool": "x", "url": catcher.url(), "models": ["x"], "api_key_env": "BM_ADMIN_TOKEN"}),
    )
    .await;
    assert_eq!(
        stolen.status(),
        400,
        "the admin API accepted a gateway secret as a server key"
    );
    let e = common::error_of(stolen).await;
    assert_eq!(
        (e.status, e.param()),
        (400, Some("api_key_env")),
        "{}",
        e.body
    );
    // An upstream key variable is fine, and reaches that server only.
    let ok = add_server(
        &gw,
        serde_json::json!({"pool": "x", "url": catcher.url(), "models": ["x"], "api_key_env": "BLUESMINDS_UPSTREAM_EXTRA"}),
    )
    .await;
    assert_eq!(ok.status(), 201);
    let key = gw.create_key("k", &[]);
    assert_eq!(
        gw.chat(&key, &common::chat_body("x", false)).await.status(),
        200
    );
    let seen: Vec<String> = catcher
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert!(
        seen.iter().all(|a| a == "Bearer sk-extra") && !seen.is_empty(),
        "{seen:?}"
    );
}

/// By default an admin-added server may not be this machine or a private
/// network address (SSRF into the operator's network); the operator allows
/// it with `admin_servers.allow_private`.
#[tokio::test]
async fn the_admin_api_cannot_point_the_gateway_at_private_addresses_by_default() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .env("BM_ADMIN_TOKEN", ADMIN_TOKEN)
        .yaml("admin:\n  token_env: BM_ADMIN_TOKEN\n")
        .start()
        .await;
    for url in [up.url(), format!("http://localhost:{}", up.addr().port())] {
        let resp = add_server(
            &gw,
            serde_json::json!({"pool": "x", "url": url, "models": ["x"]}),
        )
        .await;
        assert_eq!(resp.status(), 400, "the admin API accepted {url}");
        let e = common::error_of(resp).await;
        assert_eq!(
            (e.status, e.param()),
            (400, Some("url")),
            "{url}: {}",
            e.body
        );
        assert!(e.message().contains("allow_private"), "{}", e.body);
    }
    let listed = common::get_json(&format!("{}/api/admin/servers", gw.side), ADMIN_TOKEN).await;
    assert_eq!(listed["data"], serde_json::json!([]), "nothing was stored");
}

async fn post_json(url: String, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Many guesses at once for one account: each used to pass the throttle check
/// before any failure was counted, so all of them were verified. Attempts are
/// now counted before verifying: five are, the rest are refused at once.
#[tokio::test]
async fn fifty_parallel_password_guesses_verify_at_most_five() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    User::signup(&gw, "victim@example.com").await;
    let url = format!("{}/api/auth/login", gw.side);
    let guesses = (0..50).map(|i| {
        post_json(
            url.clone(),
            serde_json::json!({"email": "victim@example.com", "password": format!("guess number {i}")}),
        )
    });
    let statuses: Vec<u16> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let verified = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    // An attempt that found every hashing slot busy (503) was counted too,
    // and never verified.
    let busy = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(
        (verified + busy, refused),
        (5, 45),
        "at most five attempts may pass the throttle: {statuses:?}"
    );
    assert!(verified >= 1, "{statuses:?}");
}

/// Each argon2 hash takes 19 MiB; sign-ups hashed without bound, so a burst
/// of them took gigabytes. Hashes now run one per core: the gateway's peak
/// memory stays bounded and the proxy keeps answering meanwhile.
#[tokio::test]
async fn fifty_parallel_signups_keep_memory_bounded_and_the_proxy_answering() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .yaml("admin:\n  signups_per_ip_per_hour: 1000\n")
        .start()
        .await;
    let key = gw.create_key("k", &[]);
    let peak_kib = || {
        let pid = gw.child.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = peak_kib();
    let http = reqwest::Client::new();
    let emails: Vec<String> = (0..50).map(|i| format!("user{i}@example.com")).collect();
    let signups = emails.iter().map(|e| common::post_signup(&http, &gw, e));
    let flood = futures_util::future::join_all(signups);
    let chat = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        gw.chat(&key, &common::chat_body("gpt-4o-mini", false))
            .await
            .status()
    };
    let (answers, chat_status) = tokio::join!(flood, chat);
    assert_eq!(
        chat_status, 200,
        "the proxy stopped answering during the flood"
    );
    let mut created = 0;
    for a in &answers {
        match a.status().as_u16() {
            201 => created += 1,
            503 => assert!(a.headers().contains_key("retry-after")),
            other => panic!("sign-up answered {other}"),
        }
    }
    assert!(created >= 1);
    let grown_mib = (peak_kib() - before) / 1024;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    // One 19 MiB hash per core, plus room for the requests. Freed hash
    // buffers kept by the allocator per thread once made this 42 to 118 MiB
    // on two cores with glibc, and 62 with mimalloc while tokio's blocking
    // threads kept what the hashes freed (see `auth::passwords::hashing`).
    let bound = 19 * cores + 16;
    println!("peak memory grew {grown_mib} MiB during 50 sign-ups ({created} created); bound {bound} MiB");
    assert!(grown_mib <= bound, "peak memory grew {grown_mib} MiB");
}

/// One client IP may create only `admin.signups_per_ip_per_hour` accounts.
#[tokio::test]
async fn one_address_cannot_create_accounts_without_end() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .yaml("admin:\n  signups_per_ip_per_hour: 3\n")
        .start()
        .await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = common::post_signup(&http, &gw, &format!("bulk{i}@example.com")).await;
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            assert_eq!(common::error_of(r).await.code(), "too_many_signups");
            statuses.push(429);
        } else {
            statuses.push(r.status().as_u16());
        }
    }
    assert_eq!(statuses, [201, 201, 201, 429, 429]);
}

/// A client sends headers that steer a shared upstream account (which
/// organization or project it bills, LiteLLM's per-request controls, a cookie,
/// a forged client address); a LiteLLM upstream answers with headers meant for
/// the operator (its cost of the request, its key's total spend, which
/// provider served it, the provider's org id). Neither crosses the gateway.
#[tokio::test]
async fn clients_cannot_steer_the_upstream_account_nor_read_the_operators_costs() {
    let litellm = fake_upstream::FakeUpstream::start(fake_upstream::FakeConfig {
        response_headers: [
            ("x-litellm-response-cost", "0.00042"),
            ("x-litellm-key-spend", "1234.5"),
            ("x-litellm-model-api-base", "https://api.openai.com/v1"),
            ("x-litellm-model-name", "gpt-4o-mini-2024-07-18"),
            ("llm_provider-openai-organization", "org-operator"),
            ("set-cookie", "upstream=1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let gw = gateway().backend(Backend::new(litellm.url())).start().await;
    let key = gw.create_key("k", &[]);
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("OpenAI-Organization", "org-attacker")
        .header("OpenAI-Project", "proj-attacker")
        .header("Cookie", "session=stolen")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("x-litellm-api-key", "sk-someone-else")
        .header("x-litellm-tags", "free-ride")
        .json(&common::chat_body("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let leaked: Vec<String> = resp
        .headers()
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| {
            k.starts_with("x-litellm") || k.starts_with("llm_provider") || k == "set-cookie"
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "upstream headers reached the client: {leaked:?}"
    );
    let seen = &litellm.requests()[0];
    for name in [
        "openai-organization",
        "openai-project",
        "cookie",
        "x-litellm-api-key",
        "x-litellm-tags",
    ] {
        assert_eq!(seen.header(name), None, "{name} reached the upstream");
    }
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
}

/// A pool that needs a provider header (OpenAI's beta features, Anthropic's
/// version) passes exactly the ones it names, both ways.
#[tokio::test]
async fn a_pool_forwards_and_exposes_the_headers_it_names() {
    let up = fake_upstream::FakeUpstream::start(fake_upstream::FakeConfig {
        response_headers: vec![("x-provider-trace".into(), "t-1".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .forward_header("OpenAI-Beta")
        .expose_header("x-provider-trace")
        .start()
        .await;
    let key = gw.create_key("k", &[]);
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("OpenAI-Beta", "assistants=v2")
        .json(&common::chat_body("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-provider-trace"], "t-1");
    assert_eq!(
        up.requests()[0].header("openai-beta"),
        Some("assistants=v2")
    );
}

/// Requests the gateway refuses after authenticating the key (an unknown
/// model, a bad body) used to cost the key nothing, so a free key could make
/// the gateway parse bodies without end. They count against its RPM now.
#[tokio::test]
async fn refused_requests_still_count_against_the_keys_rate_limit() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("k", &["--rpm", "3"]);
    for _ in 0..3 {
        let r = gw
            .chat(&key, &common::chat_body("no-such-model", false))
            .await;
        assert_eq!(r.status(), 404);
    }
    let r = gw
        .chat(&key, &common::chat_body("gpt-4o-mini", false))
        .await;
    assert_eq!(
        r.status(),
        429,
        "three refusals left the key's RPM untouched"
    );
    assert_eq!(up.request_count(), 0);
}

/// A request line and headers, then the body only in part: what a slow
/// upload (or a client holding connections open) sends.
async fn start_slow_upload(
    gw: &common::Gateway,
    key: &str,
    declared: usize,
    sent: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = gw.proxy.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&vec![b' '; sent]).await.unwrap();
    conn
}

async fn status_of(conn: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), conn.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A body that never finishes arriving gets 408 once `server.body_timeout_secs`
/// has passed, instead of holding its slot and buffer for ever.
#[tokio::test]
async fn a_body_that_never_arrives_times_out_with_408() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .server("body_timeout_secs: 1")
        .start()
        .await;
    let key = gw.create_key("k", &[]);
    let mut conn = start_slow_upload(&gw, &key, 1000, 10).await;
    let status = status_of(&mut conn).await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
}

/// Many slow uploads at once hold at most `server.max_body_bytes_in_flight`
/// bytes of bodies; past it a new body is refused with 503 at once.
#[tokio::test]
async fn slow_uploads_cannot_hold_more_body_memory_than_configured() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .server("max_body_bytes_in_flight: 1000000")
        .start()
        .await;
    let key = gw.create_key("k", &[]);
    let _first = start_slow_upload(&gw, &key, 900_000, 100).await;
    // The first upload's declared size is reserved once the gateway has read
    // its headers; give it a moment to get there (ordering, not a timing check).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut second = start_slow_upload(&gw, &key, 900_000, 100).await;
    let status = status_of(&mut second).await;
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    // A small request still fits.
    let r = gw
        .chat(&key, &common::chat_body("gpt-4o-mini", false))
        .await;
    assert_eq!(r.status(), 200);
}

/// Made-up `bm_` tokens used to cost a database query each and a slot in the
/// cache real keys live in. Tokens without a valid checksum are refused
/// without a lookup; an address that keeps presenting unknown well-formed
/// tokens is refused further lookups for a minute, while keys the gateway
/// already knows keep working from that address.
#[tokio::test]
async fn made_up_keys_cannot_flood_the_key_store() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("real", &[]);
    let body = common::chat_body("gpt-4o-mini", false);
    assert_eq!(gw.chat(&key, &body).await.status(), 200);
    // A wrong checksum: 401, and it does not count as a lookup failure.
    let mut typo = key.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    for _ in 0..30 {
        assert_eq!(gw.chat(&typo, &body).await.status(), 401);
    }
    // Well-formed unknown tokens (the legacy length, which has no checksum):
    // 20 lookups, then the address is refused lookups.
    let mut statuses = Vec::new();
    for i in 0..25 {
        let token = format!("bm_{:0>43}", i);
        statuses.push(gw.chat(&token, &body).await.status().as_u16());
    }
    assert_eq!(&statuses[..20], &[401; 20][..], "{statuses:?}");
    assert_eq!(&statuses[20..], &[429; 5][..], "{statuses:?}");
    // The real key is still served from the cache.
    assert_eq!(gw.chat(&key, &body).await.status(), 200);
}

/// A 64 MiB upload to a gateway that takes 4 MiB used to end in a broken pipe:
/// the gateway stopped reading after 16 MiB and closed while the client was
/// still writing, so a client that writes its whole body before reading (as
/// Python's requests and httpx do) never read its 413. The rest of the body is
/// now read and dropped for a bounded time (nginx's lingering close), with or
/// without a declared length.
#[tokio::test]
async fn a_64_mib_upload_reads_its_413_instead_of_a_broken_pipe() {
    use tokio::io::AsyncWriteExt;
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("k", &[]);
    let addr = gw.proxy.trim_start_matches("http://").to_string();
    let mib = vec![b' '; 1024 * 1024];
    for chunked in [false, true] {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let framing = if chunked {
            "transfer-encoding: chunked".to_string()
        } else {
            format!("content-length: {}", 64 * mib.len())
        };
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        for _ in 0..64 {
            if chunked {
                let size = format!("{:x}\r\n", mib.len());
                conn.write_all(size.as_bytes()).await.unwrap();
            }
            conn.write_all(&mib)
                .await
                .unwrap_or_else(|e| panic!("chunked={chunked}: the gateway stopped reading: {e}"));
            if chunked {
                conn.write_all(b"\r\n").await.unwrap();
            }
        }
        if chunked {
            conn.write_all(b"0\r\n\r\n").await.unwrap();
        }
        let status = status_of(&mut conn).await;
        assert!(
            status.starts_with("HTTP/1.1 413"),
            "chunked={chunked}: {status}"
        );
    }
    assert_eq!(up.request_count(), 0);
}

/// A slowloris client: the request line, then one header byte a second, never
/// ending the headers. Returns whether the gateway closed the connection
/// within 30 s (it may answer something first).
async fn slowloris(addr: String, send_request_line: bool) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    if send_request_line && conn.write_all(b"GET /healthz HTTP/1.1\r\n").await.is_err() {
        return true;
    }
    let mut buf = [0u8; 512];
    for &byte in b"x-slow: ".iter().chain(std::iter::repeat(&b'a')) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        let second = tokio::time::sleep(std::time::Duration::from_secs(1));
        tokio::pin!(second);
        loop {
            tokio::select! {
                read = conn.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                },
                _ = &mut second => break,
            }
        }
        if send_request_line && conn.write_all(&[byte]).await.is_err() {
            return true;
        }
    }
    unreachable!("the header bytes never run out")
}

/// The side app had no header timeout: a client sending its headers one byte
/// a second (or nothing at all) held its connection for ever, and enough of
/// them held the listener. Now the headers must arrive within
/// `server.side_header_timeout_secs`, and a normal request is served meanwhile.
#[tokio::test]
async fn a_slowloris_client_is_cut_off_after_the_side_apps_header_timeout() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .server("side_header_timeout_secs: 1")
        .start()
        .await;
    let addr = common::host_port(&gw.side).to_string();
    let slow: Vec<_> = [true, true, true, false]
        .into_iter()
        .map(|line| tokio::spawn(slowloris(addr.clone(), line)))
        .collect();
    let r = common::client()
        .get(format!("{}/healthz", gw.side))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for (i, s) in slow.into_iter().enumerate() {
        assert!(
            s.await.unwrap(),
            "slow client {i} was still connected after 30 s with a 1 s header timeout"
        );
    }
    let r = common::client()
        .get(format!("{}/healthz", gw.side))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The side app took any number of connections. Past
/// `server.side_max_connections` a new connection now waits (it is not
/// accepted) until one closes; it is then served, and the proxy, a listener
/// of its own, answers all along.
#[tokio::test]
async fn connections_past_the_side_apps_cap_wait_for_a_free_slot() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .server("side_max_connections: 2")
        // The held connections are closed by the test, not by the timeout.
        .server("side_header_timeout_secs: 120")
        .start()
        .await;
    let key = gw.create_key("k", &[]);
    let addr = common::host_port(&gw.side).to_string();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let side = gw.side.clone();
    let waiting = tokio::spawn(async move {
        common::client()
            .get(format!("{side}/healthz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    // Ordering, not timing: with both slots held the request cannot be served.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served past a cap of 2: {:?}",
        waiting.await
    );
    let r = gw
        .chat(&key, &common::chat_body("gpt-4o-mini", false))
        .await;
    assert_eq!(r.status(), 200, "the proxy must not wait for the side app");
    drop(held.remove(0));
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
        .await
        .expect("the waiting connection is served once a slot is free")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

/// A side-app request whose body never finishes arriving held its handler for
/// ever; now the whole request gets `server.side_request_timeout_secs`, then
/// 408 `request_timeout`.
#[tokio::test]
async fn a_slow_body_to_the_side_app_times_out_with_408() {
    use tokio::io::AsyncWriteExt;
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .server("side_request_timeout_secs: 1")
        .start()
        .await;
    let addr = common::host_port(&gw.side);
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("POST /api/auth/login HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"email\"").as_bytes(),
    )
    .await
    .unwrap();
    let status = status_of(&mut conn).await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
}

/// `/metrics` (backend URLs, costs) was served beside the public dashboard.
/// With `server.metrics_listen` it is served only there.
#[tokio::test]
async fn with_a_metrics_listener_the_side_app_no_longer_serves_metrics() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .metrics_listen()
        .start()
        .await;
    let r = reqwest::get(format!("{}/metrics", gw.side)).await.unwrap();
    let e = common::error_of(r).await;
    assert_eq!(e.status_and_code(), (404, "unknown_url"));
    let metrics_url = gw.metrics_url.clone().unwrap();
    let r = reqwest::get(format!("{metrics_url}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("bluesminds_usage_queue_depth"));
    // Nothing else is there.
    let r = reqwest::get(format!("{metrics_url}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::get(format!("{}/healthz", gw.side)).await.unwrap();
    assert_eq!(r.status(), 200);
}

/// POST /api/auth/{what} as the client at `client`, through the loopback
/// "ingress" that the gateways below trust (`X-Forwarded-For`).
async fn auth_from(
    gw: &common::Gateway,
    what: &str,
    client: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    common::client()
        .post(format!("{}/api/auth/{what}", gw.side))
        .header("x-forwarded-for", client)
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

const RIGHT: &str = "a long enough password";

/// Sign-up used to answer 409 "an account with this email already exists",
/// telling anyone who has an account. A taken email is now a login attempt:
/// the login's answer (and its throttle), never "taken".
#[tokio::test]
async fn signing_up_with_a_taken_email_does_not_say_it_is_taken() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    User::signup(&gw, "ann@example.com").await;
    let taken = auth_from(
        &gw,
        "signup",
        "1.1.1.1",
        "ann@example.com",
        "not her password",
    )
    .await;
    let taken = common::error_of(taken).await;
    let wrong = auth_from(
        &gw,
        "login",
        "1.1.1.1",
        "ann@example.com",
        "not her password",
    )
    .await;
    let wrong = common::error_of(wrong).await;
    assert_eq!(taken.status_and_code(), (401, "invalid_credentials"));
    assert_eq!(
        (taken.status, taken.message()),
        (wrong.status, wrong.message())
    );
    assert!(!taken.message().contains("exist"), "{}", taken.message());
    // Her own password signs her in, as the login would.
    let again = auth_from(&gw, "signup", "1.1.1.1", "ann@example.com", RIGHT).await;
    assert_eq!(again.status(), 200);
    let me: serde_json::Value = again.json().await.unwrap();
    assert_eq!(me["email"], "ann@example.com");
}

/// The 5-failure lock refused even the right password for 15 minutes, so
/// anyone could keep the owner (or the admin) locked out; and behind an
/// ingress every user shared one address. Now failures slow down only the
/// account from the address that failed, with a backoff after which the right
/// password works, and `server.trusted_proxies` gives each client its address.
#[tokio::test]
async fn an_attacker_cannot_lock_the_owner_out() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .server("trusted_proxies: [127.0.0.1/32]")
        .start()
        .await;
    User::signup(&gw, "owner@example.com").await;
    let attacker = "203.0.113.66";
    for i in 0..5 {
        let r = auth_from(
            &gw,
            "login",
            attacker,
            "owner@example.com",
            &format!("guess {i}"),
        )
        .await;
        assert_eq!(r.status(), 401);
    }
    let r = auth_from(&gw, "login", attacker, "owner@example.com", RIGHT).await;
    assert_eq!(r.status(), 429, "the attacker's address waits");
    let wait: u64 = common::header(&r, "retry-after").unwrap().parse().unwrap();
    assert!(wait <= 2, "a backoff, not a lock: retry-after {wait}");
    // The owner, from their own address, is not slowed down at all.
    let r = auth_from(&gw, "login", "198.51.100.7", "owner@example.com", RIGHT).await;
    assert_eq!(r.status(), 200);
    // And after the backoff the right password works from any address.
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let r = auth_from(&gw, "login", attacker, "owner@example.com", RIGHT).await;
    assert_eq!(r.status(), 200);
}

/// Behind a load balancer the throttles used the balancer's address, so 20
/// failures from one user refused everyone. Only a trusted proxy's
/// `X-Forwarded-For` is read; a client's own is not believed, on the side app
/// as on the proxy (its unknown-key throttle and the upstream's header).
#[tokio::test]
async fn behind_a_trusted_proxy_one_client_cannot_throttle_the_others() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .server("trusted_proxies: [127.0.0.1/32]")
        .start()
        .await;
    let noisy = "203.0.113.5";
    for i in 0..20 {
        let r = auth_from(&gw, "login", noisy, &format!("u{i}@example.com"), RIGHT).await;
        assert_eq!(r.status(), 401);
    }
    let r = auth_from(&gw, "login", noisy, "u99@example.com", RIGHT).await;
    assert_eq!(r.status(), 429);
    // A forged address left of the one the ingress appended changes nothing.
    let forged = format!("198.51.100.1, {noisy}");
    let r = auth_from(&gw, "login", &forged, "u99@example.com", RIGHT).await;
    assert_eq!(r.status(), 429);
    let r = auth_from(&gw, "login", "198.51.100.2", "u99@example.com", RIGHT).await;
    assert_eq!(r.status(), 401, "another client is not throttled");

    // The proxy: unknown keys from one client refuse that client only.
    let key = gw.create_key("k", &[]);
    let chat = |token: String, from: &'static str| {
        let url = gw.url("/v1/chat/completions");
        async move {
            common::client()
                .post(url)
                .bearer_auth(token)
                .header("x-forwarded-for", from)
                .json(&common::chat_body("gpt-4o-mini", false))
                .send()
                .await
                .unwrap()
        }
    };
    let mut last = 0;
    for i in 0..25 {
        last = chat(format!("bm_{:0>43}", i), "203.0.113.5")
            .await
            .status()
            .as_u16();
    }
    assert_eq!(last, 429);
    let r = chat(format!("bm_{:0>43}", 99), "198.51.100.2").await;
    assert_eq!(r.status(), 401, "another client's lookups go on");
    let r = chat(key, "198.51.100.2").await;
    assert_eq!(r.status(), 200);
    let seen = up.requests().pop().unwrap();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("198.51.100.2, 127.0.0.1")
    );
}

/// Without `trusted_proxies` a client's `X-Forwarded-For` is never read: it
/// cannot pick a fresh address for each guess.
#[tokio::test]
async fn a_forged_forwarded_for_does_not_escape_the_address_throttle() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    for i in 0..20 {
        let from = format!("203.0.113.{i}");
        let r = auth_from(&gw, "login", &from, &format!("u{i}@example.com"), RIGHT).await;
        assert_eq!(r.status(), 401);
    }
    let r = auth_from(&gw, "login", "203.0.113.200", "x@example.com", RIGHT).await;
    assert_eq!(r.status(), 429);
}

/// Sessions lived their full 7 days however long they sat unused, and ended
/// ones stayed in the database for ever. A session unused for
/// `admin.session_idle_secs` now ends, and ended sessions are deleted.
#[tokio::test]
async fn a_stolen_idle_session_stops_working_and_is_deleted() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .yaml("admin:\n  session_idle_secs: 2\n")
        .start()
        .await;
    let idle = User::signup(&gw, "idle@example.com").await;
    let busy = User::signup(&gw, "busy@example.com").await;
    // One session is used every half second, the other is left alone.
    for _ in 0..8 {
        assert_eq!(busy.get("/api/auth/me").await.status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(
        busy.get("/api/auth/me").await.status(),
        200,
        "a used session stays"
    );
    assert_eq!(idle.get("/api/auth/me").await.status(), 401);
    let pool = gw.db.pool().await;
    let users: Vec<i64> = common::eventually_some("the idle session deleted", || async {
        let rows: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM sessions")
            .fetch_all(&pool)
            .await
            .unwrap();
        (rows.len() == 1).then_some(rows)
    })
    .await;
    assert_eq!(users, [busy.id]);
}

/// A session holder could rotate a key with a year of grace, keeping a leaked
/// key alive; the grace is capped by `admin.max_key_rotation_grace_secs`.
#[tokio::test]
async fn a_rotated_key_cannot_be_kept_alive_for_a_year() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let ann = User::signup(&gw, "ann@example.com").await;
    let (id, _secret) = ann.new_key("laptop").await;
    let r = ann
        .post(
            &format!("/api/keys/{id}/rotate"),
            serde_json::json!({"grace_seconds": 365 * 86_400}),
        )
        .await;
    let e = common::error_of(r).await;
    assert_eq!(e.status_and_code(), (400, "invalid_request_error"));
    assert_eq!(e.param(), Some("grace_seconds"));
    let r = ann
        .post(
            &format!("/api/keys/{id}/rotate"),
            serde_json::json!({"grace_seconds": 3600}),
        )
        .await;
    assert_eq!(r.status(), 201);
}

/// OpenRouter's `models`/`route`, LiteLLM's `fallbacks`/`user_config` and
/// client-side `api_base`/`api_key` make a backend serve another model (or
/// bill another account) than the one the key is allowed and priced for. They
/// are removed on the way upstream unless the pool allows them.
#[tokio::test]
async fn a_request_cannot_route_itself_to_a_model_the_key_may_not_use() {
    let up = fake().await;
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "models": ["o1-pro"],
        "route": "fallback",
        "fallbacks": ["o1-pro"],
        "user_config": {"model_list": [{"model_name": "gpt-4o-mini", "litellm_params": {"model": "o1-pro"}}]},
        "api_base": "http://attacker.example",
        "api_key": "sk-attacker",
        "temperature": 0.5,
    });
    let sent = |gw: &common::Gateway, key: String| {
        let http = reqwest::Client::new();
        let req = http
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body);
        async move { req.send().await.unwrap().status() }
    };
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .models(&["gpt-4o-mini"])
        .start()
        .await;
    let key = gw.create_key("k", &["--models", "gpt-4o-mini"]);
    assert_eq!(sent(&gw, key).await, 200);
    let seen: serde_json::Value = serde_json::from_slice(&up.requests()[0].body).unwrap();
    let fields: Vec<&String> = seen.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["messages", "model", "temperature"], "{seen}");
    assert_eq!(seen["temperature"], 0.5);

    let gw = gateway()
        .backend(Backend::new(up.url()))
        .models(&["gpt-4o-mini"])
        .pool("allow_routing_fields: true")
        .start()
        .await;
    let key = gw.create_key("k", &[]);
    assert_eq!(sent(&gw, key).await, 200);
    let seen = &up.requests()[1].body;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(seen).unwrap(),
        body
    );
}
