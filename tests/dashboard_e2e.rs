//! The dashboard in a real browser: headless Chromium driven through
//! chromedriver (WebDriver) with fantoccini. Sign up, create a key in the
//! dialog, use it on the proxy, watch the overview count the request, log out
//! and in again, and the admin pages. Every page is saved as a PNG under
//! `target/screenshots/` (CI keeps them as artifacts).
//!
//! Needs Debian's `chromium` and `chromium-driver` packages; without them the
//! test fails and says so (it never skips).

mod common;

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{chat_body, fake, free_port, gateway, Backend, Gateway, Poll};
use fake_upstream::FakeUpstream;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";
const PASSWORD: &str = "a long enough password";
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;
/// How long a confirm() dialog may take to open after the click.
const DIALOG: Poll = Poll::within(Duration::from_secs(10)).every(Duration::from_millis(100));

/// chromedriver on a free port, in its own process group with the browsers it
/// starts; the whole group is killed when dropped (also when a test panics).
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let missing = |what: &str, e: &dyn std::fmt::Display| -> ! {
            panic!(
                "{what} is needed by the dashboard's browser tests ({e}); install it with \
                 `apt-get install -y chromium chromium-driver`"
            )
        };
        if !Path::new(CHROMIUM).exists() {
            missing(&format!("{CHROMIUM} (package chromium)"), &"not found");
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| missing("chromedriver (package chromium-driver)", &e));
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("chromedriver exited at start with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid: this reaches Chromium too.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser session on the gateway's side app.
struct Browser {
    c: Client,
    base: String,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn open(driver: &Driver, base: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--window-size={WIDTH},{HEIGHT}"),
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            // confirm() dialogs stay open until the test accepts them.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let c = Poll::within(Duration::from_secs(30))
            .every(Duration::from_millis(200))
            .try_until(|| async {
                ClientBuilder::native()
                    .capabilities(caps.clone())
                    .connect(&driver.url)
                    .await
            })
            .await
            .unwrap_or_else(|e| {
                panic!("cannot start a Chromium session through chromedriver: {e}")
            });
        let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            c,
            base: base.to_string(),
            shots,
            _profile: profile,
        }
    }

    async fn goto(&self, path: &str) {
        self.c
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
    }

    async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_string()
    }

    /// Waits (up to 15 s) until the browser is on `path`.
    async fn wait_path(&self, path: &str) {
        let landed = Poll::within(Duration::from_secs(15))
            .every(Duration::from_millis(100))
            .try_until(|| async {
                let now = self.path().await;
                if now == path {
                    Ok(())
                } else {
                    Err(now)
                }
            })
            .await;
        if let Err(now) = landed {
            panic!(
                "expected to land on {path}, still on {now}; page:\n{}",
                self.text("body").await
            );
        }
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        // A page that reloads under the lookup ("aborted by navigation") is
        // looked at again once it has loaded; any other error fails at once.
        Poll::within(Duration::from_secs(10))
            .every(Duration::from_millis(100))
            .try_until(|| async {
                let found = self
                    .c
                    .wait()
                    .at_most(Duration::from_secs(10))
                    .for_element(Locator::Css(css))
                    .await;
                match found {
                    Ok(el) => Ok(el),
                    Err(e) if e.to_string().contains("navigation") => Err(e),
                    Err(e) => panic!("no element `{css}` on {}: {e}", self.base),
                }
            })
            .await
            .unwrap_or_else(|e| panic!("no element `{css}` on {}: {e}", self.base))
    }

    async fn exists(&self, css: &str) -> bool {
        !self.c.find_all(Locator::Css(css)).await.unwrap().is_empty()
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click `{css}`: {e}"));
    }

    async fn fill(&self, css: &str, value: &str) {
        let el = self.find(css).await;
        el.clear().await.unwrap();
        el.send_keys(value).await.unwrap();
    }

    /// Waits until `css` is displayed and its text is not empty; returns the text.
    async fn wait_text(&self, css: &str) -> String {
        let shown = Poll::within(Duration::from_secs(15))
            .every(Duration::from_millis(100))
            .try_until(|| async {
                let el = self.find(css).await;
                if el.is_displayed().await.unwrap_or(false) {
                    let text = el.text().await.unwrap();
                    if !text.trim().is_empty() {
                        return Ok(text);
                    }
                }
                Err(())
            })
            .await;
        match shown {
            Ok(text) => text,
            Err(()) => panic!(
                "`{css}` did not show any text; page:\n{}",
                self.text("body").await
            ),
        }
    }

    /// Accepts the confirm() that the last click opened.
    async fn accept_confirm(&self) {
        let accepted = DIALOG.try_until(|| self.c.accept_alert()).await;
        if let Err(e) = accepted {
            panic!("no confirm dialog: {e}");
        }
    }

    /// Saves `target/screenshots/NAME.png`; `full` grows the window to the page's height first.
    async fn shot(&self, name: &str, full: bool) {
        if full {
            // The window is taller than its viewport (browser UI): measure the
            // difference, then size the window so the viewport holds the page.
            let js = |script: &'static str| async move {
                self.c
                    .execute(script, vec![])
                    .await
                    .unwrap()
                    .as_u64()
                    .unwrap_or(u64::from(HEIGHT)) as u32
            };
            let page = js("return Math.ceil(document.documentElement.scrollHeight);").await;
            let viewport = js("return window.innerHeight;").await;
            let (_, window) = self.c.get_window_size().await.unwrap();
            let ui = (window as u32).saturating_sub(viewport);
            let height = page.clamp(HEIGHT - ui, 4000) + ui;
            self.c.set_window_size(WIDTH, height).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let png = self.c.screenshot().await.unwrap();
        assert!(
            png.starts_with(b"\x89PNG"),
            "screenshot {name} is not a PNG"
        );
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
        if full {
            self.c.set_window_size(WIDTH, HEIGHT).await.unwrap();
        }
    }

    async fn submit_auth(&self, email: &str, password: &str) {
        self.fill("#email", email).await;
        self.fill("#password", password).await;
        self.click("#submit").await;
    }

    async fn logout(&self) {
        self.click("#logout").await;
        self.wait_path("/login").await;
    }
}

/// The overview's "Requests" card, as a number.
async fn requests_stat(b: &Browser) -> i64 {
    b.text("[data-stat=\"Requests\"] .stat-value")
        .await
        .replace(',', "")
        .parse()
        .unwrap()
}

async fn start_gateway(up: &FakeUpstream) -> Gateway {
    gateway()
        .backend(Backend::new(up.url()))
        .yaml(
            "admin_servers:\n  allow_private: true\n\
             plans:\n  \
               free: { rpm: 60, tpm: 100000, concurrency: 4, monthly_tokens: 1000000 }\n  \
               pro: { rpm: 600, tpm: 2000000, concurrency: 32, monthly_credits_usd: 100 }\n  \
               team: { rpm: 3000, concurrency: 128 }\n\
             default_plan: free\n",
        )
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let up = fake().await;
    let extra = fake().await;
    let gw = start_gateway(&up).await;
    let driver = Driver::start();
    let b = Browser::open(&driver, &gw.side).await;

    // Signed out, everything leads to the login page.
    b.goto("/dashboard").await;
    b.wait_path("/login").await;
    b.find("#auth-form").await;
    b.shot("login", false).await;

    // Sign up; an API error (a short password) shows inline first.
    b.click(".auth-switch a").await;
    b.wait_path("/signup").await;
    b.shot("signup", false).await;
    b.submit_auth("ann@example.com", "short").await;
    let error = b.wait_text("#form-error").await;
    assert!(error.contains("password"), "inline error: {error}");
    assert_eq!(b.path().await, "/signup");
    b.submit_auth("ann@example.com", PASSWORD).await;
    b.wait_path("/dashboard").await;
    assert_eq!(b.text("#account-email").await, "ann@example.com");
    assert_eq!(b.text("#account-plan").await.to_lowercase(), "free");
    assert!(b.exists("#chart-empty").await, "a new account has no usage");
    assert_eq!(requests_stat(&b).await, 0);
    assert!(
        !b.exists("a[href=\"/admin/users\"]").await,
        "no admin links for users"
    );

    // Create a key in the dialog; the secret is shown once, in the dialog.
    b.click("a[href=\"/keys\"]").await;
    b.wait_path("/keys").await;
    b.click("#create-key").await;
    b.fill("#key-name", "my laptop").await;
    b.fill("#key-models", "gpt-4o-mini, text-embedding-3-small")
        .await;
    b.click("#create-key-submit").await;
    let secret = b.wait_text("#new-key-secret").await;
    assert!(secret.starts_with("bm_"), "secret: {secret}");
    let warning = b.text("#key-secret-view .alert-warning").await;
    assert!(warning.contains("only time"), "{warning}");
    b.click("#copy-key").await;
    b.shot("keys", false).await;
    b.click("#key-done").await;
    // Closing the dialog reloads the list: the key is there, without its secret.
    let row = b.find("#keys-table tbody tr").await;
    let row_text = row.text().await.unwrap();
    assert!(row_text.contains("my laptop"), "{row_text}");
    assert!(!b.c.source().await.unwrap().contains(&secret));
    let last4 = &secret[secret.len() - 4..];
    assert!(
        b.text("#keys-table .key-display").await.ends_with(last4),
        "the list shows the key's last 4 characters"
    );
    b.shot("keys-list", false).await;

    // The copied key works on the proxy.
    let resp = gw.chat(&secret, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let resp = gw.chat(&secret, &chat_body("gpt-4o-mini", true)).await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/embeddings"))
        .bearer_auth(&secret)
        .json(&json!({"model": "text-embedding-3-small", "input": "hello dashboard"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // The overview counts them once the usage writer has stored them (the page
    // is loaded again every 300 ms until it does).
    let counted = Poll::within(Duration::from_secs(20))
        .every(Duration::from_millis(300))
        .try_until(|| async {
            b.goto("/dashboard").await;
            if requests_stat(&b).await == 3 {
                Ok(())
            } else {
                Err(())
            }
        })
        .await;
    if counted.is_err() {
        panic!(
            "the overview did not count the 3 requests; page:\n{}",
            b.text("body").await
        );
    }
    b.find("#usage-chart svg").await;
    assert!(!b.exists("#chart-empty").await);
    let models = b.text("#models-table").await;
    assert!(
        models.contains("gpt-4o-mini") && models.contains("text-embedding-3-small"),
        "{models}"
    );
    assert_eq!(
        b.c.find_all(Locator::Css("#recent-table tbody tr"))
            .await
            .unwrap()
            .len(),
        3
    );
    // Each request names the key it came with.
    let recent = b.text("#recent-table tbody").await;
    assert_eq!(recent.matches("my laptop").count(), 3, "{recent}");
    b.shot("dashboard", true).await;
    // The layout holds on a phone-sized window too.
    b.c.set_window_size(400, 860).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.shot("dashboard-narrow", false).await;
    let overflow =
        b.c.execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflow, json!(0), "the narrow page scrolls sideways");
    b.c.set_window_size(WIDTH, HEIGHT).await.unwrap();

    // Billing: the plans, the current one highlighted, and billing is off.
    b.click("a[href=\"/billing\"]").await;
    b.wait_path("/billing").await;
    assert!(b
        .text("#billing-off")
        .await
        .contains("Billing is off on this gateway"));
    assert_eq!(
        b.find(".plan-current")
            .await
            .attr("data-plan")
            .await
            .unwrap()
            .as_deref(),
        Some("free")
    );
    b.shot("billing", true).await;

    // Not an admin: 403 on the admin pages.
    b.goto("/admin/users").await;
    assert!(b.text("#forbidden").await.contains("for administrators"));
    b.shot("forbidden", false).await;

    // A second key, revoked from its row: the proxy refuses it at once.
    b.goto("/keys").await;
    b.click("#create-key").await;
    b.fill("#key-name", "to revoke").await;
    b.click("#create-key-submit").await;
    let doomed = b.wait_text("#new-key-secret").await;
    b.click("#key-done").await;
    b.find("#keys-table tbody tr:nth-child(2)").await;
    let revoke = b
        .find("#keys-table tr:first-child [data-action=\"revoke-key\"]")
        .await;
    assert_eq!(
        revoke.attr("data-name").await.unwrap().as_deref(),
        Some("to revoke")
    );
    revoke.click().await.unwrap();
    b.accept_confirm().await;
    Poll::within(Duration::from_secs(10))
        .every(Duration::from_millis(100))
        .until("the key to be shown as revoked", || {
            b.exists("#keys-table .badge-revoked")
        })
        .await;
    assert_eq!(
        gw.chat(&doomed, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        401
    );

    // Rotate "my laptop": a new secret in the dialog; the old key keeps working
    // for the grace period.
    b.click("tr[data-key-id] [data-action=\"rotate-key\"][data-name=\"my laptop\"]")
        .await;
    let question = DIALOG
        .try_until(|| b.c.get_alert_text())
        .await
        .unwrap_or_else(|e| panic!("no confirm dialog: {e}"));
    assert!(question.contains("1 hour"), "{question}");
    b.accept_confirm().await;
    let rotated = b.wait_text("#new-key-secret").await;
    assert!(rotated.starts_with("bm_") && rotated != secret);
    assert!(b.text("#key-secret-title").await.contains("rotated"));
    b.click("#key-done").await;
    b.find("#keys-table tbody tr:nth-child(3)").await;
    for key in [&rotated, &secret] {
        assert_eq!(
            gw.chat(key, &chat_body("gpt-4o-mini", false))
                .await
                .status(),
            200
        );
    }

    // Log out, and back in through the login form (a wrong password first).
    b.logout().await;
    b.goto("/dashboard").await;
    b.wait_path("/login").await;
    b.submit_auth("ann@example.com", "not the password").await;
    let error = b.wait_text("#form-error").await;
    assert!(!error.is_empty());
    b.submit_auth("ann@example.com", PASSWORD).await;
    b.wait_path("/dashboard").await;
    assert!(requests_stat(&b).await >= 3);
    b.logout().await;

    // An admin: the admin pages, adding a server, disabling a user.
    b.goto("/signup").await;
    b.submit_auth("admin@example.com", PASSWORD).await;
    b.wait_path("/dashboard").await;
    // The operator grants the role; the next page load shows the admin links.
    gw.cli(&["users", "grant-admin", "--email", "admin@example.com"]);
    b.goto("/dashboard").await;
    b.click("a[href=\"/admin/servers\"]").await;
    b.wait_path("/admin/servers").await;
    assert!(b.text("[data-pool=\"main\"]").await.contains("Healthy"));
    b.fill("#srv-pool", "extra").await;
    b.fill("#srv-url", &extra.url()).await;
    b.fill("#srv-models", "extra-model, extra-*").await;
    b.fill("#srv-priority", "1").await;
    b.click("#server-form button[type=\"submit\"]").await;
    let pool = b.find("[data-pool=\"extra\"]").await;
    assert!(pool.text().await.unwrap().contains(&extra.url()));
    assert!(b.text("#servers-table").await.contains("extra-model"));
    // The proxy routes the new model at once.
    let extra_key = gw.create_key("cli key", &[]);
    assert_eq!(
        gw.chat(&extra_key, &chat_body("extra-model", false))
            .await
            .status(),
        200
    );
    b.shot("admin-servers", true).await;

    b.click("a[href=\"/admin/users\"]").await;
    b.wait_path("/admin/users").await;
    let users = b.text("#users-table").await;
    assert!(
        users.contains("ann@example.com") && users.contains("admin@example.com"),
        "{users}"
    );
    b.click("tr[data-email=\"ann@example.com\"] [data-action=\"disable-user\"]")
        .await;
    b.accept_confirm().await;
    b.find("tr[data-email=\"ann@example.com\"] [data-action=\"enable-user\"]")
        .await;
    assert_eq!(
        gw.chat(&secret, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        401,
        "a disabled user's keys stop working"
    );
    b.click("tr[data-email=\"ann@example.com\"] [data-action=\"enable-user\"]")
        .await;
    b.find("tr[data-email=\"ann@example.com\"] [data-action=\"disable-user\"]")
        .await;
    b.shot("admin-users", true).await;
    assert_eq!(
        gw.chat(&secret, &chat_body("gpt-4o-mini", false))
            .await
            .status(),
        200
    );

    // The server added above can be deleted again.
    b.goto("/admin/servers").await;
    b.click("#servers-table [data-action=\"delete-server\"]")
        .await;
    b.accept_confirm().await;
    b.find("#servers-empty").await;

    b.c.close().await.unwrap();
    drop(driver);
}
