//! `/v1/events/{event_id}/body`: erasing one event's body now (`DELETE`, with a reason) and
//! asking whether it was (`GET`: the chained fact). See [`crate::ledger::expunge`].
//!
//! The route is the operator's (the API token; a scoped token gets 403); the fact records
//! `operator` as the actor. The event id is the producer's, in the route's app
//! (`/v1/apps/{app}/events/{id}/body`; `default` on the unscoped route). A
//! refused request (unknown event 404, already expunged 410, no reason 422) writes nothing.

use aide::axum::routing::get_with;
use aide::axum::ApiRouter;
use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{blocking, ApiResult, Refusals};
use crate::api::error::ApiError;
use crate::api::extract::{Json, Path};
use crate::api::openapi::SortedJson;
use crate::api::scope::Scope;
use crate::api::AppState;
use crate::ids::{AppUid, EventId, ProducerId};
use crate::ledger::expunge::{ExpungeOrder, StoredExpunge, OPERATOR};
use crate::ledger::writer::Commit;
use crate::store::Store;

/// The longest reason kept with a fact.
pub const MAX_REASON: usize = 1000;

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new().api_route(
        "/events/{event_id}/body",
        get_with(status, |op| {
            op.summary("Whether the event's body was expunged, and the fact if it was")
                .refuses(&[403, 404, 422])
        })
        .delete_with(expunge, |op| {
            op.summary("Erase the event's body now")
                .description(
                    "Removes the body from the database (the event's other fields, its digest \
                     and its chain link stay), parks its pending deliveries with reason \
                     `body_expunged` and appends a chained fact (who, when, why). Redeliver and \
                     recover of the event answer 410 afterwards.",
                )
                .refuses(&[403, 404, 410, 422])
        }),
    )
}

/// `{event_id}`: the producer's id of an event of the request's app (a UUID is its own id in
/// the default app).
#[derive(Deserialize, JsonSchema)]
pub struct EventPath {
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:~-]{1,256}$"))]
    event_id: String,
}

impl EventPath {
    fn key(&self, app: &AppUid) -> ApiResult<EventId> {
        ProducerId::parse(&self.event_id)
            .map(|p| p.key(app))
            .ok_or_else(|| {
                ApiError::invalid(
                    "event_id",
                    "must be 1 to 256 characters of [A-Za-z0-9._:~-]",
                )
            })
    }
}

/// Why the body goes (kept in the fact).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpungeRequest {
    /// 1 to 1,000 characters.
    #[schemars(length(min = 1, max = 1000))]
    reason: String,
}

/// One expunge fact.
#[derive(Serialize, JsonSchema)]
pub struct Fact {
    seq: u64,
    event_id: EventId,
    /// When it was committed (RFC 3339).
    expunged_at: String,
    actor: String,
    reason: String,
    /// SHA-256 of the removed body, hex.
    body_digest: String,
    /// The fact's chain hash, hex.
    hash: String,
}

impl Fact {
    pub(super) fn of(x: StoredExpunge) -> Self {
        Self {
            seq: x.seq,
            event_id: x.event_id,
            expunged_at: chrono::DateTime::from_timestamp_micros(x.recorded_at_us)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            actor: x.actor,
            reason: x.reason,
            body_digest: hex::encode(x.body_digest),
            hash: hex::encode(x.hash),
        }
    }
}

/// What an expunge did.
#[derive(Serialize, JsonSchema)]
pub struct Expunged {
    fact: Fact,
    /// How many pending deliveries were parked (`body_expunged`).
    parked: usize,
}

/// The body's status.
#[derive(Serialize, JsonSchema)]
pub struct BodyStatus {
    event_id: EventId,
    expunged: bool,
    /// The fact, when it was.
    fact: Option<Fact>,
}

async fn expunge(
    State(state): State<AppState>,
    scope: Scope,
    Path(path): Path<EventPath>,
    Json(req): Json<ExpungeRequest>,
) -> ApiResult<SortedJson<Expunged>> {
    scope.operator()?;
    let event_id = path.key(&scope.app())?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON {
        return Err(ApiError::invalid("reason", "must be 1 to 1,000 characters"));
    }
    let engine = state.engine.clone();
    let receipt = engine
        .ledger()
        .commit(Commit {
            expunge: vec![ExpungeOrder {
                event_id,
                actor: OPERATOR.to_owned(),
                reason: reason.to_owned(),
            }],
            ..Commit::default()
        })
        .await?;
    engine.forget_body(event_id);
    let ledger = engine.ledger().clone();
    let fact = blocking(move || ledger.reader()?.expunge_of(event_id))
        .await?
        .ok_or_else(|| ApiError::from(crate::LedgerError::UnknownEvent(event_id)))?;
    Ok(SortedJson(Expunged {
        fact: Fact::of(fact),
        parked: receipt.seqs.len(),
    }))
}

async fn status(
    State(state): State<AppState>,
    scope: Scope,
    Path(path): Path<EventPath>,
) -> ApiResult<SortedJson<BodyStatus>> {
    scope.operator()?;
    let event_id = path.key(&scope.app())?;
    let ledger = state.engine.ledger().clone();
    let (events, fact) = blocking(move || {
        let reader = ledger.reader()?;
        Ok((reader.events(&[event_id])?, reader.expunge_of(event_id)?))
    })
    .await?;
    let Some(event) = events.into_iter().next() else {
        return Err(ApiError::not_found(format!("no event {event_id}")));
    };
    Ok(SortedJson(BodyStatus {
        event_id,
        expunged: event.expunged,
        fact: fact.map(Fact::of),
    }))
}
