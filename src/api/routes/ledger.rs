//! The log itself: `/v1/state` (the queue as folded now or at a past point), `/v1/ledger` (raw
//! records in seq order), `/v1/ledger/head` and `/v1/verify`. All of them read; none writes.
//!
//! The head (last seq, the chain hash of the link ending there, when it was committed) is for an
//! outside system to keep: a hash chain alone cannot tell a log cut short together with its last
//! links from a shorter log; a head kept elsewhere can, with `hookledger verify --expect-head
//! SEQ:HASH`.

use aide::axum::routing::get_with;
use aide::axum::ApiRouter;
use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{blocking, optional_id, page_limit, timestamp, ApiResult, Refusals};
use crate::api::error::ApiError;
use crate::api::extract::Query;
use crate::api::openapi::SortedJson;
use crate::api::scope::Scope;
use crate::api::AppState;
use crate::ids::{EventId, WebhookId};
use crate::ledger::record::{Record, RecordKind, Timestamp};
use crate::ledger::verify::Verdict;
use crate::ledger::view::QueueView;
use crate::store::Store;

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/state",
            get_with(state, |op| {
                op.summary("The queue as reconstructed now, after record `seq`, or at `at`")
                    .description(
                        "`app` restricts it to one app's deliveries (a scoped token's always).",
                    )
                    .refuses(&[404, 422])
            }),
        )
        .api_route(
            "/ledger",
            get_with(ledger, |op| {
                op.summary("Raw ledger records in seq order")
                    .description(
                        "Pass the answer's `next_after_seq` back as `after_seq` to tail; `app` \
                         restricts it to one app's deliveries (a scoped token's always).",
                    )
                    .refuses(&[404, 422])
            }),
        )
        .api_route(
            "/ledger/head",
            get_with(head, |op| {
                op.summary("The ledger's head, to keep elsewhere (operator token)")
                    .refuses(&[403])
            }),
        )
        .api_route(
            "/verify",
            get_with(verify, |op| {
                op.summary("The `verify` verdict (operator token)")
                    .refuses(&[403])
            }),
        )
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    /// Only this app's deliveries (its live rows, and its counts).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:~-]{1,256}$"))]
    app: Option<String>,
    /// An instant (RFC 3339); wins over `seq`.
    #[schemars(with = "Option<Timestamp>")]
    at: Option<String>,
    /// A record's seq.
    seq: Option<u64>,
}

/// The queue as reconstructed now, after record `seq`, or at instant `at`.
async fn state(
    State(state): State<AppState>,
    scope: Scope,
    query: Result<Query<StateQuery>, ApiError>,
) -> ApiResult<axum::Json<QueueView>> {
    let Query(q) = query?;
    let at = q.at.as_deref().map(|s| timestamp("at", s)).transpose()?;
    let webhooks = app_webhooks(&state, &scope, q.app.as_deref())?;
    let ledger = state.engine.ledger().clone();
    let view = blocking(move || {
        let projection = match (at, q.seq) {
            (Some(at), _) => ledger.state_at_time(at)?,
            (None, Some(seq)) => ledger.state_at_seq(seq)?,
            (None, None) => ledger.state(),
        };
        Ok(match webhooks {
            None => QueueView::of(&projection),
            Some(webhooks) => {
                let finished = ledger
                    .reader()?
                    .finished_counts(&webhooks, projection.last_seq())?;
                QueueView::of_app(&projection, &webhooks.into_iter().collect(), finished)
            }
        })
    })
    .await?;
    Ok(axum::Json(view))
}

/// The webhooks of the app the request is restricted to (`None`: every app's).
fn app_webhooks(
    state: &AppState,
    scope: &Scope,
    app: Option<&str>,
) -> ApiResult<Option<Vec<WebhookId>>> {
    let Some(app) = scope.filter(state, app)? else {
        return Ok(None);
    };
    let registry = state.engine.ledger().shared().read_registry();
    Ok(Some(registry.of_app(&app).map(|w| w.id).collect()))
}

/// The verdict: `ok`, a line for people, and the counts and first problem.
#[derive(Serialize, JsonSchema)]
pub struct VerifyAnswer {
    ok: bool,
    verdict: String,
    detail: Verdict,
}

async fn verify(
    State(state): State<AppState>,
    scope: Scope,
) -> ApiResult<SortedJson<VerifyAnswer>> {
    scope.operator()?;
    let ledger = state.engine.ledger().clone();
    let verdict = blocking(move || ledger.verify()).await?;
    Ok(SortedJson(VerifyAnswer {
        ok: verdict.ok(),
        verdict: verdict.to_string(),
        detail: verdict,
    }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    /// Only the records of this app's deliveries.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:~-]{1,256}$"))]
    app: Option<String>,
    /// Records after this seq (0 when absent).
    after_seq: Option<u64>,
    /// 1 to 1,000; 100 when absent.
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
    #[schemars(with = "Option<uuid::Uuid>")]
    webhook_id: Option<String>,
    #[schemars(with = "Option<RecordKind>")]
    kind: Option<String>,
}

/// One page of records.
#[derive(Serialize, JsonSchema)]
pub struct LedgerPage {
    data: Vec<Record>,
    /// The producer's id of each event the records name by key.
    producer_ids: std::collections::BTreeMap<EventId, String>,
    /// The last record's seq (the next page's `after_seq`); null when the page is empty.
    next_after_seq: Option<u64>,
}

/// Raw ledger records in seq order, for audit export and tailing: pass the answer's
/// `next_after_seq` back as `after_seq`.
async fn ledger(
    State(state): State<AppState>,
    scope: Scope,
    query: Result<Query<LedgerQuery>, ApiError>,
) -> ApiResult<SortedJson<LedgerPage>> {
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
    if let Some(w) = webhook {
        super::deliveries::check_webhook(&state, &scope, w)?;
    }
    let webhooks = app_webhooks(&state, &scope, q.app.as_deref())?.map(|mut ws| {
        // An app's records of one webhook: none if the webhook is another app's.
        if let Some(w) = webhook {
            ws.retain(|x| *x == w);
        }
        ws
    });
    let reader = state.engine.ledger().reader()?;
    let after = q.after_seq.unwrap_or(0);
    let (rows, producer_ids) = blocking(move || {
        let rows = match &webhooks {
            Some(ws) => reader.page_of(after, limit, ws, kind)?,
            None => reader.page(after, limit, webhook, kind)?,
        };
        let keys: Vec<EventId> = rows.iter().map(|r| EventId(r.event_id)).collect();
        Ok((rows, reader.producer_ids(&keys)?))
    })
    .await?;
    let records = rows
        .into_iter()
        .map(|r| r.into_record())
        .collect::<crate::Result<Vec<_>>>()?;
    let next = records.last().map(|r| r.seq);
    Ok(SortedJson(LedgerPage {
        data: records,
        producer_ids: producer_ids.into_iter().collect(),
        next_after_seq: next,
    }))
}

/// The ledger's head.
#[derive(Serialize, JsonSchema)]
pub struct HeadAnswer {
    seq: u64,
    /// Hex SHA-256 of the chain link ending at `seq`.
    chain_hash: String,
    committed_at: Option<Timestamp>,
    /// `SEQ:HASH`, what `verify --expect-head` takes.
    anchor: String,
}

async fn head(State(state): State<AppState>, scope: Scope) -> ApiResult<SortedJson<HeadAnswer>> {
    scope.operator()?;
    let ledger = state.engine.ledger().clone();
    let head = blocking(move || ledger.head()).await?;
    Ok(SortedJson(HeadAnswer {
        seq: head.seq,
        chain_hash: hex::encode(head.hash),
        committed_at: head.committed_at,
        anchor: head.anchor(),
    }))
}
