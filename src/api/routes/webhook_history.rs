//! `GET /v1/webhooks/{id}/history` (and under `/v1/apps/{app}`): a webhook's registry history,
//! every change appended for it in order (created, updated, configured, deactivated, secret
//! rotated or resealed), with its time, seq, actor and the fields it set: who changed what,
//! and when.
//!
//! Invariants: read-only; app-aware like the webhook routes (another app's webhook answers 404
//! as a missing one does); a secret never leaves: the answer is built from the change rows'
//! public columns only (never `secret` or `token_digest`), so a rotation shows only that it
//! happened and until when the previous key still signed. The actor is the row's, as its chain
//! link covers it ([`crate::registry::actor`]: `operator`, `token:<token id>`,
//! `system:<what>`); a change written before actors were recorded shows null.

use aide::axum::routing::get_with;
use aide::axum::ApiRouter;
use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{blocking, page_limit, parse_id, ApiResult, Refusals};
use crate::api::error::ApiError;
use crate::api::extract::{Path, Query};
use crate::api::openapi::SortedJson;
use crate::api::scope::Scope;
use crate::api::AppState;
use crate::ids::WebhookId;
use crate::ledger::record::Timestamp;
use crate::registry::StoredChange;
use crate::store::Store;

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new().api_route(
        "/webhooks/{id}/history",
        get_with(history, |op| {
            op.summary("A webhook's registry history: every change, oldest first; never a secret")
                .description("Pass the answer's `next_cursor` back as `cursor`.")
                .refuses(&[404, 422])
        }),
    )
}

/// `{id}`: a webhook's id.
#[derive(Deserialize, JsonSchema)]
pub struct HistoryPath {
    #[schemars(with = "uuid::Uuid")]
    id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// 1 to 1,000; 100 when absent.
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
    /// A previous page's `next_cursor`.
    cursor: Option<String>,
}

/// One registry change of the webhook, without any secret.
#[derive(Serialize, JsonSchema, Debug, PartialEq)]
pub struct HistoryEntry {
    /// The change's seq in the registry log.
    seq: u64,
    recorded_at: Timestamp,
    /// `created`, `updated`, `configured`, `deactivated`, `secret_rotated`, `secret_resealed`.
    kind: String,
    /// The fields the change set (absent: unchanged).
    url: Option<String>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
    active: Option<bool>,
    payload_format: Option<String>,
    /// Who made the change: `operator`, `token:<token id>` (an app-scoped token, by id),
    /// `system:<what>` (hookledger itself, e.g. `system:auto_disable`) or `cli`; null for a
    /// change recorded before actors were (registry rows of format 1 and 2).
    actor: Option<String>,
    /// A deactivation's reason.
    reason: Option<String>,
    /// A `configured` change's options, or an auto-disable's evidence (a JSON object as text).
    details: Option<String>,
    /// A rotation: until when the previous secret still signs beside the new one.
    previous_secret_until: Option<Timestamp>,
}

impl HistoryEntry {
    fn of(c: StoredChange) -> Self {
        let time = |us: i64| chrono::DateTime::from_timestamp_micros(us);
        Self {
            seq: c.seq,
            recorded_at: time(c.recorded_at_us).unwrap_or_default(),
            event_types: c.event_types.map(|t| {
                t.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            url: c.url,
            description: c.description,
            active: c.active,
            payload_format: c.payload_format,
            reason: c.reason,
            actor: c.actor,
            details: c.metadata,
            previous_secret_until: c.previous_until_us.and_then(time),
            kind: c.kind,
        }
    }
}

/// One page of a webhook's history.
#[derive(Serialize, JsonSchema)]
pub struct HistoryPage {
    webhook_id: WebhookId,
    data: Vec<HistoryEntry>,
    /// The next page's `cursor`; null on the last page.
    next_cursor: Option<String>,
}

async fn history(
    State(state): State<AppState>,
    scope: Scope,
    Path(path): Path<HistoryPath>,
    query: Result<Query<HistoryQuery>, ApiError>,
) -> ApiResult<SortedJson<HistoryPage>> {
    let Query(q) = query?;
    let id = WebhookId(parse_id("id", &path.id)?);
    let limit = page_limit(q.limit)?;
    let after = q.cursor.as_deref().map(decode).transpose()?.unwrap_or(0);
    {
        let registry = state.engine.ledger().shared().read_registry();
        if registry.get(&id).is_none() || !scope.sees(registry.app_of(&id)) {
            return Err(ApiError::not_found(format!("no webhook {id}")));
        }
    }
    let reader = state.engine.ledger().reader()?;
    // The registry log is small beside the ledger (a few rows per webhook); it is read after
    // the cursor and only this webhook's rows are kept.
    let rows = blocking(move || reader.changes_after(after)).await?;
    let data: Vec<HistoryEntry> = rows
        .into_iter()
        .filter(|c| c.webhook_id == id.0)
        .take(limit)
        .map(HistoryEntry::of)
        .collect();
    let next_cursor = (data.len() == limit)
        .then(|| data.last().map(|e| e.seq.to_string()))
        .flatten();
    Ok(SortedJson(HistoryPage {
        webhook_id: id,
        data,
        next_cursor,
    }))
}

/// A cursor: the last listed change's seq.
fn decode(cursor: &str) -> ApiResult<u64> {
    cursor.parse().map_err(|_| {
        ApiError::invalid(
            "cursor",
            "not a cursor from a previous page's `next_cursor`",
        )
    })
}
