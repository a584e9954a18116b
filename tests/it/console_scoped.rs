//! The console signed in with an app-scoped token (issue 17): two apps with look-alike names
//! (`acme`, `acme-co`) and a delivered event in each; no page, list, chart or time-travel view
//! of `acme`'s session shows anything of `acme-co`'s, and another app's webhook or delivery
//! opened by its address answers as a missing one.

use serde_json::json;

use super::console::{api_until, receiver, serve};
use super::console_browser::Browser;
use super::serve_child::post_json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_session_sees_only_its_own_app() {
    let Some(mut b) = Browser::start("console scoped session").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let child = serve(dir.path());
    let base = child.base.clone();
    let http = reqwest::Client::new();
    let (receiver, _) = receiver().await;

    let mut seen = Vec::new(); // (app, token, webhook id, event id, url)
    for app in ["acme", "acme-co"] {
        let (status, a) = post_json(&http, &format!("{base}/v1/apps"), &json!({"uid": app})).await;
        assert_eq!(status, 201, "{a}");
        let (status, t) =
            post_json(&http, &format!("{base}/v1/apps/{app}/tokens"), &json!({})).await;
        assert_eq!(status, 201, "{t}");
        let token = t["token_value"].as_str().unwrap().to_owned();
        let token_id = t["id"].as_str().unwrap().to_owned();
        let url = format!("{receiver}/ok/{app}-hooks");
        let hook = json!({"url": url, "description": format!("{app} orders")});
        let (status, w) = post_json(&http, &format!("{base}/v1/apps/{app}/webhooks"), &hook).await;
        assert_eq!(status, 201, "{w}");
        let webhook = w["id"].as_str().unwrap().to_owned();
        let event_id = format!("{app}-order-1");
        let event =
            json!({"event_id": event_id, "event_type": "order.created", "payload": {"app": app}});
        let (status, e) = post_json(&http, &format!("{base}/v1/apps/{app}/events"), &event).await;
        assert_eq!(status, 202, "{e}");
        api_until(&http, &base, &format!("{webhook}/{event_id}"), "delivered").await;
        seen.push((app, token, webhook, event_id, url, token_id));
    }
    let (_, acme_token, acme_hook, acme_event, acme_url, acme_token_id) = seen[0].clone();
    let (_, _, other_hook, other_event, other_url, _) = seen[1].clone();
    // acme's own token edits its webhook: the history names that token by its id.
    let edited = http
        .patch(format!("{base}/v1/webhooks/{acme_hook}"))
        .bearer_auth(&acme_token)
        .header("content-type", "application/json")
        .body(json!({"description": "acme orders, edited"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), 200);

    let leaks = |text: &str| {
        for needle in [
            other_hook.as_str(),
            other_event.as_str(),
            other_url.as_str(),
            "acme-co",
        ] {
            assert!(
                !text.contains(needle),
                "the acme session shows `{needle}`:\n{text}"
            );
        }
    };

    b.sign_in(&base, &acme_token).await;
    b.text_where("#who", |t| t == "app acme").await;
    b.text_where("#count-delivered", |t| t == "1").await;
    b.text_where("#webhook-stats", |t| t.contains(&acme_url))
        .await;
    let total = b
        .js("return document.getElementById('attempts-chart').dataset.total")
        .await;
    assert_eq!(total, json!("1"), "the chart counts only acme's attempt");
    assert!(
        b.client
            .find(fantoccini::Locator::Css("#verify"))
            .await
            .is_err(),
        "no verify"
    );
    leaks(&b.body_text().await);
    b.screenshots("scoped-overview").await;

    b.click("a[href='#/deliveries']").await;
    b.text_where("#deliveries", |t| t.contains(&acme_event))
        .await;
    leaks(&b.body_text().await);
    b.click("a[href='#/webhooks']").await;
    b.text_where("#webhooks", |t| t.contains(&acme_hook)).await;
    leaks(&b.body_text().await);
    b.click(&format!("a[href='#/webhook/{acme_hook}']")).await;
    b.text_where("#webhook-deliveries", |t| t.contains(&acme_event))
        .await;
    b.text_where("#history", |t| {
        t.contains("created") && t.contains(&acme_url)
    })
    .await;
    // Who: the operator made the webhook, acme's token (by id, never its value) edited it.
    let by = b
        .js("const head = [...document.querySelectorAll('#history thead th')].map((t) => t.textContent); \
             return [...document.querySelectorAll('#history tbody tr')] \
               .map((r) => r.cells[head.indexOf('By')].textContent)")
        .await;
    assert_eq!(
        by,
        json!(["operator", format!("token:{acme_token_id}")]),
        "the history's actors"
    );
    assert!(
        !b.body_text().await.contains(&acme_token),
        "never the token"
    );
    b.js_until(
        "const c = document.getElementById('latency-histogram'); return c && c.dataset.total",
        json!("1"),
    )
    .await;
    leaks(&b.body_text().await);
    b.screenshots("scoped-webhook").await;
    b.click(&format!("a[href='#/delivery/{acme_hook}/{acme_event}']"))
        .await;
    b.text_where("#delivery-state", |t| t == "delivered").await;
    b.text_where("#event-body", |t| t.contains("\"acme\""))
        .await;
    leaks(&b.body_text().await);
    b.click("a[href='#/time']").await;
    b.text_where("#then-delivered", |t| t == "1").await;
    leaks(&b.body_text().await);
    b.screenshots("scoped-time").await;

    // The other app's objects by address: as missing ones, and nothing of theirs is shown
    // (the page repeats the ids it was given in the address, nothing more).
    let shows_nothing_of_theirs = |text: &str| {
        for needle in [
            other_url.as_str(),
            "acme-co orders",
            "\"acme-co\"",
            "delivered",
        ] {
            assert!(
                !text.contains(needle),
                "the acme session shows `{needle}`:\n{text}"
            );
        }
    };
    b.goto(&format!("{base}/#/webhook/{other_hook}")).await;
    b.sees("no webhook").await;
    shows_nothing_of_theirs(&b.body_text().await);
    b.goto(&format!("{base}/#/delivery/{other_hook}/{other_event}"))
        .await;
    b.text_where("#records", |t| t.contains("no delivery"))
        .await;
    b.text_where("#event-body", |t| t.contains("no event"))
        .await;
    shows_nothing_of_theirs(&b.body_text().await);
    b.size(1280, 900).await;
    // The 404s of the two addresses above are the only console errors.
    b.assert_no_console_errors("the scoped pages", &["404"])
        .await;
}
