use super::*;

fn ask(rpm: Option<u64>, tpm: Option<u64>, conc: Option<u64>, tokens: u64) -> Ask {
    Ask {
        key_id: 1,
        key: LimitSettings {
            rpm,
            tpm,
            concurrency: conc,
        },
        user: None,
        tokens,
    }
}

#[test]
fn exactly_the_limit_is_admitted() {
    let l = Limiter::new();
    let a = ask(Some(5), None, None, 0);
    let results: Vec<_> = (0..20).map(|_| l.admit(&a)).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
    let remaining: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|p| p.info.requests.unwrap().remaining)
        .collect();
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    let d = results[5].as_ref().unwrap_err();
    assert_eq!((d.kind, d.limit), (LimitKind::Requests, 5));
    // One request refills every 12 s.
    let wait = d.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(11) && wait <= Duration::from_secs(12),
        "{wait:?}"
    );
}

#[test]
fn user_limit_spans_keys_and_a_denial_debits_nothing() {
    let l = Limiter::new();
    let user = Some((
        7,
        LimitSettings {
            rpm: Some(3),
            ..Default::default()
        },
    ));
    let mut admitted = 0;
    for key_id in [1, 2, 3, 4, 5, 6] {
        let a = Ask {
            key_id,
            key: LimitSettings {
                rpm: Some(10),
                ..Default::default()
            },
            user,
            tokens: 0,
        };
        admitted += l.admit(&a).is_ok() as usize;
    }
    assert_eq!(admitted, 3);
    // Key 4 was refused by its user: its own bucket is untouched.
    let a = Ask {
        key_id: 4,
        key: LimitSettings {
            rpm: Some(10),
            ..Default::default()
        },
        user: None,
        tokens: 0,
    };
    assert_eq!(l.admit(&a).unwrap().info.requests.unwrap().remaining, 9);
}

#[test]
fn concurrency_slots_come_back_when_permits_drop() {
    let l = Limiter::new();
    let a = ask(None, None, Some(2), 0);
    let p1 = l.admit(&a).unwrap();
    let _p2 = l.admit(&a).unwrap();
    assert_eq!(l.admit(&a).unwrap_err().kind, LimitKind::Concurrency);
    drop(p1);
    assert!(l.admit(&a).is_ok());
}

#[test]
fn tokens_are_estimated_then_reconciled() {
    let l = Limiter::new();
    let p = l.admit(&ask(None, Some(1000), None, 600)).unwrap();
    assert_eq!(p.info.tokens.unwrap().remaining, 400);
    let d = l.admit(&ask(None, Some(1000), None, 600)).unwrap_err();
    assert_eq!(d.kind, LimitKind::Tokens);
    p.reconcile(100); // the answer was short: 500 tokens come back
    let p2 = l.admit(&ask(None, Some(1000), None, 600)).unwrap();
    assert!(p2.info.tokens.unwrap().remaining < 400);
    let d = l.admit(&ask(None, Some(1000), None, 5000)).unwrap_err();
    assert_eq!(
        d.retry_after, None,
        "larger than the limit: retrying cannot help"
    );
}

#[test]
fn duration_format_matches_openai() {
    assert_eq!(openai_duration(Duration::from_millis(20)), "20ms");
    assert_eq!(openai_duration(Duration::from_millis(1200)), "2s");
    assert_eq!(openai_duration(Duration::from_secs(360)), "6m0s");
    assert_eq!(openai_duration(Duration::ZERO), "0ms");
    assert_eq!(openai_duration(Duration::from_millis(999)), "999ms");
    assert_eq!(openai_duration(Duration::from_millis(59_500)), "1m0s");
    assert_eq!(openai_duration(Duration::from_secs(3725)), "62m5s");
}

#[test]
fn tokens_are_taken_after_the_request_slot_and_a_refusal_keeps_the_slot_used() {
    let l = Limiter::new();
    let mut p = l.admit(&ask(Some(2), Some(1000), None, 0)).unwrap();
    p.take_tokens(800).unwrap();
    let mut q = l.admit(&ask(Some(2), Some(1000), None, 0)).unwrap();
    let d = q.take_tokens(800).unwrap_err();
    assert_eq!(d.kind, LimitKind::Tokens);
    // Both requests used their slot: a third is refused for requests.
    assert_eq!(
        l.admit(&ask(Some(2), Some(1000), None, 0))
            .unwrap_err()
            .kind,
        LimitKind::Requests
    );
    // The refused estimate was never debited; the first one settles later.
    p.reconcile(100);
    assert!(q.take_tokens(800).is_ok());
}

#[test]
fn the_requests_remaining_stays_what_admission_reported() {
    let l = Limiter::new();
    let mut first = l.admit(&ask(Some(5), Some(1000), None, 0)).unwrap();
    let _second = l.admit(&ask(Some(5), Some(1000), None, 0)).unwrap();
    first.take_tokens(10).unwrap();
    assert_eq!(first.info.requests.unwrap().remaining, 4);
    assert_eq!(first.info.tokens.unwrap().remaining, 990);
}
