//! `/v1/deliveries...`: the deliveries in the order they were enqueued (a cursor-paged list),
//! one delivery's audit trail, and a redelivery of one that finished.

use aide::axum::routing::{get_with, post_with};
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{blocking, optional_id, page_limit, parse_id, ApiResult, Refusals};
use crate::api::error::ApiError;
use crate::api::extract::{Path, Query};
use crate::api::openapi::SortedJson;
use crate::api::AppState;
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::record::Record;
use crate::ledger::view::{DeliveryFilter, DeliveryState, DeliverySummary};
use crate::store::Store;

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/deliveries",
            get_with(list_deliveries, |op| {
                op.summary("Live and finished deliveries, in the order they were enqueued")
                    .description("Pass the answer's `next_cursor` back as `cursor`.")
                    .refuses(&[422])
            }),
        )
        .api_route(
            "/deliveries/{webhook_id}/{event_id}",
            get_with(delivery, |op| {
                op.summary("A delivery's state and every record: its audit trail")
                    .refuses(&[404, 422])
            }),
        )
        .api_route(
            "/deliveries/{webhook_id}/{event_id}/redeliver",
            post_with(redeliver, |op| {
                op.summary("Requeue one finished delivery with a fresh budget")
                    .description("409 if it is still live.")
                    .response::<202, SortedJson<Requeued>>()
                    .refuses(&[404, 409, 422])
            }),
        )
}

/// `{webhook_id}/{event_id}`: one delivery.
#[derive(Deserialize, JsonSchema)]
pub struct DeliveryPath {
    #[schemars(with = "uuid::Uuid")]
    webhook_id: String,
    #[schemars(with = "uuid::Uuid")]
    event_id: String,
}

impl DeliveryPath {
    fn key(&self) -> ApiResult<DeliveryKey> {
        Ok(DeliveryKey::new(
            WebhookId(parse_id("webhook_id", &self.webhook_id)?),
            EventId(parse_id("event_id", &self.event_id)?),
        ))
    }
}

/// The requeue's `requeued` record.
#[derive(Serialize, JsonSchema)]
pub struct Requeued {
    requeued: bool,
    seq: u64,
}

/// Requeues one finished delivery with a fresh budget.
async fn redeliver(
    State(state): State<AppState>,
    Path(path): Path<DeliveryPath>,
) -> ApiResult<(StatusCode, SortedJson<Requeued>)> {
    let key = path.key()?;
    let seq = state
        .engine
        .redeliver(key, "redeliver requested through the API")
        .await?;
    state.engine.wake();
    let answer = Requeued {
        requeued: true,
        seq,
    };
    Ok((StatusCode::ACCEPTED, SortedJson(answer)))
}

/// A delivery's audit trail.
#[derive(Serialize, JsonSchema)]
pub struct Trail {
    webhook_id: WebhookId,
    event_id: EventId,
    state: DeliveryState,
    records: Vec<Record>,
}

/// A delivery's state and its full record history: the audit trail.
async fn delivery(
    State(state): State<AppState>,
    Path(path): Path<DeliveryPath>,
) -> ApiResult<SortedJson<Trail>> {
    let key = path.key()?;
    let ledger = state.engine.ledger().clone();
    let records = blocking(move || ledger.history(key)).await?;
    let Some(last) = records.last() else {
        return Err(ApiError::not_found(format!("no delivery {key}")));
    };
    Ok(SortedJson(Trail {
        webhook_id: key.webhook_id,
        event_id: key.event_id,
        state: DeliveryState::after(last.kind()),
        records,
    }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    #[schemars(with = "Option<uuid::Uuid>")]
    webhook_id: Option<String>,
    #[schemars(with = "Option<uuid::Uuid>")]
    event_id: Option<String>,
    #[schemars(with = "Option<DeliveryState>")]
    state: Option<String>,
    /// 1 to 1,000; 100 when absent.
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
    /// A previous page's `next_cursor`.
    cursor: Option<String>,
}

/// One page of deliveries.
#[derive(Serialize, JsonSchema)]
pub struct DeliveriesPage {
    data: Vec<DeliverySummary>,
    /// The next page's `cursor`; null on the last page.
    next_cursor: Option<String>,
}

/// Live and finished deliveries in the order they were enqueued, filtered by webhook, event or
/// state; pass the answer's `next_cursor` back as `cursor` for the next page.
async fn list_deliveries(
    State(state): State<AppState>,
    query: Result<Query<DeliveriesQuery>, ApiError>,
) -> ApiResult<SortedJson<DeliveriesPage>> {
    let Query(q) = query?;
    let limit = page_limit(q.limit)?;
    let filter = DeliveryFilter {
        webhook: optional_id("webhook_id", q.webhook_id.as_deref())?.map(WebhookId),
        webhooks: None,
        event: optional_id("event_id", q.event_id.as_deref())?.map(EventId),
        state: q
            .state
            .as_deref()
            .map(|s| {
                DeliveryState::parse(s).ok_or_else(|| {
                    ApiError::invalid(
                        "state",
                        format!("`{s}` is not one of pending, in_attempt, delivered, dead, parked"),
                    )
                })
            })
            .transpose()?,
    };
    let after = q.cursor.as_deref().map(cursor::decode).transpose()?;
    let reader = state.engine.ledger().reader()?;
    let rows = blocking(move || reader.deliveries(filter, after.unwrap_or(0), limit)).await?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| cursor::encode(r.enqueued_seq)))
        .flatten();
    Ok(SortedJson(DeliveriesPage {
        data: rows,
        next_cursor: next,
    }))
}

/// The opaque `cursor` of `GET /v1/deliveries`: the last listed delivery's `enqueued` seq.
mod cursor {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::ApiError;

    const PREFIX: &str = "enq:";

    pub fn encode(enqueued_seq: u64) -> String {
        URL_SAFE_NO_PAD.encode(format!("{PREFIX}{enqueued_seq}"))
    }

    pub fn decode(cursor: &str) -> Result<u64, ApiError> {
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|s| s.strip_prefix(PREFIX)?.parse().ok())
            .ok_or_else(|| {
                ApiError::invalid(
                    "cursor",
                    "not a cursor from a previous page's `next_cursor`",
                )
            })
    }
}
