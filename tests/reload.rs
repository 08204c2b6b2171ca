//! Hot reload of the config file: on change and on SIGHUP, without dropping
//! streams in flight; a broken file is rejected and the old config keeps serving.

mod common;

use std::time::Duration;

use common::{chat_body, fake, gateway, Backend, Gateway, Poll, SseReader};
use fake_upstream::CHUNK_DELAY_HEADER;

/// Up to 20 s, one request every 200 ms: a reload is applied asynchronously.
const RELOAD: Poll = Poll::within(Duration::from_secs(20)).every(Duration::from_millis(200));

/// Sends a request for `model` every 200 ms until it answers `status`.
async fn wait_for_status(gw: &Gateway, key: &str, model: &str, status: u16) {
    let answered = RELOAD
        .try_until(|| async {
            let got = gw
                .chat(key, &chat_body(model, false))
                .await
                .status()
                .as_u16();
            if got == status {
                Ok(())
            } else {
                Err(got)
            }
        })
        .await;
    if let Err(got) = answered {
        panic!(
            "{model} still answers {got}, not {status}; log:\n{}",
            gw.log()
        );
    }
}

fn add_model(gw: &Gateway, model: &str) {
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let changed = text.replacen("models: [", &format!("models: [{model}, "), 1);
    assert_ne!(text, changed);
    std::fs::write(&gw.config_path, changed).unwrap();
}

#[tokio::test]
async fn a_changed_file_is_applied_and_a_broken_one_rejected() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("reload", &[]);
    assert_eq!(
        gw.chat(&key, &chat_body("later-model", false))
            .await
            .status(),
        404
    );

    add_model(&gw, "later-model");
    wait_for_status(&gw, &key, "later-model", 200).await;

    let good = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(&gw.config_path, good.replace("pools:", "pools: [oops")).unwrap();
    let logged = RELOAD
        .try_until(|| async {
            if gw.log().contains("config reload rejected") {
                Ok(())
            } else {
                Err(())
            }
        })
        .await;
    assert!(logged.is_ok(), "no rejection logged:\n{}", gw.log());
    // The previous config keeps serving, the new model included.
    assert_eq!(
        gw.chat(&key, &chat_body("later-model", false))
            .await
            .status(),
        200
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("bluesminds_config_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bluesminds_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sighup_reloads_without_dropping_open_streams() {
    let up = fake().await;
    let mut gw = gateway()
        .server("watch_config: false")
        .backend(Backend::new(up.url()))
        .start()
        .await;
    let key = gw.create_key("reload", &[]);

    // A stream that lasts through the reload (5 chunks, 400 ms apart).
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header(CHUNK_DELAY_HEADER, "400")
        .json(&chat_body("gpt-4o-mini", true))
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(resp);
    assert!(sse.next().await.is_some());

    add_model(&gw, "later-model");
    gw.signal("HUP");
    wait_for_status(&gw, &key, "later-model", 200).await;

    let mut events = Vec::new();
    while let Some(e) = sse.next().await {
        events.push(e);
    }
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "the open stream finished intact"
    );
    let exited = gw.child.as_mut().unwrap().try_wait().unwrap();
    assert!(
        exited.is_none(),
        "SIGHUP must not end the process: {exited:?}"
    );
    assert!(gw.log().contains("SIGHUP: reloading the config"));
}
