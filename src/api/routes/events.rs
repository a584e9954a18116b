//! `POST /v1/events` and `POST /v1/apps/{app}/events`: publish an event to one app (the
//! route's, the scoped token's, or `default`). It is durable, with a delivery per matching
//! webhook of that app, before the answer; a repeat of its id in the same app with the same
//! body answers the first result, with another body 409.

use aide::axum::routing::post_with;
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiResult, Refusals};
use crate::api::error::ApiError;
use crate::api::extract::Json;
use crate::api::openapi::SortedJson;
use crate::api::scope::Scope;
use crate::api::AppState;
use crate::delivery::engine::Publish;
use crate::ids::{ProducerId, WebhookId};

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new().api_route(
        "/events",
        post_with(publish, |op| {
            op.summary("Publish an event")
                .description(
                    "202 once durable; a repeat with the same body 200 with the first answer, \
                     with another body 409; over the payload limit 413.",
                )
                .response_with::<202, SortedJson<PublishAnswer>, _>(|r| {
                    r.description("Published: the deliveries are enqueued.")
                })
                .response_with::<200, SortedJson<PublishAnswer>, _>(|r| {
                    r.description("Published before with the same body: the first answer.")
                })
                .refuses(&[409, 422])
        }),
    )
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// The producer's idempotency key: 1 to 256 characters of `[A-Za-z0-9._:~-]` (a UUID
    /// works), unique per app; a UUID is generated when absent.
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9._:~-]{1,256}$"),
        length(min = 1, max = 256)
    )]
    event_id: Option<String>,
    /// A dotted name of `[a-zA-Z0-9_-]` parts.
    #[schemars(regex(pattern = EVENT_TYPE_PATTERN), length(max = 200))]
    event_type: String,
    /// Any JSON: the body every attempt sends.
    payload: Value,
}

/// The event and the webhooks that got a delivery.
#[derive(Serialize, JsonSchema)]
pub struct PublishAnswer {
    /// The producer's id, as stored with the event.
    event_id: String,
    deliveries: Vec<WebhookId>,
}

async fn publish(
    State(state): State<AppState>,
    scope: Scope,
    Json(req): Json<NewEvent>,
) -> ApiResult<(StatusCode, SortedJson<PublishAnswer>)> {
    if !valid_event_type(&req.event_type) {
        return Err(ApiError::invalid(
            "event_type",
            "must be a dotted name of [a-zA-Z0-9_-] parts",
        ));
    }
    let producer_id = req
        .event_id
        .as_deref()
        .map(|s| {
            ProducerId::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    "event_id",
                    "must be 1 to 256 characters of [A-Za-z0-9._:~-]",
                )
            })
        })
        .transpose()?;
    let mut publish = Publish::new(producer_id, req.event_type, req.payload);
    publish.app = scope.app();
    let published = state.engine.publish(publish).await?;
    let status = if published.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let answer = PublishAnswer {
        event_id: published.event_id,
        deliveries: published.deliveries,
    };
    Ok((status, SortedJson(answer)))
}

/// An event-type filter: dotted names of `[a-zA-Z0-9_-]` parts, up to 200 characters.
pub(super) fn event_types_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "string",
            "pattern": EVENT_TYPE_PATTERN,
            "maxLength": 200,
        },
    })
}

/// [`event_types_schema`] or null (a PATCH that leaves the filter as it is).
pub(super) fn optional_event_types_schema(
    generator: &mut schemars::SchemaGenerator,
) -> schemars::Schema {
    let mut schema = event_types_schema(generator);
    schema.insert("type".into(), serde_json::json!(["array", "null"]));
    schema
}

/// What [`valid_event_type`] accepts, for the document.
pub const EVENT_TYPE_PATTERN: &str = "^[a-zA-Z0-9_-]+(\\.[a-zA-Z0-9_-]+)*$";

/// An event type is a dotted name of `[a-zA-Z0-9_-]` parts.
pub fn valid_event_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 200
        && t.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

pub(super) fn check_event_types(types: &[String]) -> ApiResult<()> {
    match types.iter().find(|t| !valid_event_type(t)) {
        Some(bad) => Err(ApiError::invalid(
            "event_types",
            format!("`{bad}` is not a dotted name of [a-zA-Z0-9_-] parts"),
        )),
        None => Ok(()),
    }
}
