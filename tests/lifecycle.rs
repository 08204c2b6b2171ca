//! The gateway process's life: a bad config fails at start naming the field and
//! line; SIGTERM makes `/readyz` refuse at once, drains, flushes every usage
//! record and exits cleanly. (Hot reload is in `reload.rs`.)

mod common;

use std::time::Duration;

use common::{chat_body, fake, free_port, gateway, Backend, Poll};

/// Tests start gateways side by side, each on ports from `free_port`: a port
/// given twice would let one gateway's requests reach another (a 404 from the
/// other's side app where a 502 was due, seen in CI).
#[test]
fn free_port_never_gives_the_same_port_twice() {
    let ports: Vec<u16> = (0..2000).map(|_| free_port()).collect();
    let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(distinct.len(), ports.len());
}

#[tokio::test]
async fn invalid_config_fails_at_start_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "pools:\n  - name: p\n    models: [m]\n    backends:\n      - url: http://127.0.0.1:1\n        weight: 0\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::bin())
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pools[0].backends[0].weight"), "{err}");
    assert!(err.contains("line 6"), "{err}");
}

#[tokio::test]
async fn sigterm_makes_readyz_refuse_while_the_process_drains() {
    let up = fake().await;
    let mut gw = gateway().backend(Backend::new(up.url())).start().await;
    let client = reqwest::Client::new();
    let readyz = format!("{}/readyz", gw.side);
    assert_eq!(client.get(&readyz).send().await.unwrap().status(), 200);
    gw.signal("TERM");
    // The grace period (1 s in tests) and the usage flush keep the process up a
    // while; load balancers must see it go at once.
    Poll::within(Duration::from_secs(1))
        .until_ok("/readyz to refuse within a second of SIGTERM", || async {
            let resp = client.get(&readyz).send().await.unwrap();
            if resp.status() == 503 {
                assert_eq!(resp.text().await.unwrap(), "shutting down");
                Ok(())
            } else {
                Err(format!("/readyz still {}", resp.status()))
            }
        })
        .await;
    let status = gw.terminate();
    assert!(status.success(), "exit status {status}; log:\n{}", gw.log());
}

#[tokio::test]
async fn sigterm_flushes_usage_and_exits_cleanly() {
    let up = fake().await;
    let mut gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("test", &[]);
    for _ in 0..5 {
        let r = gw.chat(&key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(r.status(), 200);
    }
    let status = gw.terminate();
    assert!(status.success(), "exit status {status}; log:\n{}", gw.log());
    gw.wait_usage_rows(5).await;
}
