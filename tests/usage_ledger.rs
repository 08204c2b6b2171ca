//! The usage ledger against a crash, poison and a database that stays down:
//! every answered request has its record after a SIGKILL and a restart; text
//! a client chooses never stops the writer; a row the database refuses is
//! quarantined while the rest is written; a full ledger refuses new requests
//! instead of serving them unrecorded.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{chat_body, fake, gateway, sample, usage_rows, Backend, Gateway, Poll};

/// Clients sending chat requests (every third one streaming) until `stop`;
/// returns the request ids of the answers they received whole.
async fn load(url: String, key: String, clients: usize, stop: Arc<AtomicBool>) -> Vec<String> {
    let answered = Arc::new(Mutex::new(Vec::new()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, url, key) = (http.clone(), url.clone(), key.clone());
            let (stop, answered) = (stop.clone(), answered.clone());
            tokio::spawn(async move {
                let mut n = c;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = chat_body("gpt-4o-mini", n % 3 == 0);
                    let Ok(resp) = http.post(&url).bearer_auth(&key).json(&body).send().await
                    else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
                    let ok = resp.status() == 200;
                    // Whole only if the body arrived to its end.
                    if ok && resp.bytes().await.is_ok() {
                        answered.lock().unwrap().push(id);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let ids = answered.lock().unwrap().clone();
    ids
}

async fn recorded_ids(gw: &Gateway) -> HashSet<String> {
    let pool = gw.db.pool().await;
    let ids = usage_rows(&pool)
        .await
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    pool.close().await;
    ids
}

async fn daily_requests(gw: &Gateway) -> i64 {
    let pool = gw.db.pool().await;
    let total: Option<i64> =
        sqlx::query_scalar("SELECT CAST(SUM(requests) AS BIGINT) FROM usage_daily")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    total.unwrap_or(0)
}

#[tokio::test]
async fn a_sigkill_under_load_loses_no_answered_request() {
    let up = fake().await;
    let mut gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("load", &[]);
    let mut answered = Vec::new();
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = tokio::spawn(load(
            gw.url("/v1/chat/completions"),
            key.clone(),
            16,
            stop.clone(),
        ));
        // Long enough for hundreds of answers and several batches.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        gw.kill();
        stop.store(true, Ordering::Relaxed);
        let ids = clients.await.unwrap();
        assert!(ids.len() > 50, "round {round}: only {} answers", ids.len());
        answered.extend(ids);
        gw.restart().await;
    }

    let answered: HashSet<String> = answered.into_iter().collect();
    let recorded = Poll::within(Duration::from_secs(60))
        .every(Duration::from_millis(100))
        .try_until(|| async {
            let recorded = recorded_ids(&gw).await;
            if answered.is_subset(&recorded) {
                Ok(recorded)
            } else {
                Err(answered.difference(&recorded).count())
            }
        })
        .await
        .unwrap_or_else(|missing| {
            panic!(
                "{missing} of {} answered requests have no usage record; log:\n{}",
                answered.len(),
                gw.log()
            )
        });
    // benches/crash-loop.sh reads this line.
    println!(
        "crash loop: {} answered, {} records",
        answered.len(),
        recorded.len()
    );
    // A request killed after its record and before the client had every byte
    // is recorded without being answered: at most one per client per kill.
    assert!(
        recorded.len() <= answered.len() + 3 * 16,
        "{} records for {} answers",
        recorded.len(),
        answered.len()
    );
    assert_eq!(
        daily_requests(&gw).await,
        recorded.len() as i64,
        "the daily totals count every record once, replays included"
    );
}

#[tokio::test]
async fn poison_model_names_do_not_stop_usage_writes() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("poison", &[]);
    let http = reqwest::Client::new();
    let chat = |body: String| {
        http.post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let long = "m".repeat(4096);
    let poisons = [
        r#"{"model":"\u0000","messages":[{"role":"user","content":"hi"}]}"#.to_string(),
        format!(r#"{{"model":"{long}","messages":[{{"role":"user","content":"hi"}}]}}"#),
        r#"{"model":"a\u0000b\u001b[31m","messages":[{"role":"user","content":"hi"}]}"#.to_string(),
        // A lone surrogate: not a string any parser can store.
        r#"{"model":"\ud800","messages":[{"role":"user","content":"hi"}]}"#.to_string(),
    ];
    let mut sent = 0;
    for body in &poisons {
        let status = chat(body.clone()).await.unwrap().status();
        assert!(status == 404 || status == 400, "{status} for {body:.60}");
        sent += 1;
    }
    let model_path = http
        .get(gw.url("/v1/models/%00"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(model_path.status(), 404);
    sent += 1;
    for _ in 0..5 {
        let ok = chat(chat_body("gpt-4o-mini", false).to_string())
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        sent += 1;
    }

    let rows = gw.wait_usage_rows(sent).await;
    let pool = gw.db.pool().await;
    let stored: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT model, model_raw FROM usage_records ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (model, raw) in &stored {
        let model = model.as_deref().unwrap_or("");
        assert!(
            model == "gpt-4o-mini" || model == "other" || model.is_empty(),
            "{model:.80}"
        );
        if let Some(raw) = raw {
            assert!(
                raw.chars().count() <= 200 && !raw.chars().any(char::is_control),
                "{raw:?}"
            );
        }
    }
    assert!(stored
        .iter()
        .any(|(_, raw)| raw.as_deref() == Some("ab[31m")));
    assert_eq!(
        rows.iter().filter(|r| r.status == 200).count(),
        5,
        "{rows:#?}"
    );
    let daily_models: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT model FROM usage_daily ORDER BY model")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        daily_models
            .iter()
            .all(|m| ["", "gpt-4o-mini", "other"].contains(&m.as_str())),
        "{daily_models:?}"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        sample(&metrics, "bluesminds_usage_quarantined_total", &[]),
        Some(0.0)
    );
}

/// A trigger that refuses one row, as a constraint would.
async fn refuse_rows_for(gw: &Gateway, model_raw: &str) {
    let pool = gw.db.pool().await;
    let statements = if gw.is_postgres() {
        vec![
            format!(
                "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN \
                 IF NEW.model_raw = '{model_raw}' THEN \
                 RAISE EXCEPTION 'refused by a check' USING ERRCODE = 'check_violation'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql"
            ),
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON usage_records \
             FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
                .to_string(),
        ]
    } else {
        vec![format!(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON usage_records \
             WHEN NEW.model_raw = '{model_raw}' BEGIN SELECT RAISE(ABORT, 'refused by a check'); END"
        )]
    };
    for sql in statements {
        sqlx::query(&sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

#[tokio::test]
async fn a_row_the_database_refuses_is_quarantined_and_the_rest_is_written() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .usage("batch_size: 64")
        .start()
        .await;
    let key = gw.create_key("refused", &[]);
    refuse_rows_for(&gw, "refused-model").await;
    // Sent together, so the refused row shares a batch with good ones.
    let good = chat_body("gpt-4o-mini", false);
    let bad = chat_body("refused-model", false);
    let mut wave: Vec<_> = (0..10).map(|_| gw.chat(&key, &good)).collect();
    wave.insert(5, gw.chat(&key, &bad));
    let answers = futures_util::future::join_all(wave).await;
    assert_eq!(answers.iter().filter(|r| r.status() == 200).count(), 10);
    let refused_id = answers[5].headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();

    let rows = gw.wait_usage_rows(10).await;
    assert!(rows.iter().all(|r| r.request_id != refused_id));
    let quarantine =
        std::fs::read_to_string(gw.dir.path().join("usage-ledger/quarantine.jsonl")).unwrap();
    assert_eq!(quarantine.lines().count(), 1, "{quarantine}");
    let line: serde_json::Value = serde_json::from_str(quarantine.trim()).unwrap();
    assert_eq!(line["record"]["request_id"], refused_id.as_str());
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("refused by a check"),
        "{line}"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        sample(&metrics, "bluesminds_usage_quarantined_total", &[]),
        Some(1.0)
    );

    // The writer goes on: later requests are recorded too.
    assert_eq!(gw.chat(&key, &good).await.status(), 200);
    gw.wait_usage_rows(11).await;
    assert_eq!(daily_requests(&gw).await, 11);
}

#[tokio::test]
async fn a_full_ledger_refuses_new_requests_until_the_database_is_back() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .usage("queue_capacity: 16")
        .usage("ledger_segment_mib: 1")
        .usage("ledger_max_mib: 2")
        .start()
        .await;
    let key = gw.create_key("full", &[]);
    let pool = gw.db.pool().await;
    sqlx::query("ALTER TABLE usage_records RENAME TO usage_records_offline")
        .execute(&pool)
        .await
        .unwrap();

    // About 3,000 records fill a 1 MiB segment; the second one fills the budget.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let body = chat_body("gpt-4o-mini", false);
    let mut served = 0i64;
    let mut refused = None;
    'fill: for _ in 0..400 {
        let wave = futures_util::future::join_all((0..32).map(|_| {
            http.post(gw.url("/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&body)
                .send()
        }))
        .await;
        for r in wave {
            let r = r.unwrap();
            match r.status().as_u16() {
                200 => served += 1,
                503 => {
                    let retry_after = r.headers().get("retry-after").cloned();
                    refused = Some((retry_after, r.text().await.unwrap()));
                }
                s => panic!("unexpected {s}"),
            }
        }
        if refused.is_some() {
            break 'fill;
        }
    }
    let (retry_after, text) = refused.expect("the ledger filled up");
    assert!(retry_after.is_some());
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], "usage_ledger_full", "{text}");
    let metrics = gw.metrics().await;
    assert_eq!(
        sample(&metrics, "bluesminds_usage_ledger_full", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "bluesminds_usage_shed_total", &[]),
        Some(0.0)
    );
    assert!(gw.log().contains("usage ledger full"));

    sqlx::query("ALTER TABLE usage_records_offline RENAME TO usage_records")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    // Requests in flight at the refusal were still served and recorded.
    let served_total = Poll::within(Duration::from_secs(60))
        .every(Duration::from_millis(200))
        .try_until(|| async {
            let r = http
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                Ok(())
            } else {
                Err(r.status())
            }
        })
        .await;
    assert!(
        served_total.is_ok(),
        "accepting again once the ledger drained"
    );
    // Every 200 (the waves' and the last one) has its record, and nothing else.
    let expected = served + 1;
    let recorded = Poll::within(Duration::from_secs(60))
        .every(Duration::from_millis(200))
        .try_until(|| async {
            let n = recorded_ids(&gw).await.len() as i64;
            if n >= expected {
                Ok(n)
            } else {
                Err(n)
            }
        })
        .await;
    assert_eq!(recorded, Ok(expected), "records for {expected} answers");
    assert_eq!(daily_requests(&gw).await, expected);
}

/// Another writer holding the database's write lock for a moment (an
/// operator's `sqlite3` session, the dashboard) makes the usage writer wait,
/// not fail: no write error, every row once.
#[tokio::test]
async fn usage_waits_for_another_writer_instead_of_failing() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let key = gw.create_key("busy", &[]);
    let pool = gw.db.pool().await;
    let mut holder = pool.acquire().await.unwrap();
    let lock: &[&str] = if gw.is_postgres() {
        &["BEGIN", "LOCK TABLE usage_daily IN EXCLUSIVE MODE"]
    } else {
        &["BEGIN IMMEDIATE"]
    };
    for sql in lock {
        sqlx::query(sql).execute(&mut *holder).await.unwrap();
    }
    let body = chat_body("gpt-4o-mini", false);
    for _ in 0..20 {
        assert_eq!(gw.chat(&key, &body).await.status(), 200);
    }
    // Long enough for the writer to have tried (it lingers 50 ms), well
    // within SQLite's busy timeout (5 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(usage_rows(&pool).await.len(), 0, "written through the lock");
    sqlx::query("COMMIT").execute(&mut *holder).await.unwrap();
    drop(holder);

    let rows = gw.wait_usage_rows(20).await;
    assert_eq!(rows.len(), 20);
    assert_eq!(daily_requests(&gw).await, 20);
    let metrics = gw.metrics().await;
    assert_eq!(
        sample(&metrics, "bluesminds_usage_write_errors_total", &[]),
        Some(0.0)
    );
}
