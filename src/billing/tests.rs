use super::*;

fn billing() -> BillingConfig {
    BillingConfig {
        api_base: TEST_API_BASE.into(),
        api_key_env: "BM_BILLING_TEST_KEY".into(),
        webhook_secret_env: "BM_BILLING_TEST_SECRET".into(),
        success_url: Some("https://example.com/billing".into()),
        products: [
            ("pro".to_string(), "prod_pro".to_string()),
            ("starter".to_string(), "prod_starter".to_string()),
        ]
        .into(),
    }
}

fn plans() -> BTreeMap<String, PlanConfig> {
    ["free", "starter", "pro", "enterprise"]
        .into_iter()
        .map(|p| (p.to_string(), PlanConfig::default()))
        .collect()
}

#[test]
fn validation_names_the_field() {
    std::env::set_var("BM_BILLING_TEST_KEY", "creem_test_x");
    std::env::set_var("BM_BILLING_TEST_SECRET", "whsec_x");
    assert_eq!(billing().validate(&plans(), Some("free")), Ok(()));
    assert_eq!(billing().validate(&plans(), None), Ok(()));
    let field = |b: BillingConfig| b.validate(&plans(), None).unwrap_err().0;

    let mut b = billing();
    b.products.insert("gold".into(), "prod_gold".into());
    assert_eq!(field(b), "billing.products.gold");
    let mut b = billing();
    b.products.insert("enterprise".into(), "prod_pro".into());
    let (f, m) = b.validate(&plans(), None).unwrap_err();
    assert!(
        f.starts_with("billing.products.") && m.contains("already sells"),
        "{f}: {m}"
    );
    let mut b = billing();
    b.api_base = "ftp://x".into();
    assert_eq!(field(b), "billing.api_base");
    let mut b = billing();
    b.api_base = "https://api.creem.io/v1".into();
    assert_eq!(field(b), "billing.api_base");
    // The API key would cross the network in clear; loopback (a local fake) may.
    let mut b = billing();
    b.api_base = "http://creem.internal.example".into();
    let (f, m) = b.validate(&plans(), None).unwrap_err();
    assert_eq!(f, "billing.api_base");
    assert!(m.contains("plain http"), "{m}");
    for local in [
        "http://127.0.0.1:9000",
        "http://localhost:9000",
        "http://[::1]:9000",
    ] {
        let mut b = billing();
        b.api_base = local.into();
        assert!(b.validate(&plans(), None).is_ok(), "{local}");
    }
    let mut b = billing();
    b.api_key_env = "BM_SURELY_UNSET_BILLING_VAR".into();
    assert_eq!(field(b), "billing.api_key_env");
    let mut b = billing();
    b.success_url = Some("not a url".into());
    assert_eq!(field(b), "billing.success_url");
    let mut b = billing();
    b.products.clear();
    assert_eq!(field(b), "billing.products");
    let mut b = billing();
    b.products.insert("free".into(), "prod_free".into());
    assert_eq!(field(b), "billing.products.free");
    // Without `free` and without `default_plan`, ended subscriptions have nowhere to go.
    let mut without_free = plans();
    without_free.remove("free");
    let e = billing().validate(&without_free, None).unwrap_err();
    assert_eq!(e.0, "billing.products");
    assert_eq!(
        billing()
            .validate(&without_free, Some("starter"))
            .unwrap_err()
            .0,
        "billing.products.starter"
    );
}

#[test]
fn parses_with_defaults_and_rejects_unknown_fields() {
    let b: BillingConfig = serde_yaml_ng::from_str("products: { pro: prod_pro }\n").unwrap();
    assert_eq!(b.api_base, TEST_API_BASE);
    assert_eq!(b.api_key_env, "CREEM_API_KEY");
    assert_eq!(b.webhook_secret_env, "CREEM_WEBHOOK_SECRET");
    assert_eq!(b.plan_of_product("prod_pro"), Some("pro"));
    assert!(serde_yaml_ng::from_str::<BillingConfig>("prodcts: {}\n").is_err());
}

fn event(intent: Intent, sub: &str, product: &str, status: &str, at: i64) -> SubscriptionEvent {
    SubscriptionEvent {
        intent,
        user_id: Some(1),
        customer_id: Some("cust_1".into()),
        subscription_id: Some(sub.into()),
        product_id: Some(product.into()),
        status: status.into(),
        period_end: None,
        at,
    }
}

fn stored(sub: &str, plan: &str, status: &str, at: i64) -> SubscriptionRecord {
    SubscriptionRecord {
        user_id: 1,
        creem_customer_id: Some("cust_1".into()),
        creem_subscription_id: Some(sub.into()),
        product_id: None,
        plan: plan.into(),
        status: status.into(),
        current_period_end: None,
        updated_at: 0,
        last_event_at: at,
    }
}

fn plan_of(d: Decision) -> Option<String> {
    match d {
        Decision::Apply(c) => Some(c.plan),
        Decision::Ignore(_) => None,
    }
}

#[test]
fn decisions() {
    let b = billing();
    let d = |cur: Option<&SubscriptionRecord>, ev: &SubscriptionEvent| {
        plan_of(decide(&b, Some("free"), 1, "free", cur, ev))
    };
    let active = event(Intent::Sync, "sub_a", "prod_pro", "active", 10);
    assert_eq!(d(None, &active).as_deref(), Some("pro"));
    // Older than what was applied: ignored.
    let cur = stored("sub_a", "pro", "active", 20);
    assert_eq!(d(Some(&cur), &active), None);
    // Ends go back to the default plan...
    let end = event(Intent::End, "sub_a", "prod_pro", "canceled", 30);
    assert_eq!(d(Some(&cur), &end).as_deref(), Some("free"));
    // ...unless they end an older subscription while a newer one is active.
    let old_end = event(Intent::End, "sub_old", "prod_pro", "expired", 30);
    assert_eq!(d(Some(&cur), &old_end), None);
    // Unknown products are not guessed.
    let odd = event(Intent::Sync, "sub_a", "prod_other", "active", 30);
    assert_eq!(d(Some(&cur), &odd), None);
    // Partial refunds keep the plan; full ones end it.
    let partial = event(
        Intent::Refund { full: false },
        "sub_a",
        "prod_pro",
        "active",
        30,
    );
    assert_eq!(d(Some(&cur), &partial), None);
    let full = event(
        Intent::Refund { full: true },
        "sub_a",
        "prod_pro",
        "canceled",
        30,
    );
    assert_eq!(d(Some(&cur), &full).as_deref(), Some("free"));
    // An unpaid subscription keeps its plan until it ends.
    let unpaid = event(Intent::Sync, "sub_a", "prod_pro", "unpaid", 30);
    assert_eq!(d(Some(&cur), &unpaid).as_deref(), Some("pro"));
    // Without default_plan, users fall back to "free".
    let e = decide(&b, None, 1, "pro", Some(&cur), &end);
    assert_eq!(plan_of(e).as_deref(), Some("free"));
}
