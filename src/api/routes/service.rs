//! The routes without a token: `/healthz` (liveness), `/metrics` (Prometheus text: counts
//! only, no ids, URLs or secrets) and `/openapi.json` (this API's document).

use aide::axum::routing::get_with;
use aide::axum::ApiRouter;
use aide::generate::GenContext;
use aide::openapi::{MediaType, Operation, Response, StatusCode as DocStatus};
use aide::OperationOutput;
use axum::extract::{Extension, State};
use axum::response::IntoResponse;
use indexmap::IndexMap;

use super::Refusals;
use crate::api::error::ApiError;
use crate::api::openapi::Document;
use crate::api::AppState;

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/healthz",
            get_with(health, |op| {
                op.summary("Liveness: `ok`, or 503 while the database cannot be written")
                    .refuses(&[503])
            }),
        )
        .api_route(
            "/metrics",
            get_with(metrics, |op| op.summary("Prometheus metrics")),
        )
        .api_route(
            "/openapi.json",
            get_with(openapi_json, |op| op.summary("This document")),
        )
}

/// `ok`, or 503 `storage_unavailable` with the reason while the database cannot be written.
async fn health(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    match state.engine.ledger().shared().storage_error() {
        None => Ok("ok"),
        Some(reason) => Err(crate::LedgerError::StorageUnavailable { reason }.into()),
    }
}

/// Prometheus text exposition (version 0.0.4).
pub struct Metrics(String);

impl IntoResponse for Metrics {
    fn into_response(self) -> axum::response::Response {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            self.0,
        )
            .into_response()
    }
}

impl OperationOutput for Metrics {
    type Inner = String;

    fn operation_response(ctx: &mut GenContext, _operation: &mut Operation) -> Option<Response> {
        Some(Response {
            description: "Attempts by outcome, the queue by state, the ledger seq, the fold."
                .into(),
            content: IndexMap::from_iter([(
                "text/plain; version=0.0.4; charset=utf-8".into(),
                MediaType {
                    schema: Some(aide::openapi::SchemaObject {
                        json_schema: ctx.schema.subschema_for::<String>(),
                        example: None,
                        external_docs: None,
                    }),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        })
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<DocStatus>, Response)> {
        Self::operation_response(ctx, operation)
            .map(|r| vec![(Some(DocStatus::Code(200)), r)])
            .unwrap_or_default()
    }
}

/// Prometheus text: attempts by outcome, the queue by state, the ledger seq, the fold.
async fn metrics(State(state): State<AppState>) -> Metrics {
    let ledger = state.engine.ledger();
    let (counts, seq) = {
        let projection = ledger.shared().read_projection();
        (projection.counts(), projection.last_seq())
    };
    Metrics(
        state
            .engine
            .metrics()
            .render(counts, seq, ledger.rebuild_stats()),
    )
}

/// The document, built once when the router is.
async fn openapi_json(Extension(document): Extension<Document>) -> Document {
    document
}
