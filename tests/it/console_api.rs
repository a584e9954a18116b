//! The console's server side over real HTTP, without a browser: the assets at `/` are public
//! and carry the security headers, and `/v1/console/...` needs a token and is app-aware (the
//! figures of two apps' webhooks, and another app's event answering 404).

use serde_json::{json, Value};

use super::console::{api_until, receiver, serve};
use super::serve_child::{get, post_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_public_with_its_headers_and_its_figures_are_scoped() {
    let dir = tempfile::tempdir().unwrap();
    let child = serve(dir.path());
    let base = child.base.clone();
    let http = reqwest::Client::new();

    // The page and its modules, without a token, with the headers.
    for path in [
        "/",
        "/console/app.js",
        "/console/style.css",
        "/console/dom.js",
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    }
    let r = http
        .get(format!("{base}/console/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http.post(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 404, "the console takes GET only");
    // Its data needs a token.
    for path in ["/v1/console/session", "/v1/console/stats"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }

    // Two apps with a webhook each; acme's receiver fails once (a 500 kept), acme-co's not.
    let (receiver, _) = receiver().await;
    let mut apps = Vec::new();
    for (app, path) in [("acme", "hostile"), ("acme-co", "ok/acme-co")] {
        post_json(&http, &format!("{base}/v1/apps"), &json!({"uid": app})).await;
        let (_, t) = post_json(&http, &format!("{base}/v1/apps/{app}/tokens"), &json!({})).await;
        let hook = json!({"url": format!("{receiver}/{path}")});
        let (_, w) = post_json(&http, &format!("{base}/v1/apps/{app}/webhooks"), &hook).await;
        let event = json!({"event_id": "e-1", "event_type": "t", "payload": {"app": app}});
        post_json(&http, &format!("{base}/v1/apps/{app}/events"), &event).await;
        let webhook = w["id"].as_str().unwrap().to_owned();
        apps.push((t["token_value"].as_str().unwrap().to_owned(), webhook));
    }
    api_until(&http, &base, &format!("{}/e-1", apps[1].1), "delivered").await;
    let started = std::time::Instant::now();
    loop {
        let (_, trail) = get(&http, &format!("{base}/v1/deliveries/{}/e-1", apps[0].1)).await;
        if trail["records"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["kind"] == "failed"))
        {
            break;
        }
        assert!(started.elapsed().as_secs() < 30, "{trail}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let scoped = |token: &str, path: &str| {
        let req = http
            .get(format!("{base}{path}"))
            .bearer_auth(token.to_owned());
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (
                status,
                serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap(),
            )
        }
    };
    let (status, me) = scoped(&apps[0].0, "/v1/console/session").await;
    assert_eq!(
        (status, me),
        (200, json!({"operator": false, "app": "acme"}))
    );
    let (_, op) = get(&http, &format!("{base}/v1/console/session")).await;
    assert_eq!(op, json!({"operator": true, "app": null}));

    let until = chrono::Utc::now().to_rfc3339();
    let stats_path = format!(
        "/v1/console/stats?window=day&until={}",
        until.replace('+', "%2B")
    );
    let (_, all) = get(&http, &format!("{base}{stats_path}")).await;
    assert_eq!(all["webhooks"].as_array().unwrap().len(), 2, "{all}");
    let minutes: u64 = all["per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["delivered"].as_u64().unwrap() + m["failed"].as_u64().unwrap())
        .sum();
    assert_eq!(minutes, 2, "{all}");
    let (status, acme) = scoped(&apps[0].0, &stats_path).await;
    assert_eq!(status, 200, "{acme}");
    let hooks = acme["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1, "{acme}");
    assert_eq!(hooks[0]["webhook_id"], apps[0].1.as_str());
    assert_eq!(hooks[0]["success_rate"], json!(0.0));
    assert!(hooks[0]["last_failure_ms"].is_i64(), "{acme}");
    assert_eq!(acme["failure_classes"], json!({"status": 1}));
    let (_, other) = scoped(&apps[1].0, &stats_path).await;
    assert_eq!(other["webhooks"][0]["success_rate"], json!(1.0), "{other}");
    assert_eq!(other["failure_classes"], json!({}), "{other}");
    let (status, e) = scoped(&apps[0].0, "/v1/console/stats?window=year").await;
    assert_eq!(
        (status, e["error"]["field"].clone()),
        (422, json!("window"))
    );

    // The event of a delivery: the app's own, and another app's as a missing one.
    let (status, ev) = scoped(&apps[0].0, &format!("/v1/console/events/{}/e-1", apps[0].1)).await;
    assert_eq!(status, 200, "{ev}");
    assert_eq!(ev["event_type"], "t");
    let body: Value = serde_json::from_str(ev["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"app": "acme"}));
    let (status, _) = scoped(&apps[0].0, &format!("/v1/console/events/{}/e-1", apps[1].1)).await;
    assert_eq!(status, 404, "another app's event");

    // One webhook's figures: its histogram and classes; another app's webhook as a missing one.
    let one = format!("{stats_path}&webhook_id={}", apps[0].1);
    let (status, mine) = scoped(&apps[0].0, &one).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["webhooks"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["failure_classes"], json!({"status": 1}));
    assert_eq!(mine["webhooks"][0]["failure_classes"], json!({"status": 1}));
    let buckets = mine["latency_histogram"].as_array().unwrap();
    assert_eq!(buckets.len(), 11, "{mine}");
    assert_eq!(buckets[0]["from_ms"], 0);
    assert_eq!(buckets[10]["under_ms"], Value::Null);
    let counted: u64 = buckets
        .iter()
        .map(|b| b["attempts"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 1, "acme's one attempt: {mine}");
    let theirs = format!("{stats_path}&webhook_id={}", apps[1].1);
    assert_eq!(
        scoped(&apps[0].0, &theirs).await.0,
        404,
        "another app's webhook"
    );
    let (_, op_one) = get(&http, &format!("{base}{theirs}")).await;
    assert_eq!(op_one["failure_classes"], json!({}), "{op_one}");

    // The registry history: the app's own webhook, never a secret; another app's is missing.
    let history = format!("/v1/webhooks/{}/history", apps[0].1);
    let (status, h) = scoped(&apps[0].0, &history).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["data"][0]["kind"], "created", "{h}");
    assert!(h["data"][0]["url"].as_str().unwrap().ends_with("/hostile"));
    let text = h.to_string();
    assert!(
        !text.contains("secret\"") && !text.contains("whsec_"),
        "{text}"
    );
    let theirs = format!("/v1/webhooks/{}/history", apps[1].1);
    assert_eq!(
        scoped(&apps[0].0, &theirs).await.0,
        404,
        "another app's history"
    );
    assert_eq!(
        get(&http, &format!("{base}{theirs}")).await.0,
        200,
        "the operator's"
    );
    let r = http.get(format!("{base}{history}")).send().await.unwrap();
    assert_eq!(r.status(), 401, "the history needs a token");

    // The deliveries' window: bad values and an inverted window are refused naming the field.
    for (q, field) in [
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        (
            "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "since",
        ),
        ("order=random", "order"),
    ] {
        let (status, e) = get(&http, &format!("{base}/v1/deliveries?{q}")).await;
        assert_eq!(
            (status, e["error"]["field"].clone()),
            (422, json!(field)),
            "{q}: {e}"
        );
    }
    let (_, page) = get(&http, &format!("{base}/v1/deliveries?order=newest&limit=1")).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (status, e) = get(&http, &format!("{base}/v1/deliveries?cursor={cursor}")).await;
    assert_eq!(
        (status, e["error"]["field"].clone()),
        (422, json!("cursor")),
        "another order's cursor"
    );
}
