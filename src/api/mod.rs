//! The HTTP API (axum): routes under `/v1` need `Authorization: Bearer <token>` (the scheme in
//! any case): the operator token, compared in constant time, or a token scoped to one app
//! ([`scope`]: it sees only that app, and another app's objects answer 404); `/healthz`,
//! `/metrics` (counts only: no ids, URLs or secrets; `?app=` needs a token) and
//! `/openapi.json` do not. Handlers validate input at the boundary and answer
//! errors as `{"error": {"code", "message", "field"}}` (see [`error`]), unknown routes and
//! methods included. Nothing is written for a refused request.
//!
//! The routes live in [`routes`], one file per resource; [`openapi`] generates the OpenAPI 3.1
//! document from them (aide), so what is served and what is documented have one source.
//!
//! [`server`] is the listener that bounds slow, idle and too many clients; `drain` reads a
//! refused body so that the client reads the refusal.

mod drain;
pub mod error;
mod extract;
pub mod openapi;
mod routes;
pub mod scope;
pub mod server;

use std::sync::Arc;

use aide::openapi::OpenApi;
use axum::extract::{DefaultBodyLimit, Extension, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::delivery::engine::Engine;
use crate::delivery::guard::EgressPolicy;
use error::ApiError;
use scope::Caller;

/// The default payload limit of `POST /v1/events`.
pub const DEFAULT_MAX_PAYLOAD: usize = 256 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub egress: Arc<EgressPolicy>,
    /// The API token; never logged.
    pub token: Arc<String>,
    /// The auditor role's connection for `POST /v1/sql` on a PostgreSQL ledger
    /// ([`crate::sql::pg::SQL_URL`]); never logged.
    pub sql_url: Option<Arc<str>>,
}

/// The whole API.
pub fn router(state: AppState, max_payload: usize) -> Router {
    build(state, max_payload).0
}

/// The whole API and its OpenAPI document, built from the same `api_route` calls
/// ([`routes`]); `GET /openapi.json` serves this document.
pub fn build(state: AppState, max_payload: usize) -> (Router, OpenApi) {
    let v1 = routes::v1().layer(middleware::from_fn_with_state(state.clone(), require_token));
    let mut api = OpenApi::default();
    let app = routes::service::routes()
        .nest("/v1", v1)
        .finish_api_with(&mut api, openapi::finish);
    let router = app
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(openapi::Document::of(&api)))
        .layer(DefaultBodyLimit::max(max_payload))
        .with_state(state);
    (router, api)
}

/// Unknown paths get the JSON error too, not axum's empty 404.
/// The console's assets ([`crate::console`]) are answered here, outside the documented API.
async fn no_route(method: Method, uri: Uri) -> Response {
    if let Some(page) = crate::console::asset(&method, uri.path()) {
        return page;
    }
    ApiError::not_found(format!("no route {}", uri.path())).into_response()
}

/// A known path with a method it does not have: 405 with the JSON error. Under `/v1` the
/// token is checked first (this fallback is set on the routes after the token layer wraps
/// them), so a caller without a token learns nothing about which methods a route takes.
async fn method_not_allowed(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiError {
    if uri.path().starts_with("/v1/") && caller(&headers, &state).is_none() {
        return ApiError::unauthorized();
    }
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("this route does not take {method}"),
        field: None,
    }
}

/// The caller a request's bearer token names: the operator token, or a live token scoped to
/// a live app (looked up by its digest, see [`crate::registry::apps::Apps::token_app`]).
pub(crate) fn caller(headers: &HeaderMap, state: &AppState) -> Option<Caller> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)?;
    if same_token(presented, &state.token) {
        return Some(Caller::Operator);
    }
    if !presented.starts_with(crate::registry::apps::TOKEN_PREFIX) {
        return None;
    }
    let registry = state.engine.ledger().shared().read_registry();
    registry
        .apps()
        .live_token(presented)
        .map(|t| Caller::App(t.app.clone(), t.id))
}

/// Puts the [`Caller`] on the request, or refuses it with 401.
async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = caller(request.headers(), &state).ok_or_else(ApiError::unauthorized)?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// The token of an `Authorization: Bearer <token>` value: the scheme is case-insensitive
/// (RFC 7235) and one or more spaces separate it from the token (RFC 6750's `1*SP`).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    let token = rest.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares SHA-256 digests in constant time, so that neither the token's bytes nor its
/// length show in the response time.
/// `expected` is the token, or `sha256:` and its hex digest (what `serve` keeps: the process
/// never holds a stored token in plaintext).
fn same_token(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = match expected.strip_prefix("sha256:").map(hex::decode) {
        Some(Ok(digest)) => digest,
        _ => Sha256::digest(expected.as_bytes()).to_vec(),
    };
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::{bearer, same_token};

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_takes_one_or_more_spaces() {
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER   abc", Some("abc")),
            ("Bearer abc def", Some("abc def")),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearerabc", None),
            ("Basic abc", None),
            ("abc", None),
            (" Bearer abc", None),
        ] {
            assert_eq!(bearer(value), token, "{value:?}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("secret-token", "secret-token"));
        for other in [
            "secret-tokeN",
            "secret-toke",
            "secret-token ",
            "",
            "Secret-token",
        ] {
            assert!(!same_token(other, "secret-token"), "{other:?}");
        }
    }
}
