//! The `/v1` handlers: webhooks, publishing, a delivery's audit trail, point-in-time state and
//! verify.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::Path;
use super::AppState;
use crate::delivery::engine::Publish;
use crate::delivery::guard::SystemLookup;
use crate::delivery::signing::Secret;
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::record::{RecordBody, RecordKind, Timestamp};
use crate::ledger::view::{DeliveryFilter, DeliveryState, QueueView};
use crate::ledger::writer::Commit;
use crate::registry::{Change, Webhook};
use crate::store::Store;

type ApiResult<T> = Result<T, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    url: String,
    #[serde(default)]
    event_types: Vec<String>,
    description: Option<String>,
    secret: Option<String>,
}

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

/// A webhook URL: http(s) with a host, not internal unless allowlisted, whether written as
/// an address or a name that resolves to one now.
async fn check_url(state: &AppState, url: &str) -> ApiResult<()> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ApiError::invalid("url", format!("not a URL: {e}")))?;
    state
        .egress
        .check_registration(&parsed, &SystemLookup)
        .await
        .map_err(|e| ApiError::invalid("url", e.to_string()))
}

fn webhook_json(w: &Webhook) -> Value {
    json!({
        "id": w.id, "url": w.url, "event_types": w.event_types,
        "description": w.description, "active": w.active,
        "created_at": w.created_at, "updated_at": w.updated_at,
    })
}

pub async fn create_webhook(
    State(state): State<AppState>,
    body: Result<Json<NewWebhook>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(req) = body?;
    check_url(&state, &req.url).await?;
    check_event_types(&req.event_types)?;
    let secret = match &req.secret {
        Some(s) => Secret::parse(s).map_err(|e| ApiError::invalid("secret", e.to_string()))?,
        None => Secret::generate(),
    };
    let id = WebhookId::new();
    let change = Change::Created {
        url: req.url,
        event_types: req.event_types,
        description: req.description,
        secret: secret.clone(),
        app: crate::ids::AppUid::default_app(),
        payload_format: Default::default(),
    };
    commit_change(&state, id, change, false).await?;
    let mut body = webhook_json(&registered(&state, id)?);
    body["secret"] = Value::String(secret.expose());
    Ok((StatusCode::CREATED, Json(body)))
}

/// Appends one registry change (and parks the webhook's pending deliveries when asked).
async fn commit_change(
    state: &AppState,
    id: WebhookId,
    change: Change,
    park: bool,
) -> ApiResult<crate::ledger::writer::Receipt> {
    let commit = Commit {
        changes: vec![(id, change)],
        park: park.then(|| (id, "webhook deactivated".to_owned())),
        ..Commit::default()
    };
    Ok(state.engine.ledger().commit(commit).await?)
}

fn registered(state: &AppState, id: WebhookId) -> ApiResult<Webhook> {
    state
        .engine
        .ledger()
        .shared()
        .read_registry()
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no webhook {id}")))
}

fn parse_id<T: std::str::FromStr>(field: &str, s: &str) -> ApiResult<T> {
    s.parse()
        .map_err(|_| ApiError::invalid(field, format!("`{s}` is not a UUID")))
}

pub async fn list_webhooks(State(state): State<AppState>) -> Json<Value> {
    let registry = state.engine.ledger().shared().read_registry();
    Json(json!({ "data": registry.all().map(webhook_json).collect::<Vec<_>>() }))
}

pub async fn get_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id("id", &id)?;
    Ok(Json(webhook_json(&registered(&state, id)?)))
}

/// Deactivates the webhook and parks its pending deliveries, in one commit.
pub async fn delete_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: WebhookId = parse_id("id", &id)?;
    registered(&state, id)?;
    let change = Change::Deactivated {
        reason: "deleted through the API".into(),
    };
    let receipt = commit_change(&state, id, change, true).await?;
    Ok(Json(
        json!({ "id": id, "active": false, "parked": receipt.parked.len() }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
    active: Option<bool>,
}

fn check_event_types(types: &[String]) -> ApiResult<()> {
    match types.iter().find(|t| !valid_event_type(t)) {
        Some(bad) => Err(ApiError::invalid(
            "event_types",
            format!("`{bad}` is not a dotted name of [a-zA-Z0-9_-] parts"),
        )),
        None => Ok(()),
    }
}

/// Changes url, event_types, description or active. Deactivating parks pending deliveries.
pub async fn patch_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<WebhookPatch>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let id: WebhookId = parse_id("id", &id)?;
    let Json(patch) = body?;
    registered(&state, id)?;
    if let Some(url) = &patch.url {
        check_url(&state, url).await?;
    }
    if let Some(types) = &patch.event_types {
        check_event_types(types)?;
    }
    let park = patch.active == Some(false);
    let change = Change::Updated {
        url: patch.url,
        event_types: patch.event_types,
        description: patch.description,
        active: patch.active,
        payload_format: None,
    };
    commit_change(&state, id, change, park).await?;
    Ok(Json(webhook_json(&registered(&state, id)?)))
}

/// A new secret; the previous one keeps signing beside it for a day.
pub async fn rotate_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: WebhookId = parse_id("id", &id)?;
    registered(&state, id)?;
    let secret = Secret::generate();
    let previous_until =
        chrono::Utc::now() + chrono::Duration::hours(crate::registry::ROTATION_OVERLAP_HOURS);
    let change = Change::SecretRotated {
        secret: secret.clone(),
        previous_until,
    };
    commit_change(&state, id, change, false).await?;
    Ok(Json(
        json!({ "id": id, "secret": secret.expose(), "previous_secret_until": previous_until }),
    ))
}

/// Requeues one finished delivery with a fresh budget.
pub async fn redeliver(
    State(state): State<AppState>,
    Path((webhook_id, event_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let key = DeliveryKey::new(
        WebhookId(parse_id("webhook_id", &webhook_id)?),
        EventId(parse_id("event_id", &event_id)?),
    );
    let seq = state
        .engine
        .redeliver(key, "redeliver requested through the API")
        .await?;
    state.engine.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "requeued": true, "seq": seq })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverWindow {
    since: String,
    until: Option<String>,
}

fn timestamp(field: &str, s: &str) -> ApiResult<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| ApiError::invalid(field, format!("not an RFC 3339 timestamp: {e}")))
}

/// Requeues the webhook's dead and parked deliveries that finished in the window.
pub async fn recover(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<RecoverWindow>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let id: WebhookId = parse_id("id", &id)?;
    let Json(window) = body?;
    registered(&state, id)?;
    let since = timestamp("since", &window.since)?;
    let until = match &window.until {
        Some(u) => timestamp("until", u)?,
        None => chrono::Utc::now(),
    };
    if until < since {
        return Err(ApiError::invalid("until", "must not be before `since`"));
    }
    let requeued = state
        .engine
        .recover(id, since, until, "recover requested through the API")
        .await?;
    Ok(Json(json!({ "requeued": requeued })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    event_id: Option<String>,
    event_type: String,
    payload: Value,
}

pub async fn publish(
    State(state): State<AppState>,
    body: Result<Json<NewEvent>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(req) = body?;
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
            crate::ids::ProducerId::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    "event_id",
                    "must be 1 to 256 characters of [A-Za-z0-9._:~-]",
                )
            })
        })
        .transpose()?;
    let published = state
        .engine
        .publish(Publish::new(producer_id, req.event_type, req.payload))
        .await?;
    let status = if published.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(json!({ "event_id": published.event_id, "deliveries": published.deliveries })),
    ))
}

/// A delivery's state and its full record history: the audit trail.
pub async fn delivery(
    State(state): State<AppState>,
    Path((webhook_id, event_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let key = DeliveryKey::new(
        WebhookId(parse_id("webhook_id", &webhook_id)?),
        EventId(parse_id("event_id", &event_id)?),
    );
    let ledger = state.engine.ledger().clone();
    let records = tokio::task::spawn_blocking(move || ledger.history(key))
        .await
        .map_err(|e| ApiError::from(crate::LedgerError::Invalid(e.to_string())))??;
    let Some(last) = records.last() else {
        return Err(ApiError::not_found(format!("no delivery {key}")));
    };
    let state_name = DeliveryState::after(last.kind());
    Ok(Json(json!({
        "webhook_id": key.webhook_id, "event_id": key.event_id,
        "state": state_name, "records": records,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    at: Option<String>,
    seq: Option<u64>,
}

/// The queue as reconstructed now, after record `seq`, or at instant `at`.
pub async fn state(
    State(state): State<AppState>,
    query: Result<Query<StateQuery>, QueryRejection>,
) -> ApiResult<Json<QueueView>> {
    let Query(q) = query?;
    let at = q.at.as_deref().map(|s| timestamp("at", s)).transpose()?;
    let ledger = state.engine.ledger().clone();
    let projection = tokio::task::spawn_blocking(move || match (at, q.seq) {
        (Some(at), _) => ledger.state_at_time(at),
        (None, Some(seq)) => ledger.state_at_seq(seq),
        (None, None) => Ok(ledger.state()),
    })
    .await
    .map_err(|e| ApiError::from(crate::LedgerError::Invalid(e.to_string())))??;
    Ok(Json(QueueView::of(&projection)))
}

pub async fn verify(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let ledger = state.engine.ledger().clone();
    let verdict = tokio::task::spawn_blocking(move || ledger.verify())
        .await
        .map_err(|e| ApiError::from(crate::LedgerError::Invalid(e.to_string())))??;
    Ok(Json(
        json!({ "ok": verdict.ok(), "verdict": verdict.to_string(), "detail": verdict }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    after_seq: Option<u64>,
    limit: Option<usize>,
    webhook_id: Option<String>,
    kind: Option<String>,
}

/// The most rows one page of `/v1/ledger` or `/v1/deliveries` returns.
const MAX_PAGE: usize = 1000;

/// A page's `limit`: 100 when absent, at most [`MAX_PAGE`].
fn page_limit(limit: Option<usize>) -> ApiResult<usize> {
    match limit.unwrap_or(100) {
        0 => Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_PAGE}"),
        )),
        n if n > MAX_PAGE => Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_PAGE}"),
        )),
        n => Ok(n),
    }
}

fn optional_id(field: &str, s: Option<&str>) -> ApiResult<Option<uuid::Uuid>> {
    s.map(|s| parse_id(field, s)).transpose()
}

/// Raw ledger records in seq order, for audit export and tailing: pass the answer's
/// `next_after_seq` back as `after_seq`.
pub async fn ledger(
    State(state): State<AppState>,
    query: Result<Query<LedgerQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query?;
    let limit = page_limit(q.limit)?;
    let webhook = optional_id("webhook_id", q.webhook_id.as_deref())?.map(WebhookId);
    let kind = q
        .kind
        .as_deref()
        .map(|k| {
            RecordKind::parse(k)
                .ok_or_else(|| ApiError::invalid("kind", format!("`{k}` is not a record kind")))
        })
        .transpose()?;
    let reader = state.engine.ledger().reader()?;
    let after = q.after_seq.unwrap_or(0);
    let rows = tokio::task::spawn_blocking(move || reader.page(after, limit, webhook, kind))
        .await
        .map_err(|e| ApiError::from(crate::LedgerError::Invalid(e.to_string())))??;
    let records = rows
        .into_iter()
        .map(|r| r.into_record())
        .collect::<crate::Result<Vec<_>>>()?;
    let next = records.last().map(|r| r.seq);
    Ok(Json(json!({ "data": records, "next_after_seq": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    webhook_id: Option<String>,
    event_id: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Live and finished deliveries in the order they were enqueued, filtered by webhook, event or
/// state; pass the answer's `next_cursor` back as `cursor` for the next page.
pub async fn list_deliveries(
    State(state): State<AppState>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
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
    let rows =
        tokio::task::spawn_blocking(move || reader.deliveries(filter, after.unwrap_or(0), limit))
            .await
            .map_err(|e| ApiError::from(crate::LedgerError::Invalid(e.to_string())))??;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| cursor::encode(r.enqueued_seq)))
        .flatten();
    Ok(Json(json!({ "data": rows, "next_cursor": next })))
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

/// Sends one signed test event to the webhook and answers with what the ledger recorded.
pub async fn test_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: WebhookId = parse_id("id", &id)?;
    registered(&state, id)?;
    let test = state.engine.test_delivery(id).await?;
    let delivered = test
        .records
        .iter()
        .any(|r| matches!(r, RecordBody::Delivered { .. }));
    Ok(Json(json!({
        "webhook_id": id, "event_id": test.event_id,
        "delivered": delivered, "records": test.records,
    })))
}

/// Prometheus text: attempts by outcome, the queue by state, the ledger seq, the fold.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let ledger = state.engine.ledger();
    let (counts, seq) = {
        let projection = ledger.shared().read_projection();
        (projection.counts(), projection.last_seq())
    };
    let text = state
        .engine
        .metrics()
        .render(counts, seq, ledger.rebuild_stats());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
