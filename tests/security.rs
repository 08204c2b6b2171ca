//! Attacks from outside, each test named by the attack it tries (SECURITY.md
//! lists them with the defence). The real binary, a real HTTP client.

mod common;

use common::{fake, gateway, Backend, User};

/// Sign-up does not verify emails, so an address listed as an admin's in an
/// old config (`admin_emails`), in any letter case, must not make whoever
/// registers it first an admin: admin is a role the operator grants.
#[tokio::test]
async fn signing_up_with_an_admins_email_does_not_make_you_an_admin() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .yaml("admin_emails: [boss@example.com]\n")
        .start()
        .await;
    for email in ["Boss@Example.com", "boss@example.com "] {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let resp = http
            .post(format!("{}/api/auth/signup", gw.side))
            .json(&serde_json::json!({"email": email, "password": "a long enough password"}))
            .send()
            .await
            .unwrap();
        if resp.status() == 409 {
            // The second spelling is the same account: no second one is made.
            continue;
        }
        assert_eq!(resp.status(), 201, "{email}");
        let me: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(me["email"], "boss@example.com");
        assert_eq!(
            me["is_admin"], false,
            "{email} became an admin by signing up"
        );
        let users = http
            .get(format!("{}/api/admin/users", gw.side))
            .send()
            .await
            .unwrap();
        assert_eq!(users.status(), 403, "{email} reached the admin API");
    }
    assert!(gw
        .log()
        .contains("`admin_emails` no longer makes anyone an admin"));
}

/// The operator's grant is the way in, whatever the letter case they type, and
/// the same email in another case is never a second account.
#[tokio::test]
async fn an_operator_grant_makes_an_admin_and_emails_are_one_account_in_any_case() {
    let up = fake().await;
    let gw = gateway()
        .backend(Backend::new(up.url()))
        .yaml("plans:\n  free: {}\n")
        .start()
        .await;
    let real = User::signup(&gw, "real@example.com").await;
    assert_eq!(real.get("/api/admin/users").await.status(), 403);
    gw.cli(&["users", "grant-admin", "--email", "Real@Example.COM"]);
    assert_eq!(real.get("/api/admin/users").await.status(), 200);
    gw.cli(&["users", "revoke-admin", "--email", "real@example.com"]);
    assert_eq!(real.get("/api/admin/users").await.status(), 403);

    gw.cli(&[
        "users",
        "create",
        "--email",
        "Carol@Example.com",
        "--plan",
        "free",
    ]);
    let listed = gw.cli(&["users", "list"]);
    assert!(listed.contains("carol@example.com"), "{listed}");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/auth/signup", gw.side))
        .json(&serde_json::json!({"email": "carol@EXAMPLE.com", "password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        409,
        "a second account for another letter case"
    );
}
