//! Subscription billing through Creem, end to end: the real binary, a fake Creem
//! (same paths, fields, auth and webhook signatures as creem.io) and a fake
//! upstream, so a paid plan is seen applying on the proxy.

mod common;
#[path = "common/fake_creem.rs"]
mod fake_creem;

use bluesminds::billing::creem::{
    CancelMode, CheckoutCustomer, CheckoutRequest, CreemClient, CreemError,
};
use common::{chat_body, error_of, fake, gateway, Backend, Gateway, User};
use fake_creem::{sign, FakeCreem};
use fake_upstream::FakeUpstream;
use reqwest::StatusCode;
use serde_json::{json, Value};

const API_KEY: &str = "creem_test_4f1c2b7d9e0a_billing_tests";
const WEBHOOK_SECRET: &str = "whsec_billing_tests_0123456789abcdef";
const PRODUCTS: &[(&str, &str, i64)] =
    &[("prod_starter", "Starter", 900), ("prod_pro", "Pro", 2900)];
const PLANS: &str = "plans:\n  free: { rpm: 2 }\n  starter: { rpm: 10 }\n  pro: { rpm: 100 }\n  enterprise: { rpm: 1000 }\ndefault_plan: free\n";

/// Held while a test binds its listeners: the harness picks the gateway's ports
/// by binding and releasing them, so a fake binding port 0 at the same moment in
/// another test could take one of them.
static BINDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn creem() -> FakeCreem {
    let _bind = BINDING.lock().await;
    FakeCreem::start(API_KEY, WEBHOOK_SECRET, PRODUCTS).await
}

/// A fake upstream, a fake Creem and a gateway selling plans through it with
/// `api_key`.
async fn start(api_key: &str) -> (FakeUpstream, FakeCreem, Gateway) {
    let _bind = BINDING.lock().await;
    let up = fake().await;
    let creem = FakeCreem::start(API_KEY, WEBHOOK_SECRET, PRODUCTS).await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .env("CREEM_API_KEY", api_key)
        .env("CREEM_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .yaml(PLANS)
        .yaml(&format!(
            "billing:\n  api_base: {}\n  success_url: \"https://gateway.example.com/billing?paid=1\"\n  products:\n    starter: prod_starter\n    pro: prod_pro\n",
            creem.url()
        ))
        .start()
        .await;
    (up, creem, gw)
}

fn hook(gw: &Gateway) -> String {
    format!("{}/api/billing/webhook", gw.side)
}

/// What the billing tests ask of a signed-in user.
trait Billing {
    async fn plan(&self) -> String;
    async fn subscription(&self) -> Value;
    async fn checkout(&self, creem: &FakeCreem, plan: &str) -> String;
}

impl Billing for User {
    async fn plan(&self) -> String {
        let me: Value = self.get("/api/auth/me").await.json().await.unwrap();
        me["plan"].as_str().unwrap().to_string()
    }

    async fn subscription(&self) -> Value {
        let resp = self.get("/api/billing/subscription").await;
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json::<Value>().await.unwrap()["subscription"].clone()
    }

    /// Starts a checkout for `plan`; returns the fake's checkout id.
    async fn checkout(&self, creem: &FakeCreem, plan: &str) -> String {
        let resp = self
            .post("/api/billing/checkout", json!({ "plan": plan }))
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = resp.json().await.unwrap();
        creem.checkout_id(v["url"].as_str().unwrap())
    }
}

async fn outcome(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["received"], true);
    v["outcome"].as_str().unwrap().to_string()
}

async fn billing_events(gw: &Gateway) -> i64 {
    use sqlx::Row;
    let pool = gw.db.pool().await;
    let n: i64 = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM billing_events")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    pool.close().await;
    n
}

#[tokio::test]
async fn paying_for_a_plan_applies_its_limits_on_the_proxy_at_once() {
    let (_up, creem, gw) = start(API_KEY).await;

    let plans: Value = reqwest::get(format!("{}/api/billing/plans", gw.side))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plans["billing_enabled"], true);
    assert_eq!(plans["default_plan"], "free");
    let plan = |name: &str| {
        plans["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            plan("pro")["rpm"].clone(),
            plan("pro")["product_id"].clone()
        ),
        (json!(100), json!("prod_pro"))
    );
    assert_eq!(plan("pro")["purchasable"], true);
    assert_eq!(plan("free")["purchasable"], false);
    assert_eq!(plan("free")["is_default"], true);
    assert_eq!(plan("enterprise")["product_id"], Value::Null);

    let ann = User::signup(&gw, "ann@example.com").await;
    assert_eq!(ann.plan().await, "free");
    assert_eq!(ann.subscription().await, Value::Null);
    let key = ann.new_key("billing").await.1;
    let body = chat_body("gpt-4o-mini", false);
    // Free: 2 requests a minute.
    assert_eq!(gw.chat(&key, &body).await.status(), StatusCode::OK);
    assert_eq!(gw.chat(&key, &body).await.status(), StatusCode::OK);
    let refused = gw.chat(&key, &body).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);

    // Checkout: a Creem session for the plan's product, for this user.
    let resp = ann
        .post("/api/billing/checkout", json!({"plan": "pro"}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let url = resp.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        url.starts_with(&format!("{}/checkout/ch_", creem.url())),
        "{url}"
    );
    let checkout_id = creem.checkout_id(&url);
    let calls = creem.calls_to("/v1/checkouts");
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.api_key.as_deref(), Some(API_KEY));
    assert_eq!(call.body["product_id"], "prod_pro");
    assert_eq!(
        call.body["success_url"],
        "https://gateway.example.com/billing?paid=1"
    );
    assert_eq!(call.body["customer"], json!({"email": "ann@example.com"}));
    assert_eq!(
        call.body["metadata"]["bluesminds_user_id"],
        ann.id.to_string()
    );
    assert!(call.body["request_id"].as_str().unwrap().starts_with("bm_"));
    assert_eq!(ann.plan().await, "free", "nothing changes before payment");

    // Ann pays; Creem sends its webhooks.
    let paid = creem.complete_checkout(&checkout_id);
    // Delivered several times at once (Creem retries): applied exactly once.
    let url = hook(&gw);
    let deliveries = (0..6).map(|_| paid.checkout_completed.deliver(&url));
    let mut outcomes = Vec::new();
    for resp in futures_util::future::join_all(deliveries).await {
        outcomes.push(outcome(resp).await);
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            "applied",
            "duplicate",
            "duplicate",
            "duplicate",
            "duplicate",
            "duplicate"
        ]
    );
    assert_eq!(ann.plan().await, "pro");
    // The proxy applies Pro's 100 requests a minute at once, same key, same minute.
    for _ in 0..5 {
        let resp = gw.chat(&key, &body).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "100");
    }
    for ev in [&paid.subscription_active, &paid.subscription_paid] {
        assert_eq!(outcome(ev.deliver(&hook(&gw)).await).await, "applied");
    }
    assert_eq!(ann.plan().await, "pro");
    let sub = ann.subscription().await;
    assert_eq!(sub["plan"], "pro");
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["product_id"], "prod_pro");
    assert_eq!(sub["creem_subscription_id"], paid.subscription_id.as_str());
    assert!(sub["current_period_end"].as_i64().unwrap() > bluesminds::store::now_ms());
    assert_eq!(billing_events(&gw).await, 3);

    // The customer portal, for Ann's Creem customer.
    let resp = ann.post("/api/billing/portal", json!({})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["url"],
        format!("{}/portal/{}", creem.url(), paid.customer_id)
    );
    let portal = creem.calls_to("/v1/customers/billing");
    assert_eq!(portal[0].body, json!({"customer_id": paid.customer_id}));
    assert_eq!(portal[0].api_key.as_deref(), Some(API_KEY));

    // A second subscription is not sold on top of the first.
    let again = ann
        .post("/api/billing/checkout", json!({"plan": "starter"}))
        .await;
    assert_eq!(error_of(again).await.status, 409);
    assert_eq!(creem.calls_to("/v1/checkouts").len(), 1);
}

#[tokio::test]
async fn webhooks_are_signed_idempotent_and_never_go_back_in_time() {
    let (_up, creem, gw) = start(API_KEY).await;
    let ann = User::signup(&gw, "ann@example.com").await;
    let checkout = ann.checkout(&creem, "pro").await;
    let paid = creem.complete_checkout(&checkout);
    let ev = &paid.checkout_completed;
    let url = hook(&gw);

    // Forgeries: no signature, the wrong secret, a changed body, not hex.
    let forged = [
        ev.deliver_with(&url, None, &ev.body).await,
        ev.deliver_with(
            &url,
            Some(&sign("whsec_someone_else", ev.body.as_bytes())),
            &ev.body,
        )
        .await,
        ev.deliver_with(
            &url,
            Some(&ev.signature),
            &ev.body.replace("prod_pro", "prod_starter"),
        )
        .await,
        ev.deliver_with(&url, Some("not a signature"), &ev.body)
            .await,
        ev.deliver_with(&url, Some(&ev.signature), "{").await,
    ];
    for resp in forged {
        assert_eq!(
            error_of(resp).await.status_and_code(),
            (401, "invalid_signature")
        );
    }
    assert_eq!(billing_events(&gw).await, 0, "nothing recorded");
    assert_eq!(ann.plan().await, "free");
    assert_eq!(ann.subscription().await, Value::Null);

    assert_eq!(outcome(ev.deliver(&url).await).await, "applied");
    assert_eq!(ann.plan().await, "pro");
    assert_eq!(billing_events(&gw).await, 1);

    // A redelivery of the same event changes nothing: after an admin moved Ann to
    // Starter, replaying the Pro checkout leaves her there.
    gw.cli(&[
        "users",
        "set-plan",
        "--email",
        "ann@example.com",
        "--plan",
        "starter",
    ]);
    assert_eq!(ann.plan().await, "starter");
    assert_eq!(outcome(ev.deliver(&url).await).await, "duplicate");
    assert_eq!(ann.plan().await, "starter");
    assert_eq!(billing_events(&gw).await, 1);

    // Out of order: Ann moves to Starter, then back to Pro; Creem delivers the
    // newer update first. The older one must not win.
    let to_starter = creem.change_product(&paid.subscription_id, "prod_starter");
    let to_pro = creem.change_product(&paid.subscription_id, "prod_pro");
    assert!(to_starter.created_at < to_pro.created_at);
    assert_eq!(outcome(to_pro.deliver(&url).await).await, "applied");
    assert_eq!(ann.plan().await, "pro");
    assert_eq!(outcome(to_starter.deliver(&url).await).await, "ignored");
    assert_eq!(ann.plan().await, "pro");
    assert_eq!(ann.subscription().await["product_id"], "prod_pro");
    // So are the purchase's own earlier events, delivered late.
    assert_eq!(
        outcome(paid.subscription_active.deliver(&url).await).await,
        "ignored"
    );

    // Unknown event types are acknowledged, logged and ignored.
    let payout = creem.sign_event(
        "payout.created",
        json!({"id": "pay_1", "object": "payout", "amount": 3509}),
    );
    assert_eq!(outcome(payout.deliver(&url).await).await, "unhandled");
    let future = creem.sign_event(
        "subscription.some_new_event",
        json!({"id": paid.subscription_id}),
    );
    assert_eq!(outcome(future.deliver(&url).await).await, "unhandled");
    assert_eq!(ann.plan().await, "pro");
    assert!(
        gw.log().contains("unhandled Creem event type"),
        "{}",
        gw.log()
    );

    // An event for nobody we know is acknowledged, not applied, not recorded (a
    // resend may find the user later).
    let before = billing_events(&gw).await;
    let stranger = creem.sign_event(
        "subscription.paid",
        json!({"id": "sub_unknown", "object": "subscription", "product": {"id": "prod_pro"},
               "customer": {"id": "cust_unknown"}, "status": "active",
               "metadata": {"bluesminds_user_id": "999999"}}),
    );
    assert_eq!(outcome(stranger.deliver(&url).await).await, "ignored");
    assert_eq!(billing_events(&gw).await, before);
    assert_eq!(ann.plan().await, "pro");
}

#[tokio::test]
async fn cancel_expiry_and_refund_go_back_to_the_default_plan() {
    let (_up, creem, gw) = start(API_KEY).await;
    let url = hook(&gw);
    let ann = User::signup(&gw, "ann@example.com").await;
    let key = ann.new_key("billing").await.1;
    let body = chat_body("gpt-4o-mini", false);

    let first = creem.complete_checkout(&ann.checkout(&creem, "pro").await);
    assert_eq!(
        outcome(first.checkout_completed.deliver(&url).await).await,
        "applied"
    );
    assert_eq!(ann.plan().await, "pro");
    for _ in 0..4 {
        assert_eq!(gw.chat(&key, &body).await.status(), StatusCode::OK);
    }

    // Canceled: back to Free, and the proxy holds Ann to Free's 2 a minute at once.
    assert_eq!(
        outcome(creem.cancel(&first.subscription_id).deliver(&url).await).await,
        "applied"
    );
    assert_eq!(ann.plan().await, "free");
    assert_eq!(ann.subscription().await["status"], "canceled");
    let refused = gw.chat(&key, &body).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // A late payment event of the canceled subscription does not bring Pro back.
    assert_eq!(
        outcome(first.subscription_paid.deliver(&url).await).await,
        "ignored"
    );
    assert_eq!(ann.plan().await, "free");

    // Ann subscribes again (Starter): the checkout reuses her Creem customer.
    let second = creem.complete_checkout(&ann.checkout(&creem, "starter").await);
    let checkouts = creem.calls_to("/v1/checkouts");
    assert_eq!(
        checkouts.last().unwrap().body["customer"],
        json!({"id": first.customer_id})
    );
    assert_eq!(second.customer_id, first.customer_id);
    assert_eq!(
        outcome(second.checkout_completed.deliver(&url).await).await,
        "applied"
    );
    assert_eq!(ann.plan().await, "starter");
    // The old subscription's expiry, arriving now, does not end the new one.
    assert_eq!(
        outcome(creem.expire(&first.subscription_id).deliver(&url).await).await,
        "ignored"
    );
    assert_eq!(ann.plan().await, "starter");
    // A renewal keeps the plan; then the subscription expires unpaid.
    assert_eq!(
        outcome(creem.renew(&second.subscription_id).deliver(&url).await).await,
        "applied"
    );
    assert_eq!(ann.plan().await, "starter");
    assert_eq!(
        outcome(creem.expire(&second.subscription_id).deliver(&url).await).await,
        "applied"
    );
    assert_eq!(ann.plan().await, "free");
    assert_eq!(ann.subscription().await["status"], "expired");

    // A third time, refunded in full: back to Free.
    let third = creem.complete_checkout(&ann.checkout(&creem, "pro").await);
    assert_eq!(
        outcome(third.subscription_paid.deliver(&url).await).await,
        "applied"
    );
    assert_eq!(ann.plan().await, "pro");
    assert_eq!(
        outcome(creem.refund(&third.subscription_id).deliver(&url).await).await,
        "applied"
    );
    assert_eq!(ann.plan().await, "free");
    let sub = ann.subscription().await;
    assert_eq!(
        (sub["status"].clone(), sub["plan"].clone()),
        (json!("refunded"), json!("free"))
    );
}

#[tokio::test]
async fn the_creem_client_reads_and_cancels_subscriptions() {
    let creem = creem().await;
    let client = CreemClient::new(&creem.url(), API_KEY);
    let checkout = client
        .create_checkout(&CheckoutRequest {
            product_id: "prod_starter",
            request_id: "req_1",
            success_url: None,
            customer: CheckoutCustomer {
                id: None,
                email: Some("bob@example.com"),
            },
            metadata: json!({"bluesminds_user_id": "7"}),
        })
        .await
        .unwrap();
    assert_eq!(checkout.request_id.as_deref(), Some("req_1"));
    assert_eq!(checkout.status.as_deref(), Some("pending"));
    let paid = creem.complete_checkout(&checkout.id);

    let sub = client.subscription(&paid.subscription_id).await.unwrap();
    assert_eq!(
        (sub.id.as_str(), sub.status.as_str()),
        (paid.subscription_id.as_str(), "active")
    );
    assert_eq!(sub.product_id().as_deref(), Some("prod_starter"));
    assert_eq!(
        sub.customer_id().as_deref(),
        Some(paid.customer_id.as_str())
    );
    assert!(sub.current_period_end_ms().unwrap() > bluesminds::store::now_ms());
    let get = creem.calls_to("/v1/subscriptions");
    assert_eq!(
        get[0].query.as_deref(),
        Some(format!("subscription_id={}", paid.subscription_id).as_str())
    );

    let canceled = client
        .cancel_subscription(&paid.subscription_id, CancelMode::Scheduled)
        .await
        .unwrap();
    assert_eq!(canceled.status, "scheduled_cancel");
    let path = format!("/v1/subscriptions/{}/cancel", paid.subscription_id);
    let cancel = creem.calls_to(&path);
    assert_eq!(cancel[0].body, json!({"mode": "scheduled"}));
    assert_eq!(cancel[0].api_key.as_deref(), Some(API_KEY));
    let canceled = client
        .cancel_subscription(&paid.subscription_id, CancelMode::Immediate)
        .await
        .unwrap();
    assert_eq!(canceled.status, "canceled");
    assert_eq!(creem.subscription_status(&paid.subscription_id), "canceled");

    let link = client
        .customer_portal_link(&paid.customer_id)
        .await
        .unwrap();
    assert!(link.starts_with(&creem.url()));

    // Creem's errors come back with their status and messages.
    match client.subscription("sub_nope").await {
        Err(CreemError::Api {
            status: 404,
            messages,
            trace_id,
            ..
        }) => {
            assert_eq!(messages, ["Subscription not found"]);
            assert!(trace_id.is_some());
        }
        other => panic!("{other:?}"),
    }
    let wrong = CreemClient::new(&creem.url(), "creem_test_wrong");
    assert!(matches!(
        wrong.subscription(&paid.subscription_id).await,
        Err(CreemError::Api { status: 403, .. })
    ));
    let down = CreemClient::new("http://127.0.0.1:1", API_KEY);
    assert!(matches!(
        down.subscription("sub_x").await,
        Err(CreemError::Transport(_))
    ));
}

#[tokio::test]
async fn checkout_errors_are_clear() {
    // The gateway's Creem key is wrong: Creem refuses it.
    let (_up, creem, gw) = start("creem_test_revoked_key").await;
    let ann = User::signup(&gw, "ann@example.com").await;

    let anonymous = reqwest::Client::new()
        .post(format!("{}/api/billing/checkout", gw.side))
        .json(&json!({"plan": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(anonymous).await.status, 401);
    let no_csrf = ann
        .http
        .post(format!("{}/api/billing/checkout", gw.side))
        .json(&json!({"plan": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(no_csrf).await.status, 403);
    let e = error_of(
        ann.post("/api/billing/checkout", json!({"plan": "gold"}))
            .await,
    )
    .await;
    assert_eq!(e.status, 400);
    assert!(e.message().contains("gold"), "{e:?}");
    let e = error_of(
        ann.post("/api/billing/checkout", json!({"plan": "free"}))
            .await,
    )
    .await;
    assert_eq!(e.status, 400);
    assert!(e.message().contains("not sold"), "{e:?}");
    assert!(creem.calls().is_empty(), "nothing reached Creem");

    let e = error_of(
        ann.post("/api/billing/checkout", json!({"plan": "pro"}))
            .await,
    )
    .await;
    assert_eq!(e.status_and_code(), (502, "billing_provider_error"));
    assert!(e.message().contains("403"), "{e:?}");
    assert!(!e.message().contains("creem_test_revoked_key"), "{e:?}");
    assert_eq!(
        creem.calls()[0].api_key.as_deref(),
        Some("creem_test_revoked_key")
    );

    let e = error_of(ann.post("/api/billing/portal", json!({})).await).await;
    assert_eq!(e.status_and_code(), (404, "not_found"));
}

#[tokio::test]
async fn without_a_billing_section_plans_are_not_sold() {
    let _bind = BINDING.lock().await;
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .yaml(PLANS)
        .start()
        .await;
    drop(_bind);
    let plans: Value = reqwest::get(format!("{}/api/billing/plans", gw.side))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plans["billing_enabled"], false);
    assert_eq!(plans["data"].as_array().unwrap().len(), 4);
    assert!(plans["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["purchasable"] == false && p["product_id"].is_null()));

    let ann = User::signup(&gw, "ann@example.com").await;
    for path in ["/api/billing/checkout", "/api/billing/portal"] {
        let e = error_of(ann.post(path, json!({"plan": "pro"})).await).await;
        assert_eq!(e.status_and_code(), (404, "billing_disabled"), "{path}");
        assert!(e.message().contains("not enabled"), "{e:?}");
    }
    let body = r#"{"id":"evt_1","eventType":"checkout.completed","created_at":1,"object":{}}"#;
    let webhook = reqwest::Client::new()
        .post(format!("{}/api/billing/webhook", gw.side))
        .header("creem-signature", sign(WEBHOOK_SECRET, body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(webhook).await.code(), "billing_disabled");
    let sub: Value = ann
        .get("/api/billing/subscription")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        sub,
        json!({"plan": "free", "billing_enabled": false, "subscription": null})
    );
    assert_eq!(ann.plan().await, "free");
}

/// A chargeback (`dispute.created`) was an unknown event: the subscriber kept
/// the paid plan while their bank took the money back. It ends access now.
#[tokio::test]
async fn a_chargeback_puts_the_subscriber_back_on_the_free_plan() {
    let (_up, creem, gw) = start(API_KEY).await;
    let url = hook(&gw);
    let ann = User::signup(&gw, "ann@example.com").await;
    let paid = creem.complete_checkout(&ann.checkout(&creem, "pro").await);
    assert_eq!(
        outcome(paid.checkout_completed.deliver(&url).await).await,
        "applied"
    );
    assert_eq!(ann.plan().await, "pro");
    assert_eq!(
        outcome(creem.dispute(&paid.subscription_id).deliver(&url).await).await,
        "applied"
    );
    assert_eq!(ann.plan().await, "free");
    assert_eq!(ann.subscription().await["status"], "disputed");
}
