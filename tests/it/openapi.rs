//! `GET /openapi.json` on the real router over loopback: served without a token, and what it
//! says holds for the server: every `/v1` operation refuses a request without the token (401),
//! the routes without a token answer without one, and a method a path does not list is 405
//! (401 first under `/v1` without the token).

use serde_json::Value;

use crate::hostile::{App, TOKEN};

fn get(app: &App, path: &str, token: Option<&str>) -> (u16, Option<String>, Value) {
    request(app, reqwest::Method::GET, path, token)
}

fn request(
    app: &App,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Option<String>, Value) {
    app.rt.block_on(async {
        let mut req = app.client.request(method, format!("{}{path}", app.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.expect("body");
        (
            status,
            content_type,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
}

/// A path template with every `{parameter}` filled with a UUID.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn the_document_is_served_without_a_token_and_its_security_holds() {
    let app = App::start();
    let (status, content_type, doc) = get(&app, "/openapi.json", None);
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(
        paths.contains_key("/v1/webhooks/{id}"),
        "{:?}",
        paths.keys()
    );
    let mut v1_operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let method: reqwest::Method = method.to_uppercase().parse().expect("a method");
            let secured = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            let (status, _, body) = request(&app, method.clone(), &concrete(path), None);
            if path.starts_with("/v1/") {
                v1_operations += 1;
                assert!(secured, "{method} {path}: no bearer requirement");
                assert_eq!(status, 401, "{method} {path} without a token: {body}");
                assert_eq!(body["error"]["code"], "unauthorized");
            } else {
                assert!(!secured, "{method} {path}: needs no token");
                assert_eq!(status, 200, "{method} {path} without a token: {body}");
            }
        }
    }
    assert!(v1_operations >= 15, "{v1_operations}");
}

#[test]
fn a_method_the_document_does_not_list_is_405_after_the_token() {
    let app = App::start();
    let (status, _, body) = request(&app, reqwest::Method::PUT, "/v1/webhooks", None);
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &"unauthorized".into())
    );
    let (status, _, body) = request(&app, reqwest::Method::PUT, "/v1/webhooks", Some(TOKEN));
    assert_eq!(
        (status, &body["error"]["code"]),
        (405, &"method_not_allowed".into())
    );
    let (status, _, body) = request(&app, reqwest::Method::POST, "/openapi.json", None);
    assert_eq!(
        (status, &body["error"]["code"]),
        (405, &"method_not_allowed".into())
    );
}
