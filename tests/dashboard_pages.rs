//! The dashboard's pages over plain HTTP (no browser): redirects when signed
//! out, security headers, static assets, admin-only pages and HTML escaping.
//! The browser flow is in `dashboard_e2e.rs`.

mod common;

use common::{browser_client, chat_body, fake, gateway, Backend, Gateway, User};
use fake_upstream::FakeUpstream;
use reqwest::{header, StatusCode};

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

async fn start(up: &FakeUpstream) -> Gateway {
    gateway()
        .backend(Backend::new(up.url()))
        .yaml(
            "plans:\n  free: { rpm: 1000, monthly_tokens: 1000000 }\n  pro: { rpm: 5000, monthly_credits_usd: 50 }\n\
             default_plan: free\n",
        )
        .start()
        .await
}

/// A page as a signed-in user sees it (200, with the security headers).
async fn page(user: &User, path: &str) -> String {
    let resp = user.get(path).await;
    assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
    assert_page_headers(&resp, path);
    resp.text().await.unwrap()
}

/// Makes a chat completion with a new key of `user`, and waits for its record.
async fn one_request(gw: &Gateway, user: &User) {
    let key = user.new_key("first").await.1;
    assert_eq!(
        gw.chat(&key, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        StatusCode::OK
    );
    gw.wait_usage_rows(1).await;
}

fn assert_page_headers(resp: &reqwest::Response, path: &str) {
    let h = resp.headers();
    assert_eq!(
        h[header::CONTENT_TYPE],
        "text/html; charset=utf-8",
        "content-type of {path}"
    );
    assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP, "CSP of {path}");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
    assert_eq!(h[header::CACHE_CONTROL], "no-store", "{path}");
}

#[tokio::test]
async fn signed_out_pages_redirect_to_login() {
    let up = fake().await;
    let gw = start(&up).await;
    let http = browser_client();
    for path in [
        "/",
        "/dashboard",
        "/keys",
        "/billing",
        "/admin/servers",
        "/admin/users",
    ] {
        let resp = http.get(format!("{}{path}", gw.side)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "GET {path}");
        assert_eq!(resp.headers()[header::LOCATION], "/login", "GET {path}");
    }
    // A cookie that matches no session is the same as none.
    let resp = http
        .get(format!("{}/dashboard", gw.side))
        .header(header::COOKIE, "bm_session=not-a-session")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);

    for path in ["/login", "/signup"] {
        let resp = http.get(format!("{}{path}", gw.side)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        assert_page_headers(&resp, path);
        let body = resp.text().await.unwrap();
        assert!(body.contains("id=\"auth-form\""), "{body}");
        assert!(
            !body.contains("<script>") && !body.contains(" style="),
            "no inline script or style under the CSP: {body}"
        );
    }
}

#[tokio::test]
async fn pages_and_static_assets() {
    let up = fake().await;
    let gw = start(&up).await;

    // Static files, from the binary.
    let http = browser_client();
    for (path, ctype, needle) in [
        ("/static/app.css", "text/css; charset=utf-8", ".sidebar"),
        (
            "/static/app.js",
            "text/javascript; charset=utf-8",
            "x-csrf-token",
        ),
    ] {
        let resp = http.get(format!("{}{path}", gw.side)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], ctype, "{path}");
        let cache = resp.headers()[header::CACHE_CONTROL].to_str().unwrap();
        assert!(cache.contains("max-age="), "{path}: {cache}");
        assert_eq!(resp.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(resp.text().await.unwrap().contains(needle), "{path}");
    }

    let ann = User::signup(&gw, "ann@example.com").await;
    // Signed in, `/` and the login page lead to the dashboard.
    for path in ["/", "/login", "/signup"] {
        let resp = ann.get(path).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(resp.headers()[header::LOCATION], "/dashboard", "{path}");
    }

    one_request(&gw, &ann).await;

    for path in ["/dashboard", "/keys", "/billing"] {
        let body = page(&ann, path).await;
        // The layout: who is signed in, their plan, the CSRF token for app.js.
        assert!(body.contains("ann@example.com"), "{path}");
        assert!(body.contains("id=\"account-plan\">free<"), "{path}");
        assert!(body.contains("data-action=\"logout\""), "{path}");
        assert!(
            body.contains(&format!(
                "<meta name=\"csrf-token\" content=\"{}\">",
                ann.csrf
            )),
            "{path}"
        );
        // Admin links only for admins.
        assert!(!body.contains("href=\"/admin/servers\""), "{path}");
        assert!(
            !body.contains("<script>") && !body.contains(" style="),
            "no inline script or style under the CSP ({path})"
        );
    }

    let dashboard = page(&ann, "/dashboard").await;
    // The request made above: the chart, the per-model table and the log.
    assert!(dashboard.contains("id=\"usage-chart\""), "{dashboard}");
    assert!(!dashboard.contains("id=\"chart-empty\""));
    assert!(dashboard.contains("<code class=\"model\">gpt-4o-mini</code>"));
    assert!(dashboard.contains("status-ok\">200<"));
    // The monthly token quota of the free plan.
    assert!(dashboard.contains("Monthly tokens"));

    let billing = page(&ann, "/billing").await;
    assert!(billing.contains("Billing is off on this gateway"));
    assert!(billing.contains("class=\"card plan plan-current\" data-plan=\"free\""));
    assert!(billing.contains("data-plan=\"pro\""));

    // A newcomer has an empty overview.
    let bob = User::signup(&gw, "bob@example.com").await;
    let empty = page(&bob, "/dashboard").await;
    assert!(empty.contains("id=\"chart-empty\""), "{empty}");
    assert!(page(&bob, "/keys").await.contains("id=\"keys-empty\""));
}

#[tokio::test]
async fn admin_pages_are_for_admins_only() {
    let up = fake().await;
    let gw = start(&up).await;
    let ann = User::signup(&gw, "ann@example.com").await;
    for path in ["/admin/servers", "/admin/users"] {
        let resp = ann.get(path).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
        assert_page_headers(&resp, path);
        let body = resp.text().await.unwrap();
        assert!(body.contains("id=\"forbidden\""), "{body}");
    }

    let admin = User::signup_admin(&gw, "admin@example.com").await;
    let servers = page(&admin, "/admin/servers").await;
    assert!(servers.contains("href=\"/admin/servers\""));
    // The config's pool, its backend and its health.
    assert!(servers.contains("data-pool=\"main\""), "{servers}");
    assert!(servers.contains(&format!("<code>{}</code>", up.url())));
    assert!(servers.contains("id=\"server-form\""));
    let users = page(&admin, "/admin/users").await;
    assert!(users.contains("ann@example.com") && users.contains("admin@example.com"));
    assert!(users.contains("data-action=\"disable-user\""));
}

#[tokio::test]
async fn user_data_is_escaped() {
    let up = fake().await;
    let gw = start(&up).await;
    let ann = User::signup(&gw, "ann@example.com").await;
    ann.new_key("<script>alert(1)</script>").await;
    ann.new_key("\"onmouseover=\"alert(2)").await;
    let body = page(&ann, "/keys").await;
    assert!(
        !body.contains("<script>alert(1)</script>"),
        "the key name must be escaped: {body}"
    );
    assert!(body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
    // In attributes too (the Rotate/Revoke buttons carry the name).
    assert!(!body.contains("data-name=\"\"onmouseover"));
    assert!(body.contains("data-name=\"&#34;onmouseover=&#34;alert(2)\""));
}

/// The pages read the plans in force, not those the process started with: a
/// plan edited in the YAML shows on the billing page and in the overview's
/// quota bar once the file is reloaded (the proxy already enforced it).
#[tokio::test]
async fn a_reloaded_plan_shows_on_the_billing_page_and_the_quota_bar() {
    let up = fake().await;
    let gw = start(&up).await;
    let ann = User::signup(&gw, "ann@example.com").await;
    let before = page(&ann, "/billing").await;
    assert!(before.contains("1,000 / min"), "{before}");
    assert!(page(&ann, "/dashboard").await.contains("1,000,000"));

    let yaml = std::fs::read_to_string(&gw.config_path).unwrap();
    let edited = yaml.replace(
        "free: { rpm: 1000, monthly_tokens: 1000000 }",
        "free: { rpm: 1500, monthly_tokens: 2500000 }",
    );
    assert_ne!(yaml, edited);
    std::fs::write(&gw.config_path, edited).unwrap();
    gw.signal("HUP");
    common::eventually("the reload is logged", || async {
        gw.log().contains("config reloaded")
    })
    .await;

    let billing = page(&ann, "/billing").await;
    assert!(billing.contains("1,500 / min"), "{billing}");
    assert!(!billing.contains("1,000 / min"), "{billing}");
    let dashboard = page(&ann, "/dashboard").await;
    assert!(dashboard.contains("2,500,000"), "{dashboard}");
    assert!(!dashboard.contains("1,000,000"), "{dashboard}");
}

/// The overview is read from one snapshot of the database: while usage is being
/// committed (here a writer that keeps adding to the user's daily totals), every
/// load shows the same number of requests in the totals card, in the month's
/// figure under it and in the sum of the by-model table. Read as separate
/// queries, a commit landing between them left the page contradicting itself
/// (in the browser test: 3 requests counted, and "No requests in the last 30
/// days" under "By model").
#[tokio::test]
async fn the_overview_never_contradicts_itself_while_usage_is_written() {
    let up = fake().await;
    let gw = start(&up).await;
    let ann = User::signup(&gw, "ann@example.com").await;
    one_request(&gw, &ann).await;

    let pool = gw.db.pool().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut commits = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sqlx::query(
                    "UPDATE usage_daily SET requests = requests + 1, prompt_tokens = prompt_tokens + 7",
                )
                .execute(&pool)
                .await
                .unwrap();
                commits += 1;
            }
            commits
        }
    });

    let mut last = 0;
    for load in 0..200 {
        let body = page(&ann, "/dashboard").await;
        let (total, month) = requests_card(&body);
        let by_model = models_table_requests(&body);
        assert!(
            total == month && total == by_model,
            "load {load}: {total} requests in the card, {month} this month, {by_model} by model"
        );
        assert!(total >= last, "load {load}: {total} after {last}");
        last = total;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let commits = writer.await.unwrap();
    assert!(
        commits > 0 && last > 1,
        "{commits} commits, {last} requests"
    );
}

/// The "Requests" card: its value, and the month's figure in its subtitle.
fn requests_card(body: &str) -> (i64, i64) {
    let card = &body[body.find("data-stat=\"Requests\"").expect("the card")..];
    let value = between(card, "class=\"stat-value\">", "<");
    let month = between(card, "last 30 days · ", " this month");
    (number(value), number(month))
}

/// The sum of the "Requests" column of the by-model table (0 without the table).
fn models_table_requests(body: &str) -> i64 {
    let Some(at) = body.find("id=\"models-table\"") else {
        return 0;
    };
    let table = between(&body[at..], "<tbody>", "</tbody>");
    table
        .split("<tr>")
        .skip(1)
        .map(|row| number(between(row, "<td class=\"num\">", "</td>")))
        .sum()
}

fn between<'a>(s: &'a str, from: &str, to: &str) -> &'a str {
    let start = s.find(from).unwrap_or_else(|| panic!("no {from:?}")) + from.len();
    let len = s[start..].find(to).unwrap_or_else(|| panic!("no {to:?}"));
    &s[start..start + len]
}

fn number(s: &str) -> i64 {
    s.trim()
        .replace(',', "")
        .parse()
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
}
