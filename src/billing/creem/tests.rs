use super::*;

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn signatures() {
    let body = br#"{"id":"evt_1","eventType":"checkout.completed"}"#;
    let sig = sign("whsec_test", body);
    assert!(verify_signature(b"whsec_test", body, &sig));
    assert!(verify_signature(b"whsec_test", body, &sig.to_uppercase()));
    assert!(!verify_signature(b"whsec_other", body, &sig));
    assert!(!verify_signature(b"whsec_test", b"{}", &sig));
    assert!(!verify_signature(b"whsec_test", body, ""));
    assert!(!verify_signature(b"whsec_test", body, "not hex"));
    assert!(!verify_signature(b"whsec_test", body, &sig[..32]));
}

#[test]
fn reads_documented_payloads() {
    // Shapes from https://docs.creem.io/learn/webhooks/event-types.
    let checkout: WebhookEvent = serde_json::from_value(serde_json::json!({
        "id": "evt_5WHHcZPv7VS0YUsberIuOz",
        "eventType": "checkout.completed",
        "created_at": 1728734325927_i64,
        "object": {
            "id": "ch_4l0N34kxo16AhRKUHFUuXr", "object": "checkout",
            "order": {"id": "ord_1", "customer": "cust_1", "product": "prod_1", "status": "paid"},
            "product": {"id": "prod_1", "billing_type": "recurring"},
            "customer": {"id": "cust_1", "email": "a@example.com"},
            "subscription": {"id": "sub_1", "object": "subscription", "product": "prod_1",
                              "customer": "cust_1", "status": "active"},
            "status": "completed",
            "metadata": {"bluesminds_user_id": "42"}
        }
    }))
    .unwrap();
    let EventMeaning::Subscription(e) = checkout.meaning(0) else {
        panic!("not read")
    };
    assert_eq!(e.user_id, Some(42));
    assert_eq!(e.customer_id.as_deref(), Some("cust_1"));
    assert_eq!(e.subscription_id.as_deref(), Some("sub_1"));
    assert_eq!(e.product_id.as_deref(), Some("prod_1"));
    assert_eq!((e.status.as_str(), e.at), ("active", 1728734325927));

    let expired: WebhookEvent = serde_json::from_value(serde_json::json!({
        "id": "evt_V5CxhipUu10BYonO2Vshb", "eventType": "subscription.expired",
        "created_at": 1734463872058_i64,
        "object": {"id": "sub_7", "object": "subscription", "product": {"id": "prod_3"},
                    "customer": {"id": "cust_3"}, "status": "active",
                    "current_period_end_date": "2024-12-16T12:39:47.000Z"}
    }))
    .unwrap();
    let EventMeaning::Subscription(e) = expired.meaning(0) else {
        panic!("not read")
    };
    assert_eq!((e.intent, e.status.as_str()), (Intent::End, "expired"));
    assert_eq!(e.period_end, Some(1734352787000));

    let refund: WebhookEvent = serde_json::from_value(serde_json::json!({
        "id": "evt_61eTsJHUgInFw2BQKhTiPV", "eventType": "refund.created",
        "created_at": 1728734351631_i64,
        "object": {"id": "ref_1", "object": "refund", "refund_amount": 600,
                    "transaction": {"id": "tran_1", "amount_paid": 1210, "refunded_amount": 600,
                                    "status": "partially_refunded", "subscription": "sub_1"},
                    "subscription": {"id": "sub_1", "product": "prod_1", "customer": "cust_1"},
                    "checkout": {"metadata": {"bluesminds_user_id": 7}},
                    "customer": {"id": "cust_1"}}
    }))
    .unwrap();
    let EventMeaning::Subscription(e) = refund.meaning(0) else {
        panic!("not read")
    };
    assert_eq!(e.intent, Intent::Refund { full: false });
    assert_eq!(e.user_id, Some(7));

    // A chargeback of a one-time payment has no plan to end.
    let dispute: WebhookEvent = serde_json::from_value(
        serde_json::json!({"id": "evt_d", "eventType": "dispute.created", "object": {"object": "dispute"}}),
    )
    .unwrap();
    assert!(matches!(dispute.meaning(0), EventMeaning::NotApplicable(_)));
    let other: WebhookEvent = serde_json::from_value(
        serde_json::json!({"id": "evt_x", "eventType": "payout.created", "object": {}}),
    )
    .unwrap();
    assert_eq!(other.meaning(0), EventMeaning::Unknown);
}

#[test]
fn api_errors_keep_creems_words() {
    let e = api_error(
            reqwest::StatusCode::BAD_REQUEST,
            br#"{"trace_id":"t-1","status":400,"error":"Bad Request","message":["product_id must be a string"],"timestamp":1}"#,
        );
    assert_eq!(
        e.to_string(),
        "Creem answered 400 Bad Request: product_id must be a string (trace_id t-1)"
    );
    assert_eq!(url_path_segment("sub_1/../x"), "sub_1%2F..%2Fx");
}
