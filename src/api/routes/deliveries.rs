//! `/v1/deliveries...` (and under `/v1/apps/{app}`): the deliveries in the order they were
//! enqueued (a cursor-paged list), one delivery's audit trail, and a redelivery of one that
//! finished. A delivery is named by its webhook and the producer's event id; answers show the
//! producer's id, and the 16-byte key the ledger records carry as `event_key`.

use aide::axum::routing::{get_with, post_with};
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{blocking, optional_id, page_limit, parse_id, timestamp, ApiResult, Refusals};
use crate::api::error::ApiError;
use crate::api::extract::{Path, Query};
use crate::api::openapi::SortedJson;
use crate::api::scope::Scope;
use crate::api::AppState;
use crate::ids::{AppUid, DeliveryKey, EventId, ProducerId, WebhookId};
use crate::ledger::record::{Record, Timestamp};
use crate::ledger::view::{DeliveryFilter, DeliveryState, DeliverySummary};
use crate::store::Store;

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/deliveries",
            get_with(list_deliveries, |op| {
                op.summary("Live and finished deliveries, in the order they were enqueued")
                    .description("Pass the answer's `next_cursor` back as `cursor`.")
                    .refuses(&[404, 422])
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
                    .description("409 if it is still live; 410 if its event's body was expunged.")
                    .response::<202, SortedJson<Requeued>>()
                    .refuses(&[404, 409, 410, 422])
            }),
        )
}

/// `{webhook_id}/{event_id}`: one delivery.
#[derive(Deserialize, JsonSchema)]
pub struct DeliveryPath {
    #[schemars(with = "uuid::Uuid")]
    webhook_id: String,
    /// The producer's event id (a UUID for events published without one).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:~-]{1,256}$"))]
    event_id: String,
}

/// A delivery the request may see, found by its webhook and the producer's event id.
struct Found {
    key: DeliveryKey,
    app: AppUid,
}

impl DeliveryPath {
    /// The delivery's key: the webhook must be one the request may see (another app's answers
    /// 404 as a missing one does), and the event id is the producer's, keyed in the webhook's
    /// app ([`ProducerId::key`]).
    fn find(&self, state: &AppState, scope: &Scope) -> ApiResult<Found> {
        let webhook = WebhookId(parse_id("webhook_id", &self.webhook_id)?);
        let producer = ProducerId::parse(&self.event_id).ok_or_else(|| {
            ApiError::invalid(
                "event_id",
                "must be 1 to 256 characters of [A-Za-z0-9._:~-]",
            )
        })?;
        let registry = state.engine.ledger().shared().read_registry();
        let app = registry.app_of(&webhook).clone();
        if registry.get(&webhook).is_none() || !scope.sees(&app) {
            return Err(ApiError::not_found(format!(
                "no delivery {webhook}/{producer}"
            )));
        }
        Ok(Found {
            key: DeliveryKey::new(webhook, producer.key(&app)),
            app,
        })
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
    scope: Scope,
    Path(path): Path<DeliveryPath>,
) -> ApiResult<(StatusCode, SortedJson<Requeued>)> {
    let key = path.find(&state, &scope)?.key;
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
    /// The app of the webhook (and of the event).
    app: String,
    /// The producer's event id.
    event_id: String,
    /// The event's 16-byte key, as the records name it.
    event_key: EventId,
    state: DeliveryState,
    records: Vec<Record>,
    /// The expunge of the event's body, when it was erased (its chained fact).
    body_expunged: Option<super::event_body::Fact>,
}

/// A delivery's state and its full record history: the audit trail.
async fn delivery(
    State(state): State<AppState>,
    scope: Scope,
    Path(path): Path<DeliveryPath>,
) -> ApiResult<SortedJson<Trail>> {
    let Found { key, app } = path.find(&state, &scope)?;
    let ledger = state.engine.ledger().clone();
    let (records, producer, expunged) = blocking(move || {
        let records = ledger.history(key)?;
        let reader = ledger.reader()?;
        let producer = reader.producer_ids(&[key.event_id])?;
        Ok((records, producer, reader.expunge_of(key.event_id)?))
    })
    .await?;
    let Some(last) = records.last() else {
        return Err(ApiError::not_found(format!(
            "no delivery {}/{}",
            key.webhook_id, path.event_id
        )));
    };
    Ok(SortedJson(Trail {
        webhook_id: key.webhook_id,
        app: app.to_string(),
        event_id: producer
            .get(&key.event_id)
            .cloned()
            .unwrap_or_else(|| path.event_id.clone()),
        event_key: key.event_id,
        state: DeliveryState::after(last.kind()),
        records,
        body_expunged: expunged.map(super::event_body::Fact::of),
    }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Only this app's deliveries (for the operator token on `/v1/deliveries`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:~-]{1,256}$"))]
    app: Option<String>,
    #[schemars(with = "Option<uuid::Uuid>")]
    webhook_id: Option<String>,
    /// The producer's event id, looked up in `app` (the request's app; `default` when none).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:~-]{1,256}$"))]
    event_id: Option<String>,
    #[schemars(with = "Option<DeliveryState>")]
    state: Option<String>,
    /// 1 to 1,000; 100 when absent.
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
    /// A previous page's `next_cursor` (of a listing in the same `order`).
    cursor: Option<String>,
    /// Only deliveries enqueued at or after this instant (RFC 3339).
    #[schemars(with = "Option<Timestamp>")]
    since: Option<String>,
    /// Only deliveries enqueued before this instant (RFC 3339); not before `since`.
    #[schemars(with = "Option<Timestamp>")]
    until: Option<String>,
    /// `oldest` (default: in the order they were enqueued) or `newest` (the latest first).
    #[schemars(regex(pattern = r"^(oldest|newest)$"))]
    order: Option<String>,
}

/// One delivery as listed.
#[derive(Serialize, JsonSchema)]
pub struct DeliveryRow {
    /// The producer's event id.
    event_id: String,
    /// The app of its webhook.
    app: String,
    #[serde(flatten)]
    summary: DeliverySummary,
}

/// One page of deliveries.
#[derive(Serialize, JsonSchema)]
pub struct DeliveriesPage {
    data: Vec<DeliveryRow>,
    /// The next page's `cursor`; null on the last page.
    next_cursor: Option<String>,
}

/// Live and finished deliveries in the order they were enqueued (or the latest first), filtered
/// by app, webhook, event, state or the window they were enqueued in; pass the answer's
/// `next_cursor` back as `cursor` for the next page.
async fn list_deliveries(
    State(state): State<AppState>,
    scope: Scope,
    query: Result<Query<DeliveriesQuery>, ApiError>,
) -> ApiResult<SortedJson<DeliveriesPage>> {
    let Query(q) = query?;
    let limit = page_limit(q.limit)?;
    let app = scope.filter(&state, q.app.as_deref())?;
    let webhook = optional_id("webhook_id", q.webhook_id.as_deref())?.map(WebhookId);
    if let Some(w) = webhook {
        check_webhook(&state, &scope, w)?;
    }
    let event = q
        .event_id
        .as_deref()
        .map(|s| {
            ProducerId::parse(s)
                .map(|p| p.key(app.as_ref().unwrap_or(&AppUid::default_app())))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "event_id",
                        "must be 1 to 256 characters of [A-Za-z0-9._:~-]",
                    )
                })
        })
        .transpose()?;
    let webhooks = app.as_ref().map(|app| {
        let registry = state.engine.ledger().shared().read_registry();
        registry.of_app(app).map(|w| w.id).collect::<Vec<_>>()
    });
    let (since, until) = window(q.since.as_deref(), q.until.as_deref())?;
    let newest_first = match q.order.as_deref() {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(other) => {
            let message = format!("`{other}` is not oldest or newest");
            return Err(ApiError::invalid("order", message));
        }
    };
    let filter = DeliveryFilter {
        webhook,
        webhooks,
        event,
        since,
        until,
        newest_first,
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
    let after = q
        .cursor
        .as_deref()
        .map(|c| cursor::decode(c, newest_first))
        .transpose()?;
    let reader = state.engine.ledger().reader()?;
    let (rows, producers) = blocking(move || {
        let rows = reader.deliveries(filter, after.unwrap_or(0), limit)?;
        let keys: Vec<EventId> = rows.iter().map(|r| r.event_id).collect();
        Ok((rows, reader.producer_ids(&keys)?))
    })
    .await?;
    let next = (rows.len() == limit)
        .then(|| {
            rows.last()
                .map(|r| cursor::encode(r.enqueued_seq, newest_first))
        })
        .flatten();
    let registry = state.engine.ledger().shared().read_registry();
    let data = rows
        .into_iter()
        .map(|summary| DeliveryRow {
            event_id: producers
                .get(&summary.event_id)
                .cloned()
                .unwrap_or_else(|| summary.event_id.to_string()),
            app: registry.app_of(&summary.webhook_id).to_string(),
            summary,
        })
        .collect();
    Ok(SortedJson(DeliveriesPage {
        data,
        next_cursor: next,
    }))
}

/// The `since`/`until` window of a listing: each an RFC 3339 instant, `since` not after `until`.
fn window(
    since: Option<&str>,
    until: Option<&str>,
) -> ApiResult<(Option<Timestamp>, Option<Timestamp>)> {
    let since = since.map(|s| timestamp("since", s)).transpose()?;
    let until = until.map(|s| timestamp("until", s)).transpose()?;
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            return Err(ApiError::invalid("since", "must not be after `until`"));
        }
    }
    Ok((since, until))
}

/// 404 for a `webhook_id` filter naming another app's webhook than the request may see (the
/// operator's unscoped view answers an empty page for an unknown one, as before apps).
pub(super) fn check_webhook(state: &AppState, scope: &Scope, webhook: WebhookId) -> ApiResult<()> {
    let registry = state.engine.ledger().shared().read_registry();
    let known = registry.get(&webhook).is_some();
    if scope.sees(registry.app_of(&webhook)) && (known || scope.filter(state, None)?.is_none()) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no webhook {webhook}")))
    }
}

/// The opaque `cursor` of `GET /v1/deliveries`: the last listed delivery's `enqueued` seq, and
/// the order it was listed in (a cursor of one order is refused in the other).
mod cursor {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::ApiError;

    const OLDEST: &str = "enq:";
    const NEWEST: &str = "enq-before:";

    fn prefix(newest_first: bool) -> &'static str {
        if newest_first {
            NEWEST
        } else {
            OLDEST
        }
    }

    pub fn encode(enqueued_seq: u64, newest_first: bool) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}{enqueued_seq}", prefix(newest_first)))
    }

    pub fn decode(cursor: &str, newest_first: bool) -> Result<u64, ApiError> {
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|s| s.strip_prefix(prefix(newest_first))?.parse().ok())
            .filter(|&seq| !newest_first || seq > 0)
            .ok_or_else(|| {
                ApiError::invalid(
                    "cursor",
                    "not a cursor from a previous page's `next_cursor`",
                )
            })
    }
}
