//! The console in a real browser (issue 17): headless Chromium against the real `serve` binary
//! and a real receiver on 127.0.0.1, through [`super::console_browser`]. The main flow, hostile
//! data, an app-scoped session, no console errors, and screenshots of every page at 1280 and
//! 390 pixels under `<target dir>/console-screenshots/`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::console_browser::Browser;
use super::serve_child::{get, post_json, ServeChild, TOKEN};

/// What the hostile receiver answers (500), and what the hostile producer publishes.
pub const HOSTILE_BODY: &str =
    "<img src=x onerror=\"window.__pwned='receiver'\"><script>window.__pwned='receiver-script'</script>";
pub const HOSTILE_PAYLOAD: &str =
    "<script>window.__pwned='payload'</script><img src=x onerror=\"window.__pwned='payload-img'\">";
pub const HOSTILE_DESCRIPTION: &str = "<img src=x onerror=\"window.__pwned='description'\">";

/// A receiver: `/ok/...` answers 204, `/hostile` 500 with [`HOSTILE_BODY`]; it counts requests.
pub async fn receiver() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/ok/{name}", post(ok))
        .route("/hostile", post(hostile))
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, hits)
}

async fn ok(State(hits): State<Arc<AtomicUsize>>) -> StatusCode {
    hits.fetch_add(1, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

async fn hostile(State(hits): State<Arc<AtomicUsize>>) -> (StatusCode, &'static str) {
    hits.fetch_add(1, Ordering::SeqCst);
    (StatusCode::INTERNAL_SERVER_ERROR, HOSTILE_BODY)
}

/// `serve` on a fresh file: loopback receivers allowed, one retry an hour away (a failed
/// delivery stays pending while the test looks at it).
pub fn serve(dir: &Path) -> ServeChild {
    let env = [
        ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1"),
        ("HOOKLEDGER_RETRY_SCHEDULE", "1h"),
        ("HOOKLEDGER_ATTEMPT_TIMEOUT", "5s"),
    ];
    ServeChild::start(&dir.join("console.duckdb"), &env, &dir.join("serve.log"))
}

/// Polls the API until `delivery` (`webhook/event`) is in `state`.
pub async fn api_until(http: &reqwest::Client, base: &str, delivery: &str, state: &str) {
    let started = std::time::Instant::now();
    loop {
        let (status, trail) = get(http, &format!("{base}/v1/deliveries/{delivery}")).await;
        if status == 200 && trail["state"] == state {
            return;
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "{delivery} never {state}: {trail}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_creates_a_webhook_follows_a_delivery_live_and_travels_in_time() {
    let Some(mut b) = Browser::start("console main flow").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let child = serve(dir.path());
    let base = child.base.clone();
    let http = reqwest::Client::new();
    let (receiver, hits) = receiver().await;

    // Sign-in: a wrong token is refused and says so, the right one opens the overview.
    b.goto(&format!("{base}/")).await;
    b.text("#signin").await;
    b.screenshots("signin").await;
    b.assert_keyboard_ready("sign-in").await;
    b.sign_in(&base, "not-the-token").await;
    b.text_where("#signin-status", |t| t.contains("Wrong token"))
        .await;
    b.assert_no_console_errors("sign-in", &["401"]).await;
    b.sign_in(&base, TOKEN).await;
    b.text_where("#who", |t| t == "operator").await;
    b.text_where("#count-delivered", |t| t == "0").await;

    // A webhook created in the page, its secret shown once.
    b.click("a[href='#/webhooks']").await;
    b.fill("#new-url", &format!("{receiver}/ok/orders")).await;
    b.fill("#new-types", "order").await;
    b.fill("#new-description", "orders").await;
    b.click("#create-webhook button[type=submit]").await;
    let secret = b.text_where("#secret", |t| t.starts_with("whsec_")).await;
    b.text_where("#webhooks", |t| t.contains("/ok/orders"))
        .await;
    b.screenshots("webhooks").await;
    b.assert_keyboard_ready("webhooks").await;
    let (_, list) = get(&http, &format!("{base}/v1/webhooks")).await;
    let webhook = list["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list["data"][0]["url"], format!("{receiver}/ok/orders"));

    // Published through the API, the delivery appears on the overview without a reload.
    b.click("a[href='#/overview']").await;
    b.text_where("#count-delivered", |t| t == "0").await;
    b.js("window.__same_page = 1").await;
    let before = chrono::Utc::now() - chrono::Duration::milliseconds(500);
    let event = json!({"event_id": "order-1", "event_type": "order.created", "payload": {"id": 1}});
    let (status, answer) = post_json(&http, &format!("{base}/v1/events"), &event).await;
    assert_eq!(status, 202, "{answer}");
    b.text_where("#count-delivered", |t| t == "1").await;
    b.text_where("#webhook-stats", |t| t.contains("100 %"))
        .await;
    let total = b
        .js("return document.getElementById('attempts-chart').dataset.total")
        .await;
    assert_eq!(total, json!("1"), "the chart counts the attempt");
    b.text_where("#verify", |t| t.contains('✔')).await;
    assert_eq!(
        b.js("return window.__same_page").await,
        json!(1),
        "no reload"
    );
    b.screenshots("overview").await;
    b.assert_keyboard_ready("overview").await;

    // Keyboard focus survives the 2 s refresh: a focused link of the webhooks table (redrawn
    // by every refresh) is focused again once the table is redrawn.
    let href = b
        .js(
            "const l = document.querySelector('#webhook-stats a'); l.focus(); \
             l.dataset.old = '1'; return l.getAttribute('href')",
        )
        .await;
    let href = href.as_str().unwrap().to_owned();
    b.js_until(
        &format!(
            "const a = document.activeElement; return !!a && a.tagName === 'A' && \
             a.getAttribute('href') === '{href}' && a.dataset.old === undefined"
        ),
        json!(true),
    )
    .await;

    // ... and in the list, where a second one appears while the list is open.
    b.click("a[href='#/deliveries']").await;
    b.text_where("#deliveries", |t| t.contains("order-1")).await;
    b.js("window.__same_page = 2").await;
    let event = json!({"event_id": "order-2", "event_type": "order.created", "payload": {"id": 2}});
    assert_eq!(
        post_json(&http, &format!("{base}/v1/events"), &event)
            .await
            .0,
        202
    );
    b.text_where("#deliveries", |t| t.contains("order-2")).await;
    assert_eq!(
        b.js("return window.__same_page").await,
        json!(2),
        "no reload"
    );
    b.screenshots("deliveries").await;
    b.assert_keyboard_ready("deliveries").await;

    // Filtered by a window: enqueued since order-2's enqueue shows order-2 only; before it,
    // order-1 only (times typed as RFC 3339 UTC; the page sends them as they are meant).
    let (_, trail) = get(&http, &format!("{base}/v1/deliveries/{webhook}/order-2")).await;
    let second = trail["records"][0]["recorded_at"]
        .as_str()
        .unwrap()
        .to_owned();
    b.fill("#f-since", &second).await;
    b.click("#delivery-filters button[type=submit]").await;
    b.text_where("#deliveries", |t| {
        t.contains("order-2") && !t.contains("order-1")
    })
    .await;
    b.fill("#f-since", "").await;
    b.fill("#f-until", &second).await;
    b.click("#delivery-filters button[type=submit]").await;
    b.text_where("#deliveries", |t| {
        t.contains("order-1") && !t.contains("order-2")
    })
    .await;
    b.assert_no_console_errors("the main flow so far", &[])
        .await;
    b.fill("#f-until", "not a time").await;
    b.click("#delivery-filters button[type=submit]").await;
    b.text_where("#deliveries", |t| t.contains("(until)")).await;
    b.click("a[href='#/deliveries']").await;
    b.text_where("#deliveries", |t| {
        t.contains("order-1") && t.contains("order-2")
    })
    .await;
    // The refused time's 422 is the only console error on the way.
    b.assert_no_console_errors("a refused time", &["422"]).await;

    // The timeline, the pretty body, and a redelivery's new records.
    b.click(&format!("a[href='#/delivery/{webhook}/order-1']"))
        .await;
    b.text_where("#delivery-state", |t| t == "delivered").await;
    b.count_at_least("#records tbody tr", 3).await;
    let body = b.text("#event-body").await;
    assert_eq!(body, "{\n  \"id\": 1\n}", "pretty-printed");
    b.text_where("#event-type", |t| t == "order.created").await;
    b.screenshots("delivery").await;
    b.assert_keyboard_ready("delivery").await;
    b.click("#redeliver").await;
    b.text_where("#delivery-status", |t| t.contains("Requeued"))
        .await;
    b.count_at_least("#records tbody tr", 6).await;
    b.text_where("#records", |t| t.contains("requeued")).await;
    b.text_where("#delivery-state", |t| t == "delivered").await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "order-1 twice, order-2 once"
    );

    // Rotate the secret: a new one, shown once.
    b.goto(&format!("{base}/#/webhook/{webhook}")).await;
    b.click("#rotate").await;
    let rotated = b.text_where("#secret", |t| t.starts_with("whsec_")).await;
    assert_ne!(rotated, secret);
    // Its latest deliveries first, its latency histogram over the hour (order-1's two attempts
    // and order-2's), its registry history with the rotation, and never a secret.
    b.text_where("#webhook-deliveries tbody tr:first-child", |t| {
        t.contains("order-2")
    })
    .await;
    b.js_until(
        "const c = document.getElementById('latency-histogram'); return c && c.dataset.total",
        json!("3"),
    )
    .await;
    b.text_where("#webhook-failure-classes", |t| {
        t.contains("No failed attempts")
    })
    .await;
    b.text_where("#history", |t| {
        t.contains("created") && t.contains("secret_rotated")
    })
    .await;
    // Who made each change: the operator's session made them all (the "By" column).
    b.js_until(
        "const rows = [...document.querySelectorAll('#history tbody tr')]; \
         const head = [...document.querySelectorAll('#history thead th')].map((t) => t.textContent); \
         const by = head.indexOf('By'); \
         return by >= 0 && rows.length >= 2 && rows.every((r) => r.cells[by].textContent === 'operator')",
        json!(true),
    )
    .await;
    let page = b.body_text().await;
    assert!(
        !page.contains(&secret),
        "the first secret is not shown again"
    );
    b.screenshots("webhook").await;
    // The screenshots are of the whole page: at 390 px this one is taller than the viewport.
    let png =
        std::fs::read(super::console_browser::screenshot_dir().join("webhook-390.png")).unwrap();
    let (_, height) = super::console_browser::png_size(&png);
    assert!(
        height > 844,
        "the webhook page at 390 px is {height} px tall"
    );
    b.assert_keyboard_ready("webhook").await;

    // Time travel: before the publish the delivery is absent; now both are delivered.
    b.click("a[href='#/time']").await;
    b.text_where("#then-delivered", |t| t == "2").await;
    b.fill("#at-text", &before.to_rfc3339()).await;
    b.click("#time-travel button[type=submit]").await;
    b.text_where("#then-seq", |t| t == "0").await;
    assert_eq!(b.text("#then-delivered").await, "0");
    // The far right is now itself, not the last whole step before it (which could miss the
    // newest records: a range input snaps to `min` plus whole steps).
    assert_eq!(
        b.js(
            "const s = document.getElementById('at-slider'); s.value = s.max; \
             s.dispatchEvent(new Event('input')); return s.value === s.max"
        )
        .await,
        json!(true),
        "the slider reaches its max"
    );
    b.text_where("#then-delivered", |t| t == "2").await;
    b.js(
        "const s = document.getElementById('at-slider'); s.value = s.min; \
          s.dispatchEvent(new Event('input'))",
    )
    .await;
    b.text_where("#then-delivered", |t| t == "0").await;
    b.screenshots("time").await;
    b.assert_keyboard_ready("time travel").await;
    b.assert_no_console_errors("the main flow", &[]).await;

    // Sign out: the sign-in page again, and the token is gone from the tab.
    b.click("#signout").await;
    b.text("#signin").await;
    assert_eq!(b.js("return sessionStorage.length").await, json!(0));
}

/// The marker a hostile script would set: unset on every page.
async fn assert_unpwned(b: &Browser, page: &str) {
    let marker = b
        .js("return window.__pwned === undefined ? null : String(window.__pwned)")
        .await;
    assert_eq!(marker, Value::Null, "{page}: hostile markup ran");
    let injected = b
        .js("return document.querySelectorAll('main img, main script').length")
        .await;
    assert_eq!(injected, json!(0), "{page}: hostile markup became elements");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_response_bodies_payloads_and_descriptions_show_as_text_and_never_run() {
    let Some(b) = Browser::start("console hostile data").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let child = serve(dir.path());
    let base = child.base.clone();
    let http = reqwest::Client::new();
    let (receiver, hits) = receiver().await;
    let hook = json!({"url": format!("{receiver}/hostile"), "description": HOSTILE_DESCRIPTION});
    let (status, created) = post_json(&http, &format!("{base}/v1/webhooks"), &hook).await;
    assert_eq!(status, 201, "{created}");
    let webhook = created["id"].as_str().unwrap().to_owned();
    // An event type cannot carry markup: the API refuses it before any page could show it.
    let bad = json!({"event_type": "<script>x</script>", "payload": {}});
    assert_eq!(
        post_json(&http, &format!("{base}/v1/events"), &bad).await.0,
        422
    );
    let event = json!({"event_id": "evil-1", "event_type": "evil.markup",
                       "payload": {"html": HOSTILE_PAYLOAD}});
    assert_eq!(
        post_json(&http, &format!("{base}/v1/events"), &event)
            .await
            .0,
        202
    );
    // The attempt failed with the hostile body; the retry is an hour away.
    let started = std::time::Instant::now();
    while hits.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed().as_secs() < 30,
            "the receiver was never called"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    b.sign_in(&base, TOKEN).await;
    b.text_where("#count-pending", |t| t == "1").await;
    b.text_where("#webhook-stats", |t| t.contains(HOSTILE_DESCRIPTION))
        .await;
    b.text_where("#failure-classes", |t| t.contains("status"))
        .await;
    assert_unpwned(&b, "overview").await;

    b.click("a[href='#/webhooks']").await;
    b.text_where("#webhooks", |t| t.contains(HOSTILE_DESCRIPTION))
        .await;
    assert_unpwned(&b, "webhooks").await;
    b.goto(&format!("{base}/#/webhook/{webhook}")).await;
    b.text_where("#webhook-deliveries", |t| t.contains("evil-1"))
        .await;
    let value = b
        .js("return document.getElementById('edit-description').value")
        .await;
    assert_eq!(value, json!(HOSTILE_DESCRIPTION));
    assert_unpwned(&b, "webhook").await;

    b.click("a[href='#/deliveries']").await;
    b.text_where("#deliveries", |t| t.contains("evil-1")).await;
    assert_unpwned(&b, "deliveries").await;
    b.click(&format!("a[href='#/delivery/{webhook}/evil-1']"))
        .await;
    b.text_where("#records", |t| t.contains(HOSTILE_BODY)).await;
    b.text_where("#event-body", |t| {
        t.contains(&HOSTILE_PAYLOAD.replace('"', "\\\""))
    })
    .await;
    b.text_where("#event-type", |t| t == "evil.markup").await;
    b.text_where("#countdown", |t| t.starts_with("in ")).await;
    assert_unpwned(&b, "delivery").await;

    b.click("a[href='#/time']").await;
    b.text_where("#then-pending", |t| t == "1").await;
    assert_unpwned(&b, "time travel").await;
    b.assert_no_console_errors("hostile pages", &[]).await;
}
