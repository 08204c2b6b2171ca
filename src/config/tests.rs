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
