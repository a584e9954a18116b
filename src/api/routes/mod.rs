//! The routes, one file per resource, mirroring the URLs: [`apps`] (`/v1/apps...`: apps and
//! their tokens), [`webhooks`] (`/v1/webhooks...`), [`webhook_history`]
//! (`/v1/webhooks/{id}/history`: a webhook's registry changes),
//! [`events`] (`/v1/events`), [`deliveries`] (`/v1/deliveries...`), [`ledger`] (`/v1/state`,
//! `/v1/ledger`, `/v1/ledger/head`, `/v1/verify`), [`event_body`] (`/v1/events/{id}/body`:
//! erasure), [`whatif`] (`/v1/whatif`), [`sql`] (`/v1/sql`), [`console_stats`]
//! (`/v1/console/...`: the console's read-only figures) and [`service`]
//! (`/healthz`, `/metrics`, `/openapi.json`, no token). Each file's `routes()` returns an aide
//! [`ApiRouter`] whose paths are relative to where [`super::router`] mounts it.
//!
//! The invariant: every route is documented. A route is added only with `api_route`, never
//! with axum's `route`, and `src/api/openapi_tests.rs` fails when the router serves a
//! (method, path) the document does not name.
//!
//! Adding a documented route, in the style of the others:
//! 1. the handler takes its input through [`super::extract`]'s `Path<T>` (a struct named after
//!    the route's `{parameters}`), `Query<T>` and `Json<T>`, with `T: Deserialize + JsonSchema`
//!    (`#[serde(deny_unknown_fields)]`; `#[schemars(...)]` for formats, ranges, patterns);
//! 2. it answers `ApiResult<SortedJson<R>>` (a 200), or `ApiResult<(StatusCode, SortedJson<R>)>`
//!    with the status declared in the transform (`.response::<201, SortedJson<R>>()`), where `R`
//!    is a `Serialize + JsonSchema` struct, never a `serde_json::Value`;
//! 3. it is mounted with `api_route(path, post_with(handler, |op| op.summary(..).refuses(&[..])))`
//!    listing every refusal the handler answers itself (404, 409, 422); the extractors add 400,
//!    413 and 415, and every `/v1` operation gets the bearer requirement, 401 and 503.

mod apps;
mod console_stats;
mod deliveries;
mod event_body;
mod events;
mod ledger;
pub mod service;
mod sql;
mod webhook_history;
mod webhooks;
mod whatif;

use aide::axum::ApiRouter;

use super::error::ApiError;
use super::AppState;
use crate::ledger::record::Timestamp;

pub use super::openapi::Refusals;

type ApiResult<T> = Result<T, ApiError>;

/// The `/v1` routes (the token layer is put on them by [`super::router`]).
pub fn v1() -> ApiRouter<AppState> {
    ApiRouter::new()
        .merge(app_resources())
        .nest("/apps/{app}", app_scoped())
        .merge(apps::routes())
        .merge(ledger::routes())
        .merge(whatif::routes())
        .merge(sql::routes())
        .merge(console_stats::routes())
}

/// What an app owns: its webhooks, events and deliveries. Served twice, with the same
/// handlers: unscoped (`/v1/webhooks`: the operator's view of every app, writing into
/// `default`; a scoped token's own app) and under `/v1/apps/{app}` (see [`super::scope`]).
fn app_resources() -> ApiRouter<AppState> {
    ApiRouter::new()
        .merge(webhooks::routes())
        .merge(webhook_history::routes())
        .merge(events::routes())
        .merge(event_body::routes())
        .merge(deliveries::routes())
}

/// [`app_resources`] for mounting under `/apps/{app}`: the `{app}` parameter is documented on
/// each operation (the handlers read it through [`super::scope::Scope`]), and every operation
/// may answer 404 for an app that does not exist or that the token may not see.
fn app_scoped() -> ApiRouter<AppState> {
    app_resources().with_path_items(|mut item| {
        aide::generate::in_context(|ctx| {
            for operation in super::openapi::operations_mut(item.inner_mut()) {
                let app = aide::openapi::ReferenceOr::Item(app_parameter());
                operation.parameters.insert(0, app);
                super::openapi::add_refusal(ctx, operation, 404);
            }
        });
        item
    })
}

/// The `{app}` path parameter: an app's uid.
fn app_parameter() -> aide::openapi::Parameter {
    use aide::openapi::{Parameter, ParameterData, ParameterSchemaOrContent, SchemaObject};
    Parameter::Path {
        parameter_data: ParameterData {
            name: "app".into(),
            description: Some("The app's uid.".into()),
            required: true,
            format: ParameterSchemaOrContent::Schema(SchemaObject {
                json_schema: schemars::json_schema!({
                    "type": "string",
                    "pattern": APP_UID_PATTERN,
                }),
                example: None,
                external_docs: None,
            }),
            extensions: Default::default(),
            deprecated: None,
            example: None,
            examples: Default::default(),
            explode: None,
        },
        style: Default::default(),
    }
}

/// An app uid or producer event id, for the document (see [`crate::ids::is_producer_id`]).
pub const APP_UID_PATTERN: &str = r"^[A-Za-z0-9._:~-]{1,256}$";

/// A UUID path or query parameter: 422 naming the field when it is not one.
fn parse_id<T: std::str::FromStr>(field: &str, s: &str) -> ApiResult<T> {
    s.parse()
        .map_err(|_| ApiError::invalid(field, format!("`{s}` is not a UUID")))
}

fn optional_id(field: &str, s: Option<&str>) -> ApiResult<Option<uuid::Uuid>> {
    s.map(|s| parse_id(field, s)).transpose()
}

fn timestamp(field: &str, s: &str) -> ApiResult<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| ApiError::invalid(field, format!("not an RFC 3339 timestamp: {e}")))
}

/// Runs a blocking ledger read off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::from(crate::LedgerError::Invalid(e.to_string())))?
        .map_err(ApiError::from)
}

/// The most rows one page of `/v1/ledger` or `/v1/deliveries` returns.
const MAX_PAGE: usize = 1000;

/// A page's `limit`: 100 when absent, at most [`MAX_PAGE`].
fn page_limit(limit: Option<usize>) -> ApiResult<usize> {
    match limit.unwrap_or(100) {
        n if n == 0 || n > MAX_PAGE => Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_PAGE}"),
        )),
        n => Ok(n),
    }
}
