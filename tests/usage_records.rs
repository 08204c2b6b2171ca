//! Usage records are never lost or doubled: while the database is down the
//! proxy keeps serving, records overflow the in-memory queue and are read back
//! from the ledger's segments, and once it is back every request is in
//! `usage_records` exactly once (and once in the daily totals). What a record
//! counts is in `usage_counting.rs`; crashes and refused rows are in
//! `usage_ledger.rs`.

mod common;

use common::{chat_body, fake, gateway, sample, Backend};

#[tokio::test]
async fn a_database_outage_under_load_loses_no_usage_record() {
    let up = fake().await;
    // A tiny queue, so the outage overflows it into the ledger's segments.
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .usage("queue_capacity: 8")
        .usage("batch_size: 4")
        .start()
        .await;
    let key = gw.create_key("load", &[]);
    let body = chat_body("gpt-4o-mini", false);
    let pool = gw.db.pool().await;
    for _ in 0..5 {
        assert_eq!(gw.chat(&key, &body).await.status(), 200);
    }
    gw.wait_usage_rows(5).await;

    // The usage table disappears: every write fails until it is back.
    sqlx::query("ALTER TABLE usage_records RENAME TO usage_records_offline")
        .execute(&pool)
        .await
        .unwrap();
    let mut sent = 5;
    for _ in 0..20 {
        let wave = futures_util::future::join_all((0..10).map(|_| gw.chat(&key, &body))).await;
        assert!(
            wave.iter().all(|r| r.status() == 200),
            "the proxy keeps serving"
        );
        sent += 10;
    }
    let metrics = gw.metrics().await;
    assert!(sample(&metrics, "bluesminds_usage_write_errors_total", &[]).unwrap_or(0.0) > 0.0);
    assert!(sample(&metrics, "bluesminds_usage_queue_depth", &[]).unwrap() <= 8.0);
    assert!(sample(&metrics, "bluesminds_usage_ledger_bytes", &[]).unwrap() > 0.0);

    sqlx::query("ALTER TABLE usage_records_offline RENAME TO usage_records")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let rows = gw.wait_usage_rows(sent).await;
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as i64, sent, "every request exactly once");

    let metrics = gw.metrics().await;
    assert_eq!(
        sample(&metrics, "bluesminds_usage_shed_total", &[]).unwrap_or(0.0),
        0.0
    );
    assert!(
        sample(&metrics, "bluesminds_usage_replayed_total", &[]).unwrap_or(0.0) > 0.0,
        "the records beyond the queue came back from the segments: {metrics}"
    );
    // The daily totals count each request once, replays included.
    let pool = gw.db.pool().await;
    let total: i64 = sqlx::query_scalar("SELECT CAST(SUM(requests) AS BIGINT) FROM usage_daily")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, sent);
}

/// `bluesminds usage verify` recomputes every daily total from the records:
/// after real traffic they match; a total edited behind the writer's back (or
/// a record deleted) is reported with both sides, and the command fails.
#[tokio::test]
async fn usage_verify_reports_a_daily_total_that_does_not_match_its_records() {
    let up = fake().await;
    let gw = gateway().backend(Backend::new(up.url())).start().await;
    let a = gw.create_key("a", &[]);
    let b = gw.create_key("b", &[]);
    for key in [&a, &a, &b] {
        let resp = gw.chat(key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(resp.status(), 200);
    }
    let bad = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&b)
        .json(&serde_json::json!({"model": "no-such-model\u{0}", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 404);
    gw.wait_usage_rows(4).await;

    let out = gw.cli(&["usage", "verify"]);
    assert!(out.contains("4 requests in usage_records"), "{out}");
    assert!(
        out.contains("every usage_daily total equals the sum of its records"),
        "{out}"
    );

    let pool = gw.db.pool().await;
    sqlx::query("UPDATE usage_daily SET prompt_tokens = prompt_tokens + 7 WHERE key_id = 1")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM usage_records WHERE id = (SELECT MAX(id) FROM usage_records WHERE key_id = 2 AND status = 200)")
        .execute(&pool)
        .await
        .unwrap();
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let out = gw
        .command()
        .args(["usage", "verify", "--from", &today, "--to", &today])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("2 groups differ"), "{text}");
    assert!(
        text.contains(&format!("DIFFERENT {today} key 1 model gpt-4o-mini")),
        "{text}"
    );
    assert!(
        text.contains("usage_records requests 2 prompt 16 "),
        "{text}"
    );
    assert!(
        text.contains("usage_daily   requests 2 prompt 23 "),
        "{text}"
    );
    assert!(
        text.contains(&format!("DIFFERENT {today} key 2 model gpt-4o-mini")),
        "{text}"
    );

    let bad_day = gw
        .command()
        .args(["usage", "verify", "--from", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(bad_day.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_day.stderr).contains("--from must be YYYY-MM-DD"));
}

/// A TCP relay to the real PostgreSQL that can be cut: while it is down every
/// open connection is reset and new ones are closed at once, as when the
/// database host goes away.
struct Relay {
    port: u16,
    down: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (down, watch) = tokio::sync::watch::channel(false);
        let target = target.to_string();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *watch.borrow() {
                    continue; // dropped: the connection closes at once
                }
                let mut cut = watch.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Self { port, down }
    }

    fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

/// The database unreachable for 30 s under load, then back: the proxy answers
/// throughout, and afterwards every answered request is in `usage_records`
/// exactly once and in the daily totals once. PostgreSQL only: an embedded
/// SQLite file cannot become unreachable (its outage is the test above).
/// Multi-threaded: the relay must keep running while the harness blocks on
/// the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_unreachable_for_30_s_under_load_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::TestDb::new(dir.path()).await;
    if !db.url.starts_with("postgres") {
        eprintln!("skipped: set BLUESMINDS_TEST_POSTGRES to run this test");
        return;
    }
    let (_, rest) = db.url.split_once('@').unwrap();
    let host_port = rest.split_once('/').unwrap().0;
    let relay = Relay::start(host_port).await;
    let relayed = db
        .url
        .replace(host_port, &format!("127.0.0.1:{}", relay.port));
    let up = fake().await;
    let gw = gateway()
        .db_url(&relayed)
        .backend(Backend::new(up.url()))
        .start()
        .await;
    let key = gw.create_key("load", &[]);
    let body = chat_body("gpt-4o-mini", false);
    assert_eq!(gw.chat(&key, &body).await.status(), 200);

    relay.set_down(true);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let client = |_| {
        let (gw, key, body) = (&gw, &key, &body);
        async move {
            let (mut answered, mut other) = (0i64, Vec::new());
            while std::time::Instant::now() < until {
                match gw.chat(key, body).await.status().as_u16() {
                    200 => answered += 1,
                    s => other.push(s),
                }
            }
            (answered, other)
        }
    };
    let results = futures_util::future::join_all((0..4).map(client)).await;
    let answered: i64 = 1 + results.iter().map(|r| r.0).sum::<i64>();
    let refused: Vec<u16> = results.into_iter().flat_map(|r| r.1).collect();
    assert!(refused.is_empty(), "refused during the outage: {refused:?}");
    let metrics = gw.metrics().await;
    assert!(sample(&metrics, "bluesminds_usage_write_errors_total", &[]).unwrap_or(0.0) > 0.0);
    relay.set_down(false);

    let pool = db.pool().await;
    let rows = common::Poll::within(std::time::Duration::from_secs(90))
        .every(std::time::Duration::from_millis(200))
        .try_until(|| async {
            let rows = common::usage_rows(&pool).await;
            if rows.len() as i64 >= answered {
                Ok(rows)
            } else {
                Err(rows.len())
            }
        })
        .await
        .unwrap_or_else(|n| panic!("{n} of {answered} answered requests have a record"));
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as i64, answered, "every request exactly once");
    assert_eq!(rows.len() as i64, answered);
    let total: i64 = sqlx::query_scalar("SELECT CAST(SUM(requests) AS BIGINT) FROM usage_daily")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, answered);
    println!(
        "database outage: {answered} answered in 30 s, {} records",
        rows.len()
    );
}
