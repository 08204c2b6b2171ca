//! A fake Creem (creem.io) for the billing tests: the API paths, fields, errors
//! and authentication of https://docs.creem.io, in memory on 127.0.0.1.
//!
//! - `POST /v1/checkouts`, `GET /v1/checkouts?checkout_id=`,
//!   `POST /v1/customers/billing`, `GET /v1/subscriptions?subscription_id=`,
//!   `POST /v1/subscriptions/{id}/cancel`; every call needs `x-api-key` (else 403
//!   `{"trace_id","status","error","timestamp"}`) and is recorded.
//! - The test plays the customer (`complete_checkout`, `change_product`,
//!   `cancel`) and gets the webhook events Creem would send, with the payloads of
//!   https://docs.creem.io/learn/webhooks/event-types, signed as Creem signs them:
//!   the hex HMAC-SHA256 of the raw body under the webhook secret, in the
//!   `creem-signature` header.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "creem-signature";

/// One API call as the fake received it.
#[derive(Debug, Clone)]
pub struct CreemCall {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub api_key: Option<String>,
    pub body: Value,
}

/// A webhook delivery, ready to POST: the exact body and its signature.
#[derive(Debug, Clone)]
pub struct SignedEvent {
    pub id: String,
    pub event_type: String,
    pub created_at: i64,
    pub body: String,
    pub signature: String,
}

impl SignedEvent {
    /// POSTs the event as Creem does.
    pub async fn deliver(&self, webhook_url: &str) -> reqwest::Response {
        self.deliver_with(webhook_url, Some(&self.signature), &self.body)
            .await
    }

    /// POSTs `body` with `signature` (or none), to test forgeries.
    pub async fn deliver_with(
        &self,
        webhook_url: &str,
        signature: Option<&str>,
        body: &str,
    ) -> reqwest::Response {
        let mut req = reqwest::Client::new()
            .post(webhook_url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(sig) = signature {
            req = req.header(SIGNATURE_HEADER, sig);
        }
        req.send().await.expect("the gateway answers")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// What paying a checkout produced.
#[derive(Debug, Clone)]
pub struct Completed {
    pub customer_id: String,
    pub subscription_id: String,
    pub checkout_completed: SignedEvent,
    pub subscription_active: SignedEvent,
    pub subscription_paid: SignedEvent,
}

#[derive(Debug, Clone)]
struct Checkout {
    id: String,
    product: String,
    request_id: Option<String>,
    success_url: Option<String>,
    customer_id: Option<String>,
    customer_email: Option<String>,
    metadata: Value,
    status: String,
    order: Option<String>,
    subscription: Option<String>,
    created_ms: i64,
}

#[derive(Debug, Clone)]
struct Subscription {
    id: String,
    product: String,
    customer: String,
    status: String,
    metadata: Value,
    checkout: String,
    order: String,
    last_transaction: String,
    period_start_ms: i64,
    period_end_ms: i64,
    canceled_at_ms: Option<i64>,
    created_ms: i64,
    updated_ms: i64,
}

struct Inner {
    calls: Vec<CreemCall>,
    products: BTreeMap<String, (String, i64)>,
    customers: BTreeMap<String, (String, i64)>,
    checkouts: BTreeMap<String, Checkout>,
    subscriptions: BTreeMap<String, Subscription>,
    seq: u64,
    clock_ms: i64,
}

struct Shared {
    api_key: String,
    webhook_secret: String,
    base: String,
    inner: Mutex<Inner>,
}

pub struct FakeCreem {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCreem {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const MONTH_MS: i64 = 30 * 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Creem's timestamps: `2024-10-12T11:58:33.097Z`.
fn iso(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap()
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn creem_error(status: StatusCode, messages: &[&str]) -> Response {
    let mut body = json!({
        "trace_id": uuid::Uuid::new_v4().to_string(),
        "status": status.as_u16(),
        "error": status.canonical_reason().unwrap_or(""),
        "timestamp": now_ms(),
    });
    if !messages.is_empty() {
        body["message"] = json!(messages);
    }
    (status, Json(body)).into_response()
}

impl Inner {
    fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}_{}{:06}", uuid::Uuid::new_v4().simple(), self.seq)
            .chars()
            .take(prefix.len() + 1 + 22)
            .collect()
    }

    /// Strictly increasing event times (Creem's `created_at`, unix ms).
    fn tick(&mut self) -> i64 {
        self.clock_ms = (self.clock_ms + 1).max(now_ms());
        self.clock_ms
    }

    fn product_obj(&self, id: &str) -> Value {
        let (name, price) = self.products.get(id).cloned().unwrap_or_default();
        json!({
            "id": id, "object": "product", "name": name, "description": name,
            "image_url": null, "price": price, "currency": "EUR",
            "billing_type": "recurring", "billing_period": "every-month",
            "status": "active", "tax_mode": "exclusive", "tax_category": "saas",
            "default_success_url": "", "created_at": "2024-10-11T11:50:00.182Z",
            "updated_at": "2024-10-11T11:50:00.182Z", "mode": "test"
        })
    }

    fn customer_obj(&self, id: &str) -> Value {
        let (email, created) = self.customers.get(id).cloned().unwrap_or_default();
        json!({
            "id": id, "object": "customer", "email": email, "name": "Test Customer",
            "country": "NL", "created_at": iso(created), "updated_at": iso(created),
            "mode": "test"
        })
    }

    /// The expanded subscription object of subscription webhooks and of
    /// `GET /v1/subscriptions`.
    fn subscription_obj(&self, s: &Subscription) -> Value {
        json!({
            "id": s.id, "object": "subscription",
            "product": self.product_obj(&s.product),
            "customer": self.customer_obj(&s.customer),
            "items": [{
                "object": "subscription_item", "id": format!("sitem_{}", s.id.trim_start_matches("sub_")),
                "product_id": s.product, "price_id": format!("pprice_{}", s.product.trim_start_matches("prod_")),
                "units": 1, "created_at": iso(s.created_ms), "updated_at": iso(s.updated_ms),
                "mode": "test"
            }],
            "collection_method": "charge_automatically",
            "status": s.status,
            "last_transaction_id": s.last_transaction,
            "last_transaction_date": iso(s.period_start_ms),
            "next_transaction_date": iso(s.period_end_ms),
            "current_period_start_date": iso(s.period_start_ms),
            "current_period_end_date": iso(s.period_end_ms),
            "canceled_at": s.canceled_at_ms.map(iso),
            "created_at": iso(s.created_ms),
            "updated_at": iso(s.updated_ms),
            "metadata": s.metadata,
            "mode": "test"
        })
    }

    /// The subscription as nested in other objects: product and customer as ids.
    fn subscription_ref(&self, s: &Subscription) -> Value {
        json!({
            "id": s.id, "object": "subscription", "product": s.product,
            "customer": s.customer, "collection_method": "charge_automatically",
            "status": s.status, "last_transaction_id": s.last_transaction,
            "last_transaction_date": iso(s.period_start_ms),
            "current_period_start_date": iso(s.period_start_ms),
            "current_period_end_date": iso(s.period_end_ms),
            "canceled_at": s.canceled_at_ms.map(iso),
            "created_at": iso(s.created_ms), "updated_at": iso(s.updated_ms),
            "metadata": s.metadata, "mode": "test"
        })
    }

    fn order_obj(&self, c: &Checkout, customer: &str) -> Value {
        let price = self.products.get(&c.product).map_or(0, |p| p.1);
        json!({
            "id": c.order, "customer": customer, "product": c.product,
            "amount": price, "currency": "EUR", "status": "paid", "type": "recurring",
            "created_at": iso(c.created_ms), "updated_at": iso(c.created_ms), "mode": "test"
        })
    }

    fn checkout_entity(&self, c: &Checkout, base: &str) -> Value {
        json!({
            "id": c.id, "mode": "test", "object": "checkout", "status": c.status,
            "request_id": c.request_id, "product": c.product, "units": 1,
            "customer": c.customer_id, "subscription": c.subscription, "custom_fields": [],
            "checkout_url": format!("{base}/checkout/{}", c.id),
            "success_url": c.success_url, "metadata": c.metadata
        })
    }
}

impl FakeCreem {
    /// A fake Creem selling `products` (id, name, price in cents).
    pub async fn start(
        api_key: &str,
        webhook_secret: &str,
        products: &[(&str, &str, i64)],
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            api_key: api_key.into(),
            webhook_secret: webhook_secret.into(),
            base,
            inner: Mutex::new(Inner {
                calls: Vec::new(),
                products: products
                    .iter()
                    .map(|(id, name, price)| (id.to_string(), (name.to_string(), *price)))
                    .collect(),
                customers: BTreeMap::new(),
                checkouts: BTreeMap::new(),
                subscriptions: BTreeMap::new(),
                seq: 0,
                clock_ms: 0,
            }),
        });
        let app = Router::new()
            .route("/v1/checkouts", post(create_checkout).get(get_checkout))
            .route("/v1/customers/billing", post(customer_billing))
            .route("/v1/subscriptions", get(get_subscription))
            .route("/v1/subscriptions/{id}/cancel", post(cancel_subscription))
            .fallback(not_found)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeCreem { shared, task }
    }

    /// The API origin, as `billing.api_base` takes it.
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    pub fn calls(&self) -> Vec<CreemCall> {
        self.shared.inner.lock().unwrap().calls.clone()
    }

    pub fn calls_to(&self, path: &str) -> Vec<CreemCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.path == path)
            .collect()
    }

    /// The checkout id in a `checkout_url` this fake handed out.
    pub fn checkout_id(&self, checkout_url: &str) -> String {
        checkout_url
            .strip_prefix(&format!("{}/checkout/", self.shared.base))
            .unwrap_or_else(|| panic!("{checkout_url} is not one of this fake's checkout URLs"))
            .to_string()
    }

    fn signed(&self, inner: &mut Inner, event_type: &str, object: Value) -> SignedEvent {
        let id = inner.next_id("evt");
        let created_at = inner.tick();
        let body = json!({
            "id": id, "eventType": event_type, "created_at": created_at, "object": object
        })
        .to_string();
        SignedEvent {
            signature: sign(&self.shared.webhook_secret, body.as_bytes()),
            id,
            event_type: event_type.into(),
            created_at,
            body,
        }
    }

    /// Signs an arbitrary event body as Creem would.
    pub fn sign_event(&self, event_type: &str, object: Value) -> SignedEvent {
        let mut inner = self.shared.inner.lock().unwrap();
        self.signed(&mut inner, event_type, object)
    }

    /// The customer pays the checkout: a customer, an order and a subscription are
    /// created, and Creem's three webhooks for it are returned (not yet delivered).
    pub fn complete_checkout(&self, checkout_id: &str) -> Completed {
        let mut guard = self.shared.inner.lock().unwrap();
        let inner = &mut *guard;
        let mut c = inner
            .checkouts
            .get(checkout_id)
            .cloned()
            .unwrap_or_else(|| panic!("no checkout {checkout_id}"));
        assert_eq!(c.status, "pending", "checkout {checkout_id} is not open");
        let now = inner.tick();
        let customer = match &c.customer_id {
            Some(id) => id.clone(),
            None => {
                let email = c.customer_email.clone().unwrap_or_default();
                let found = inner
                    .customers
                    .iter()
                    .find(|(_, (e, _))| *e == email)
                    .map(|(id, _)| id.clone());
                found.unwrap_or_else(|| {
                    let id = inner.next_id("cust");
                    inner.customers.insert(id.clone(), (email, now));
                    id
                })
            }
        };
        let sub_id = inner.next_id("sub");
        c.order = Some(inner.next_id("ord"));
        c.subscription = Some(sub_id.clone());
        c.customer_id = Some(customer.clone());
        c.status = "completed".into();
        let sub = Subscription {
            id: sub_id.clone(),
            product: c.product.clone(),
            customer: customer.clone(),
            status: "active".into(),
            // Creem carries the checkout's metadata to the subscription.
            metadata: c.metadata.clone(),
            checkout: c.id.clone(),
            order: c.order.clone().unwrap(),
            last_transaction: inner.next_id("tran"),
            period_start_ms: now,
            period_end_ms: now + MONTH_MS,
            canceled_at_ms: None,
            created_ms: now,
            updated_ms: now,
        };
        inner.checkouts.insert(c.id.clone(), c.clone());
        inner.subscriptions.insert(sub_id.clone(), sub.clone());
        let checkout_obj = json!({
            "id": c.id, "object": "checkout", "request_id": c.request_id,
            "order": inner.order_obj(&c, &customer),
            "product": inner.product_obj(&c.product),
            "customer": inner.customer_obj(&customer),
            "subscription": inner.subscription_ref(&sub),
            "custom_fields": [], "status": "completed", "metadata": c.metadata,
            "mode": "test"
        });
        let checkout_completed = self.signed(inner, "checkout.completed", checkout_obj);
        let obj = inner.subscription_obj(&sub);
        let subscription_active = self.signed(inner, "subscription.active", obj.clone());
        let subscription_paid = self.signed(inner, "subscription.paid", obj);
        Completed {
            customer_id: customer,
            subscription_id: sub_id,
            checkout_completed,
            subscription_active,
            subscription_paid,
        }
    }

    fn with_subscription<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Inner, &mut Subscription) -> T,
    ) -> T {
        let mut guard = self.shared.inner.lock().unwrap();
        let inner = &mut *guard;
        let mut sub = inner
            .subscriptions
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("no subscription {id}"));
        let out = f(inner, &mut sub);
        inner.subscriptions.insert(id.to_string(), sub);
        out
    }

    /// The customer switches product (in the portal): `subscription.update`.
    pub fn change_product(&self, subscription_id: &str, product: &str) -> SignedEvent {
        self.with_subscription(subscription_id, |inner, s| {
            s.product = product.into();
            s.updated_ms = inner.tick();
            let obj = inner.subscription_obj(s);
            self.signed(inner, "subscription.update", obj)
        })
    }

    /// A renewal was paid: a new period and `subscription.paid`.
    pub fn renew(&self, subscription_id: &str) -> SignedEvent {
        self.with_subscription(subscription_id, |inner, s| {
            s.period_start_ms = s.period_end_ms;
            s.period_end_ms += MONTH_MS;
            s.last_transaction = inner.next_id("tran");
            s.updated_ms = inner.tick();
            let obj = inner.subscription_obj(s);
            self.signed(inner, "subscription.paid", obj)
        })
    }

    /// Canceled now (by the customer or the merchant): `subscription.canceled`.
    pub fn cancel(&self, subscription_id: &str) -> SignedEvent {
        self.with_subscription(subscription_id, |inner, s| {
            let now = inner.tick();
            s.status = "canceled".into();
            s.canceled_at_ms = Some(now);
            s.updated_ms = now;
            let obj = inner.subscription_obj(s);
            self.signed(inner, "subscription.canceled", obj)
        })
    }

    /// The period ended without a payment: `subscription.expired` (Creem still
    /// reports the status as it was, per its sample payload).
    pub fn expire(&self, subscription_id: &str) -> SignedEvent {
        self.with_subscription(subscription_id, |inner, s| {
            s.updated_ms = inner.tick();
            let obj = inner.subscription_obj(s);
            self.signed(inner, "subscription.expired", obj)
        })
    }

    /// The merchant refunds the last payment in full: `refund.created`.
    pub fn refund(&self, subscription_id: &str) -> SignedEvent {
        self.with_subscription(subscription_id, |inner, s| {
            let now = inner.tick();
            s.status = "canceled".into();
            s.canceled_at_ms = Some(now);
            s.updated_ms = now;
            let paid = paid_for(inner, s);
            let mut object = reversal(inner, s, now, "refunded", paid);
            object.extend(json_map(json!({
                "id": inner.next_id("ref"), "object": "refund", "status": "succeeded",
                "refund_amount": paid, "refund_currency": "EUR",
                "reason": "requested_by_customer",
            })));
            self.signed(inner, "refund.created", object.into())
        })
    }

    /// The customer's bank takes a payment back (a chargeback): Creem sends
    /// `dispute.created` with the dispute object, shaped like a refund's.
    pub fn dispute(&self, subscription_id: &str) -> SignedEvent {
        self.with_subscription(subscription_id, |inner, s| {
            let now = inner.tick();
            let paid = paid_for(inner, s);
            let mut object = reversal(inner, s, now, "chargeback", 0);
            object.extend(json_map(json!({
                "id": inner.next_id("disp"), "object": "dispute", "amount": paid,
                "currency": "EUR",
            })));
            self.signed(inner, "dispute.created", object.into())
        })
    }

    pub fn subscription_status(&self, subscription_id: &str) -> String {
        self.shared.inner.lock().unwrap().subscriptions[subscription_id]
            .status
            .clone()
    }
}

fn record(shared: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> bool {
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ok = api_key.as_deref() == Some(shared.api_key.as_str());
    shared.inner.lock().unwrap().calls.push(CreemCall {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        api_key,
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
    });
    ok
}

fn forbidden() -> Response {
    creem_error(StatusCode::FORBIDDEN, &[])
}

/// A JSON object body, or Creem's 400 for anything else.
fn json_body(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
}

fn bad_json() -> Response {
    creem_error(StatusCode::BAD_REQUEST, &["Invalid JSON body"])
}

async fn create_checkout(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !record(&shared, &method, &uri, &headers, &body) {
        return forbidden();
    }
    let b = match json_body(&body) {
        Some(b) => b,
        None => return bad_json(),
    };
    let Some(product) = b["product_id"].as_str() else {
        return creem_error(StatusCode::BAD_REQUEST, &["product_id must be a string"]);
    };
    if let Some(url) = b.get("success_url").filter(|v| !v.is_null()) {
        if !url
            .as_str()
            .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"))
        {
            return creem_error(
                StatusCode::BAD_REQUEST,
                &["success_url must be a valid URL"],
            );
        }
    }
    let mut guard = shared.inner.lock().unwrap();
    let inner = &mut *guard;
    if !inner.products.contains_key(product) {
        return creem_error(StatusCode::NOT_FOUND, &["Product not found"]);
    }
    let customer_id = b["customer"]["id"].as_str().map(str::to_string);
    if let Some(id) = &customer_id {
        if !inner.customers.contains_key(id) {
            return creem_error(StatusCode::NOT_FOUND, &["Customer not found"]);
        }
    }
    let created_ms = inner.tick();
    let c = Checkout {
        id: inner.next_id("ch"),
        product: product.into(),
        request_id: b["request_id"].as_str().map(str::to_string),
        success_url: b["success_url"].as_str().map(str::to_string),
        customer_id,
        customer_email: b["customer"]["email"].as_str().map(str::to_string),
        metadata: b.get("metadata").cloned().unwrap_or(json!({})),
        status: "pending".into(),
        order: None,
        subscription: None,
        created_ms,
    };
    inner.checkouts.insert(c.id.clone(), c.clone());
    Json(inner.checkout_entity(&c, &shared.base)).into_response()
}

async fn get_checkout(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if !record(&shared, &method, &uri, &headers, b"") {
        return forbidden();
    }
    let Some(id) = q.get("checkout_id") else {
        return creem_error(StatusCode::BAD_REQUEST, &["checkout_id must be a string"]);
    };
    let inner = shared.inner.lock().unwrap();
    match inner.checkouts.get(id) {
        Some(c) => Json(inner.checkout_entity(c, &shared.base)).into_response(),
        None => creem_error(StatusCode::NOT_FOUND, &["Checkout not found"]),
    }
}

async fn customer_billing(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !record(&shared, &method, &uri, &headers, &body) {
        return forbidden();
    }
    let b = match json_body(&body) {
        Some(b) => b,
        None => return bad_json(),
    };
    let Some(id) = b["customer_id"].as_str() else {
        return creem_error(StatusCode::BAD_REQUEST, &["customer_id must be a string"]);
    };
    if !shared.inner.lock().unwrap().customers.contains_key(id) {
        return creem_error(StatusCode::NOT_FOUND, &["Customer not found"]);
    }
    Json(json!({ "customer_portal_link": format!("{}/portal/{id}", shared.base) })).into_response()
}

async fn get_subscription(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if !record(&shared, &method, &uri, &headers, b"") {
        return forbidden();
    }
    let Some(id) = q.get("subscription_id") else {
        return creem_error(
            StatusCode::BAD_REQUEST,
            &["subscription_id must be a string"],
        );
    };
    let inner = shared.inner.lock().unwrap();
    match inner.subscriptions.get(id) {
        Some(s) => Json(inner.subscription_obj(s)).into_response(),
        None => creem_error(StatusCode::NOT_FOUND, &["Subscription not found"]),
    }
}

async fn cancel_subscription(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !record(&shared, &method, &uri, &headers, &body) {
        return forbidden();
    }
    let b = if body.is_empty() {
        json!({})
    } else {
        match json_body(&body) {
            Some(b) => b,
            None => return bad_json(),
        }
    };
    let mode = b["mode"].as_str().unwrap_or("immediate");
    if !matches!(mode, "immediate" | "scheduled") {
        return creem_error(
            StatusCode::BAD_REQUEST,
            &["mode must be one of: immediate, scheduled"],
        );
    }
    let mut guard = shared.inner.lock().unwrap();
    let inner = &mut *guard;
    let Some(mut s) = inner.subscriptions.get(&id).cloned() else {
        return creem_error(StatusCode::NOT_FOUND, &["Subscription not found"]);
    };
    let now = inner.tick();
    if mode == "immediate" {
        s.status = "canceled".into();
        s.canceled_at_ms = Some(now);
    } else {
        s.status = "scheduled_cancel".into();
    }
    s.updated_ms = now;
    inner.subscriptions.insert(id, s.clone());
    Json(inner.subscription_obj(&s)).into_response()
}

async fn not_found(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&shared, &method, &uri, &headers, &body);
    creem_error(
        StatusCode::NOT_FOUND,
        &["Cannot find the requested resource"],
    )
}

/// What the subscription's last payment cost, tax included (21 %).
fn paid_for(inner: &Inner, s: &Subscription) -> i64 {
    let price = inner.products.get(&s.product).map_or(0, |p| p.1);
    price + price * 21 / 100
}

/// What a refund and a dispute object share: the payment taken back (its
/// `status` and `refunded_amount` as given), the subscription, the checkout
/// with its metadata, the order and the customer.
fn reversal(
    inner: &mut Inner,
    s: &Subscription,
    now: i64,
    tx_status: &str,
    refunded: i64,
) -> serde_json::Map<String, Value> {
    let price = inner.products.get(&s.product).map_or(0, |p| p.1);
    let paid = paid_for(inner, s);
    let checkout = inner.checkouts.get(&s.checkout).cloned().unwrap();
    json_map(json!({
        "transaction": {
            "id": s.last_transaction, "object": "transaction", "amount": price,
            "amount_paid": paid, "currency": "EUR", "type": "invoice",
            "tax_country": "NL", "tax_amount": paid - price, "status": tx_status,
            "refunded_amount": refunded, "order": s.order, "subscription": s.id,
            "description": "Subscription payment", "period_start": s.period_start_ms,
            "period_end": s.period_end_ms, "created_at": s.period_start_ms, "mode": "test"
        },
        "subscription": inner.subscription_ref(s),
        "checkout": {
            "id": checkout.id, "object": "checkout", "request_id": checkout.request_id,
            "custom_fields": [], "status": "completed", "metadata": checkout.metadata,
            "mode": "test"
        },
        "order": inner.order_obj(&checkout, &s.customer),
        "customer": inner.customer_obj(&s.customer),
        "created_at": now, "mode": "test"
    }))
}

fn json_map(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("an object literal"),
    }
}
