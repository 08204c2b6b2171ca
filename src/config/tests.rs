use super::*;

const GOOD: &str = r#"
pools:
  - name: main
    models: [gpt-4o-mini, "text-embedding-*"]
    backends:
      - url: http://127.0.0.1:9000
      - url: https://api.example.com/v1
        weight: 2
        priority: 1
prices:
  gpt-4o-mini: { input_per_1m: 0.15, output_per_1m: 0.6 }
"#;

#[test]
fn parses_and_fills_defaults() {
    let c = Config::from_yaml(GOOD, "t.yaml").unwrap();
    assert_eq!(c.server.proxy_listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.pools[0].backends[1].weight, 2);
    assert_eq!(c.prices["gpt-4o-mini"].output_per_1m, 0.6);
}

#[test]
fn unknown_field_names_path_and_line() {
    let bad = GOOD.replace("weight: 2", "wieght: 2");
    let e = Config::from_yaml(&bad, "t.yaml").unwrap_err().to_string();
    assert!(e.contains("pools[0].backends[1]"), "{e}");
    assert!(e.contains("wieght"), "{e}");
    assert!(e.contains("line 8"), "{e}");
}

#[test]
fn type_error_names_field() {
    let bad = GOOD.replace("weight: 2", "weight: heavy");
    let e = Config::from_yaml(&bad, "t.yaml").unwrap_err().to_string();
    assert!(e.contains("pools[0].backends[1].weight"), "{e}");
}

#[test]
fn semantic_errors_name_field_and_line() {
    let bad = GOOD.replace("weight: 2", "weight: 0");
    let e = Config::from_yaml(&bad, "t.yaml").unwrap_err().to_string();
    assert!(e.contains("pools[0].backends[1].weight"), "{e}");
    assert!(e.contains("line 8"), "{e}");

    let bad = GOOD.replace("http://127.0.0.1:9000", "ftp://x");
    let e = Config::from_yaml(&bad, "t.yaml").unwrap_err().to_string();
    assert!(e.contains("pools[0].backends[0].url"), "{e}");

    let bad = GOOD.replace(
        "      - url: https://api.example.com/v1\n",
        "      - url: https://api.example.com/v1\n        api_key_env: BM_SURELY_UNSET_VAR\n",
    );
    let e = Config::from_yaml(&bad, "t.yaml").unwrap_err().to_string();
    assert!(e.contains("BM_SURELY_UNSET_VAR"), "{e}");
}

#[test]
fn backend_url_paths() {
    let u = BackendUrl::parse("http://127.0.0.1:4000").unwrap();
    assert_eq!((u.tls, u.port, u.base_path.as_str()), (false, 4000, "/v1"));
    let u = BackendUrl::parse("https://openrouter.ai/api/v1/").unwrap();
    assert_eq!(
        (u.tls, u.port, u.base_path.as_str()),
        (true, 443, "/api/v1")
    );
    assert_eq!(u.host_header(), "openrouter.ai");
    assert!(BackendUrl::parse("localhost:80").is_err());
    let u = BackendUrl::parse("https://r.openai.azure.com/openai/deployments/{model}").unwrap();
    assert_eq!(u.base_path, "/openai/deployments/{model}");
    assert!(u.has_model_in_path());
    assert!(BackendUrl::parse("https://{model}.example.com/v1").is_err());
}

/// Provider shapes: each bad combination is refused at its field, and the
/// message never holds a header's value.
#[test]
fn backend_auth_headers_query_and_models() {
    let with = |lines: &str| {
        GOOD.replace(
            "      - url: https://api.example.com/v1\n",
            &format!("      - url: https://api.example.com/v1\n{lines}"),
        )
    };
    std::env::set_var("BM_TEST_SHAPE_KEY", "secret-value-123");
    let ok = with(
        "        api_key_env: BM_TEST_SHAPE_KEY\n        auth: api-key\n        headers: {anthropic-version: \"2023-06-01\", x-extra: {env: BM_TEST_SHAPE_KEY}}\n        query: {api-version: \"2024-10-21\"}\n        models: {gpt-4o-mini: my-deployment}\n",
    );
    let c = Config::from_yaml(&ok, "t.yaml").unwrap();
    let b = &c.pools[0].backends[1];
    assert_eq!(b.auth(), BackendAuth::ApiKey);
    assert_eq!(
        b.headers["x-extra"],
        HeaderSource::Env("BM_TEST_SHAPE_KEY".into())
    );
    assert!(!format!("{c:?}").contains("secret-value-123"));
    assert_eq!(b.models["gpt-4o-mini"], "my-deployment");

    for (lines, field, message) in [
        (
            "        auth: x-api-key\n",
            "backends[1].auth",
            "needs `api_key_env`",
        ),
        (
            "        api_key_env: BM_TEST_SHAPE_KEY\n        auth: none\n",
            "backends[1].auth",
            "sends no key",
        ),
        (
            "        auth: basic\n",
            "backends[1].auth",
            "unknown variant",
        ),
        (
            "        api_key_env: BM_TEST_SHAPE_KEY\n        headers: {Authorization: x}\n",
            "backends[1].headers",
            "carries the key",
        ),
        (
            "        headers: {content-length: \"1\"}\n",
            "backends[1].headers",
            "set by the gateway",
        ),
        (
            "        headers: {x-a: {env: BM_SURELY_UNSET_VAR}}\n",
            "backends[1].headers",
            "`BM_SURELY_UNSET_VAR` is not set",
        ),
        (
            "        headers: {x-a: 12}\n",
            "backends[1].headers",
            "must be a string",
        ),
        (
            "        query: {api-version: \"\"}\n",
            "backends[1].query",
            "needs a name and a value",
        ),
        (
            "        models: {gpt-4o-mini: \" \"}\n",
            "backends[1].models",
            "both sides",
        ),
    ] {
        let e = Config::from_yaml(&with(lines), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(field) && e.contains(message), "{lines}: {e}");
        assert!(!e.contains("secret-value-123"), "{e}");
    }
}

/// A backend speaks its pool's protocol unless it says otherwise; an
/// Anthropic backend's key goes in `x-api-key` unless `auth` says otherwise.
#[test]
fn backends_inherit_the_pools_protocol() {
    std::env::set_var("BM_TEST_PROTOCOL_KEY", "k");
    let yaml = GOOD
        .replace(
            "    backends:\n",
            "    protocol: anthropic\n    backends:\n",
        )
        .replace(
            "        weight: 2\n",
            "        weight: 2\n        protocol: openai\n        responses_api: native\n",
        )
        .replace(
            "      - url: http://127.0.0.1:9000\n",
            "      - url: http://127.0.0.1:9000\n        api_key_env: BM_TEST_PROTOCOL_KEY\n",
        );
    let c = Config::from_yaml(&yaml, "t.yaml").unwrap();
    let [anthropic, openai] = &c.pools[0].backends[..] else {
        panic!("two backends")
    };
    assert_eq!(
        (anthropic.protocol(), anthropic.auth()),
        (Protocol::Anthropic, BackendAuth::XApiKey)
    );
    assert_eq!(
        (openai.protocol(), openai.responses_api),
        (Protocol::OpenAi, ResponsesApi::Native)
    );

    let wrong = GOOD.replace(
        "        weight: 2\n",
        "        weight: 2\n        protocol: anthropic\n        responses_api: native\n",
    );
    let e = Config::from_yaml(&wrong, "t.yaml").unwrap_err().to_string();
    assert!(
        e.contains("backends[1].responses_api") && e.contains("does not serve"),
        "{e}"
    );
    let e = Config::from_yaml(
        &GOOD.replace("    backends:\n", "    protocol: grpc\n    backends:\n"),
        "t.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("pools[0].protocol") && e.contains("unknown variant"),
        "{e}"
    );
}

/// A self-signed pair in `dir`, for the `server.tls` checks.
fn tls_pair(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn with_tls(cert: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        "server:\n  tls:\n    cert_file: {}\n    key_file: {}\n{GOOD}",
        cert.display(),
        key.display()
    )
}

#[test]
fn tls_files_are_checked_at_load_and_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls_pair(dir.path(), "a");
    let (_, other_key) = tls_pair(dir.path(), "b");

    let yaml = with_tls(&cert, &key);
    let c = Config::from_yaml(&yaml, "t.yaml").unwrap();
    c.check_files(&yaml, "t.yaml").unwrap();

    let yaml = with_tls(&cert, &other_key);
    let c = Config::from_yaml(&yaml, "t.yaml").unwrap();
    let e = c.check_files(&yaml, "t.yaml").unwrap_err().to_string();
    assert!(e.contains("server.tls.key_file"), "{e}");
    assert!(e.contains("b.key") && e.contains("line 4"), "{e}");

    let missing = dir.path().join("missing.crt");
    let yaml = with_tls(&missing, &key);
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("server.tls.cert_file") && e.contains("missing.crt"),
        "{e}"
    );
    // A reload does not judge them: the certificate reloads on its own.
    assert!(Config::load_for_reload(&path).is_ok());
}

#[test]
fn tls_makes_session_cookies_secure_and_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls_pair(dir.path(), "a");
    let plain = Config::from_yaml(GOOD, "t.yaml").unwrap();
    let tls = Config::from_yaml(&with_tls(&cert, &key), "t.yaml").unwrap();
    let (plain_boot, plain_live) = plain.clone().split();
    let (tls_boot, tls_live) = tls.clone().split();
    assert!(!plain_live.accounts.secure_cookies);
    assert!(tls_live.accounts.secure_cookies);
    assert_eq!(tls_boot.changed_fields(&plain_boot), ["server.tls"]);
    // A reload that adds `server.tls` serves plain HTTP until the restart,
    // and its cookies stay as they were.
    let (_, reloaded) = tls.split_reloaded(&plain_boot);
    assert!(!reloaded.accounts.secure_cookies);
    let (_, reloaded) = plain.split_reloaded(&tls_boot);
    assert!(reloaded.accounts.secure_cookies);
}

#[test]
fn metrics_listen_must_be_an_address_of_its_own() {
    let yaml = format!(
        "server:\n  admin_listen: 127.0.0.1:9100\n  metrics_listen: 127.0.0.1:9100\n{GOOD}"
    );
    let e = Config::from_yaml(&yaml, "t.yaml").unwrap_err().to_string();
    assert!(
        e.contains("server.metrics_listen") && e.contains("line 3"),
        "{e}"
    );
    let yaml =
        format!("server:\n  metrics_listen: 127.0.0.1:9100\n  side_max_connections: 0\n{GOOD}");
    let e = Config::from_yaml(&yaml, "t.yaml").unwrap_err().to_string();
    assert!(e.contains("server.side_max_connections"), "{e}");
}

/// `GOOD` with these lines under its https:// backend.
fn with_backend_lines(lines: &str) -> String {
    GOOD.replace(
        "        priority: 1\n",
        &format!("        priority: 1\n{lines}"),
    )
}

#[test]
fn backend_tls_and_http2_parse_with_safe_defaults() {
    let c = Config::from_yaml(GOOD, "t.yaml").unwrap();
    let b = &c.pools[0].backends[1];
    assert_eq!((b.tls.as_ref(), b.http2), (None, Http2Mode::Auto));
    let yaml =
        with_backend_lines("        http2: never\n        tls:\n          ca_file: /x.pem\n");
    let c = Config::from_yaml(&yaml, "t.yaml").unwrap();
    let b = &c.pools[0].backends[1];
    assert_eq!(b.http2, Http2Mode::Never);
    let tls = b.tls.as_ref().unwrap();
    assert!(tls.verify, "verification stays on unless turned off");
    assert_eq!(tls.ca_file.as_deref(), Some(std::path::Path::new("/x.pem")));
    assert!(c.warnings().is_empty());

    let e = Config::from_yaml(&with_backend_lines("        http2: sometimes\n"), "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("pools[0].backends[1].http2"), "{e}");
}

#[test]
fn backend_tls_mistakes_name_their_field() {
    // On a plain http:// backend.
    let yaml = GOOD.replace(
        "      - url: http://127.0.0.1:9000\n",
        "      - url: http://127.0.0.1:9000\n        tls: { verify: false }\n",
    );
    let e = Config::from_yaml(&yaml, "t.yaml").unwrap_err().to_string();
    assert!(
        e.contains("pools[0].backends[0].tls") && e.contains("https://") && e.contains("line 7"),
        "{e}"
    );
    // A client certificate without its key, and the other way round.
    let yaml = with_backend_lines("        tls:\n          client_cert_file: /c.pem\n");
    let e = Config::from_yaml(&yaml, "t.yaml").unwrap_err().to_string();
    assert!(
        e.contains("pools[0].backends[1].tls.client_cert_file") && e.contains("client_key_file"),
        "{e}"
    );
    let yaml = with_backend_lines("        tls:\n          client_key_file: /k.pem\n");
    let e = Config::from_yaml(&yaml, "t.yaml").unwrap_err().to_string();
    assert!(
        e.contains("pools[0].backends[1].tls.client_key_file"),
        "{e}"
    );
    let yaml = with_backend_lines("        tls:\n          verfy: false\n");
    let e = Config::from_yaml(&yaml, "t.yaml").unwrap_err().to_string();
    assert!(e.contains("verfy"), "{e}");
}

#[test]
fn backend_tls_files_are_checked_at_load_and_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = tls_pair(dir.path(), "client");
    let (_, other_key) = tls_pair(dir.path(), "other");
    let path = dir.path().join("gateway.yaml");
    let load = |lines: String| {
        std::fs::write(&path, with_backend_lines(&lines)).unwrap();
        (
            Config::load(&path).map(drop).map_err(|e| e.to_string()),
            Config::load_for_reload(&path)
                .map(drop)
                .map_err(|e| e.to_string()),
        )
    };
    let tls = |ca: &std::path::Path, cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "        tls:\n          ca_file: {}\n          client_cert_file: {}\n          client_key_file: {}\n",
            ca.display(),
            cert.display(),
            key.display()
        )
    };
    // A self-signed certificate is its own CA.
    let (at_start, on_reload) = load(tls(&cert, &cert, &key));
    assert!(
        at_start.is_ok() && on_reload.is_ok(),
        "{at_start:?} {on_reload:?}"
    );

    let cases = [
        (
            tls(&dir.path().join("nope.pem"), &cert, &key),
            "tls.ca_file",
            "nope.pem",
            11,
        ),
        (
            tls(&key, &cert, &key),
            "tls.ca_file",
            "no PEM certificate",
            11,
        ),
        (
            tls(&cert, &cert, &other_key),
            "tls.client_key_file",
            "does not belong",
            13,
        ),
        (
            tls(&cert, &key, &key),
            "tls.client_cert_file",
            "client.key",
            12,
        ),
    ];
    for (lines, field, says, line) in cases {
        let (at_start, on_reload) = load(lines);
        for e in [at_start.unwrap_err(), on_reload.unwrap_err()] {
            assert!(
                e.contains(&format!("pools[0].backends[1].{field}"))
                    && e.contains(says)
                    && e.contains(&format!("line {line}")),
                "{e}"
            );
        }
    }
}

#[test]
fn verify_false_is_a_warning() {
    let yaml = with_backend_lines("        tls: { verify: false }\n");
    let c = Config::from_yaml(&yaml, "t.yaml").unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("pools[0].backends[1].tls.verify")
            && w[0].contains("https://api.example.com/v1"),
        "{w:?}"
    );
}

#[test]
fn dns_name_servers_are_addresses_with_an_optional_port() {
    let c = Config::from_yaml(
        &format!(
            "{GOOD}dns:\n  refresh_secs: 10\n  nameservers: [\"10.96.0.10\", \"127.0.0.1:5353\"]\n"
        ),
        "t.yaml",
    )
    .unwrap();
    let ns: Vec<String> = c.dns.nameservers.iter().map(|a| a.to_string()).collect();
    assert_eq!(ns, ["10.96.0.10:53", "127.0.0.1:5353"]);
    assert_eq!(c.dns.refresh_secs, 10);
    assert_eq!(
        Config::from_yaml(GOOD, "t.yaml").unwrap().dns.refresh_secs,
        30
    );
    let bad = format!("{GOOD}dns:\n  nameservers: [\"dns.example\"]\n");
    let e = Config::from_yaml(&bad, "t.yaml").unwrap_err().to_string();
    assert!(e.contains("dns.nameservers"), "{e}");
    assert!(e.contains("dns.example"), "{e}");
}
