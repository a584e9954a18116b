//! The routes without a token: `/healthz` (liveness), `/metrics` (Prometheus text: counts
//! only, no ids, URLs or secrets; `?app=` names an app, so that one needs a token) and
//! `/openapi.json` (this API's document).

use aide::axum::routing::get_with;
use aide::axum::ApiRouter;
use aide::generate::GenContext;
use aide::openapi::{MediaType, Operation, Response, StatusCode as DocStatus};
use aide::OperationOutput;
use axum::extract::{Extension, State};
use axum::response::IntoResponse;
use indexmap::IndexMap;

use std::collections::HashSet;

use axum::http::HeaderMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{blocking, Refusals};
use crate::api::error::ApiError;
use crate::api::extract::Query;
use crate::api::openapi::Document;
use crate::api::scope::{no_app, Caller};
use crate::api::AppState;
use crate::ids::AppUid;
use crate::ledger::view::QueueView;

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
            get_with(metrics, |op| {
                op.summary("Prometheus metrics")
                    .description("With `app`, one app's deliveries by state: that needs a token.")
                    .refuses(&[401, 404])
            }),
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

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// One app's deliveries by state instead (needs the operator token or the app's own: it
    /// names the app).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:~-]{1,256}$"))]
    app: Option<String>,
}

/// Prometheus text: attempts by outcome, the queue by state, the ledger seq, the fold; or, with
/// `app`, that app's deliveries by state.
async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<MetricsQuery>, ApiError>,
) -> Result<Metrics, ApiError> {
    let Query(q) = query?;
    match q.app {
        Some(app) => app_metrics(state, &headers, &app).await,
        None => Ok(all_metrics(&state)),
    }
}

fn all_metrics(state: &AppState) -> Metrics {
    let ledger = state.engine.ledger();
    let (counts, seq) = {
        let projection = ledger.shared().read_projection();
        (projection.counts(), projection.last_seq())
    };
    Metrics(state.engine.metrics().render(
        counts,
        seq,
        ledger.rebuild_stats(),
        ledger.writer_pauses(),
    ))
}

/// One app's counts: its live deliveries from the projection, its finished ones counted in the
/// log up to the same seq.
async fn app_metrics(state: AppState, headers: &HeaderMap, app: &str) -> Result<Metrics, ApiError> {
    let caller = crate::api::caller(headers, &state).ok_or_else(ApiError::unauthorized)?;
    let app = AppUid::parse(app).ok_or_else(|| no_app(app))?;
    let (mut counts, list, seq) = {
        let registry = state.engine.ledger().shared().read_registry();
        let visible = match &caller {
            Caller::Operator => registry.apps().live(&app).is_some(),
            Caller::App(own, _) => own == &app,
        };
        if !visible {
            return Err(no_app(app.as_str()));
        }
        let webhooks: HashSet<_> = registry.of_app(&app).map(|w| w.id).collect();
        // One lock at a time: the writer takes both, in its own order.
        drop(registry);
        let projection = state.engine.ledger().shared().read_projection();
        let live = QueueView::of_app(&projection, &webhooks, (0, 0, 0)).counts;
        (
            live,
            webhooks.into_iter().collect::<Vec<_>>(),
            projection.last_seq(),
        )
    };
    let reader = state.engine.ledger().reader()?;
    let (delivered, dead, parked) = blocking(move || reader.finished_counts(&list, seq)).await?;
    (counts.delivered, counts.dead, counts.parked) = (delivered, dead, parked);
    Ok(Metrics(crate::metrics::render_app(app.as_str(), counts)))
}

/// The document, built once when the router is.
async fn openapi_json(Extension(document): Extension<Document>) -> Document {
    document
}
