//! The shipped deployment files are safe as shipped: no known admin token, and
//! the side app (dashboard, admin API, /metrics) not published to every
//! interface. Read as YAML, the way compose and kubectl read them.

use serde_yaml_ng::Value;

fn yaml(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect()
}

/// A compose user who runs `up` without setting a token must not get one
/// that every reader of this repository knows.
#[test]
fn the_compose_file_has_no_known_admin_token_and_keeps_the_side_app_local() {
    let compose = &yaml("deploy/docker-compose.yml")[0];
    let token = compose["x-gateway"]["environment"]["BLUESMINDS_ADMIN_TOKEN"]
        .as_str()
        .unwrap();
    // `${VAR:?message}`: compose fails when the variable is unset or empty.
    assert!(
        token.starts_with("${BLUESMINDS_ADMIN_TOKEN:?"),
        "the admin token has a default: {token}"
    );
    for (name, service) in compose["services"].as_mapping().unwrap() {
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let port = port.as_str().unwrap();
            let container_port = port.rsplit(':').next().unwrap();
            if container_port != "8080" {
                assert!(
                    port.starts_with("127.0.0.1:"),
                    "{name:?} publishes {port} on every interface"
                );
            }
        }
    }
}

/// The example Secret, applied as is, must not start a gateway with a
/// guessable admin token: its value is shorter than the 16 characters the
/// gateway requires.
#[test]
fn the_kubernetes_example_secret_cannot_be_used_as_is() {
    let secret = &yaml("deploy/k8s/secret.example.yaml")[0];
    let token = secret["stringData"]["BLUESMINDS_ADMIN_TOKEN"]
        .as_str()
        .unwrap();
    assert!(token.len() < 16, "a usable example token: {token}");
}
