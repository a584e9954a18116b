//! The HTTP API (axum): routes under `/v1` need `Authorization: Bearer <token>`, compared in
//! constant time; `/healthz` does not. Handlers validate input at the boundary and answer
//! errors as `{"error": {"code", "message", "field"}}` (see [`error`]). Nothing is written for
//! a refused request.

pub mod error;
mod extract;
mod routes;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
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
        .route(
            "/deliveries/{webhook_id}/{event_id}/redeliver",
            post(routes::redeliver),
        )
        .route("/events", post(routes::publish))
        .route("/deliveries/{webhook_id}/{event_id}", get(routes::delivery))
        .route("/state", get(routes::state))
        .route("/ledger", get(routes::ledger))
        .route("/verify", get(routes::verify))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .nest("/v1", v1)
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(max_payload))
        .with_state(state)
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
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(state.token.as_bytes())) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::unauthorized())
    }
}
