//! The HTTP API (axum): routes under `/v1` need `Authorization: Bearer <token>` (the scheme in
//! any case), compared in constant time; `/healthz` and `/metrics` (counts only: no ids, URLs or
//! secrets) do not. Handlers validate input at the boundary and answer errors as
//! `{"error": {"code", "message", "field"}}` (see [`error`]), unknown routes and methods
//! included. Nothing is written for a refused request. [`server`] is the listener that bounds
//! slow, idle and too many clients; `drain` reads a refused body so that the client reads the
//! refusal.

mod drain;
pub mod error;
mod extract;
mod head;
mod routes;
pub mod server;
mod whatif;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::delivery::engine::Engine;
use crate::delivery::guard::EgressPolicy;
use error::ApiError;

/// The default payload limit of `POST /v1/events`.
pub const DEFAULT_MAX_PAYLOAD: usize = 256 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub egress: Arc<EgressPolicy>,
    /// The API token; never logged.
    pub token: Arc<String>,
}

/// The whole API.
pub fn router(state: AppState, max_payload: usize) -> Router {
    let v1 = Router::new()
        .route(
            "/webhooks",
            post(routes::create_webhook).get(routes::list_webhooks),
        )
        .route(
            "/webhooks/{id}",
            get(routes::get_webhook)
                .patch(routes::patch_webhook)
                .delete(routes::delete_webhook),
        )
        .route("/webhooks/{id}/rotate-secret", post(routes::rotate_secret))
        .route("/webhooks/{id}/recover", post(routes::recover))
        .route("/webhooks/{id}/test", post(routes::test_webhook))
        .route("/deliveries", get(routes::list_deliveries))
        .route(
            "/deliveries/{webhook_id}/{event_id}/redeliver",
            post(routes::redeliver),
        )
        .route("/events", post(routes::publish))
        .route("/deliveries/{webhook_id}/{event_id}", get(routes::delivery))
        .route("/state", get(routes::state))
        .route("/ledger", get(routes::ledger))
        .route("/ledger/head", get(head::head))
        .route("/verify", get(routes::verify))
        .route("/whatif", post(whatif::whatif))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(routes::metrics))
        .nest("/v1", v1)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_payload))
        .with_state(state)
}

/// `ok`, or 503 `storage_unavailable` with the reason while the database cannot be written.
async fn health(State(state): State<AppState>) -> Response {
    match state.engine.ledger().shared().storage_error() {
        None => "ok".into_response(),
        Some(reason) => {
            ApiError::from(crate::LedgerError::StorageUnavailable { reason }).into_response()
        }
    }
}

/// Unknown paths get the JSON error too, not axum's empty 404.
async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path()))
}

/// A known path with a method it does not have: 405 with the JSON error.
async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("this route does not take {method}"),
        field: None,
    }
}

async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match presented {
        Some(token) if same_token(token, &state.token) => Ok(next.run(request).await),
        _ => Err(ApiError::unauthorized()),
    }
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
fn same_token(presented: &str, expected: &str) -> bool {
    let (a, b) = (
        Sha256::digest(presented.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
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
