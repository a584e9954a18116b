//! The console: a web page for operators and auditors, served by `serve` on the API's own
//! listener at `/` (issue 17). It owns the static assets (HTML, one stylesheet, an icon, a few ES
//! modules) embedded in the binary with `include_str!`, and the headers they are served with.
//!
//! Choice, and why: a small script without a build step (vanilla JavaScript modules, no
//! framework, no Node.js, no CDN). The console only reads and drives the existing JSON API
//! (`/v1/...`, with the bearer token the user signs in with, kept in `sessionStorage`), so it
//! needs no server-side templates; plain modules are embedded as they are written, `cargo
//! build` alone builds them, and there is nothing to vendor or keep up to date. The chart is a
//! small SVG the script draws itself.
//!
//! Invariants:
//! - the assets are public (like `/healthz`): they hold no data; every byte of data comes from
//!   the token-protected API, so a scoped token's console sees only what its API calls do;
//! - every console response carries a Content-Security-Policy without `unsafe-inline` (scripts
//!   only from this origin, no inline script or style, `frame-ancestors 'none'`),
//!   `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`;
//! - the script writes untrusted text (response bodies, payloads, event types, URLs) with
//!   `textContent` only, never `innerHTML`, so hostile data is shown as text, never markup.
//!
//! The console is not part of the JSON API, so it is not in the OpenAPI document: the router's
//! fallback ([`crate::api`]) asks [`asset`] first and answers the JSON 404 for anything else.

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Response, StatusCode};

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The embedded assets: (path, content type, body).
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("assets/index.html")),
    ("/console/style.css", CSS, include_str!("assets/style.css")),
    ("/console/icon.svg", SVG, include_str!("assets/icon.svg")),
    ("/favicon.ico", SVG, include_str!("assets/icon.svg")),
    ("/console/app.js", JS, include_str!("assets/app.js")),
    ("/console/api.js", JS, include_str!("assets/api.js")),
    ("/console/dom.js", JS, include_str!("assets/dom.js")),
    (
        "/console/overview.js",
        JS,
        include_str!("assets/overview.js"),
    ),
    (
        "/console/deliveries.js",
        JS,
        include_str!("assets/deliveries.js"),
    ),
    (
        "/console/webhooks.js",
        JS,
        include_str!("assets/webhooks.js"),
    ),
    (
        "/console/timetravel.js",
        JS,
        include_str!("assets/timetravel.js"),
    ),
];

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// The console's answer to `method path`, if `path` is one of its assets (GET or HEAD only);
/// `None` lets the caller answer its own 404 or 405.
pub fn asset(method: &Method, path: &str) -> Option<Response<Body>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let path = if path == "/console" || path == "/console/" {
        "/"
    } else {
        path
    };
    let (_, content_type, body) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(*body)
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_the_security_headers() {
        for (path, content_type, body) in ASSETS {
            let r = asset(&Method::GET, path).expect(path);
            assert_eq!(r.status(), StatusCode::OK);
            let h = r.headers();
            assert_eq!(h[header::CONTENT_TYPE], *content_type, "{path}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
            assert!(csp.contains("script-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe-inline"), "{csp}");
            assert!(!body.is_empty(), "{path}");
        }
    }

    #[test]
    fn no_asset_writes_markup_from_data() {
        for (path, _, body) in ASSETS {
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
            ] {
                assert!(!body.contains(banned), "{path} uses {banned}");
            }
        }
        let html = ASSETS[0].2;
        assert!(!html.contains("<script>"), "no inline script");
        assert!(!html.contains("style="), "no inline style");
    }

    #[test]
    fn only_get_and_head_of_known_paths_are_answered() {
        assert!(asset(&Method::POST, "/").is_none());
        assert!(asset(&Method::GET, "/console/nope.js").is_none());
        assert!(asset(&Method::GET, "/v1/webhooks").is_none());
        assert!(asset(&Method::GET, "/console").is_some());
        let head = asset(&Method::HEAD, "/console/app.js").unwrap();
        assert_eq!(head.headers()[header::CONTENT_TYPE], JS);
    }
}
