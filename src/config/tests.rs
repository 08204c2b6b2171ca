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
