//! `POST /v1/whatif`: the what-if report ([`crate::whatif`]) from a running server, the same
//! JSON as `hookledger whatif --json`. It reads the log through a read connection and writes
//! nothing; bad input is a 422 naming the field.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
use crate::delivery::backoff::RetrySchedule;
use crate::ids::WebhookId;
use crate::ledger::record::Timestamp;
use crate::whatif::{self, Policy, Query, Report, Scope};

/// The most fate changes one answer lists.
const MAX_LIMIT: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatifRequest {
    schedule: String,
    budget: Option<u32>,
    since: Option<String>,
    until: Option<String>,
    webhook_id: Option<String>,
    limit: Option<usize>,
}

fn timestamp(field: &str, s: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    s.map(|s| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.to_utc())
            .map_err(|e| ApiError::invalid(field, format!("not an RFC 3339 timestamp: {e}")))
    })
    .transpose()
}

fn query(req: &WhatifRequest) -> Result<Query, ApiError> {
    let schedule = RetrySchedule::parse(&req.schedule)
        .map_err(|e| ApiError::invalid("schedule", e.to_string()))?;
    let webhook = req
        .webhook_id
        .as_deref()
        .map(|s| {
            s.parse::<WebhookId>()
                .map_err(|_| ApiError::invalid("webhook_id", format!("`{s}` is not a UUID")))
        })
        .transpose()?;
    let limit = match req.limit.unwrap_or(whatif::DEFAULT_LIMIT) {
        n if n > MAX_LIMIT => {
            return Err(ApiError::invalid(
                "limit",
                format!("must be 0 to {MAX_LIMIT}"),
            ))
        }
        n => n,
    };
    let scope = Scope {
        since: timestamp("since", req.since.as_deref())?,
        until: timestamp("until", req.until.as_deref())?,
        webhook,
    };
    let policy = Policy {
        schedule,
        budget: req.budget,
    };
    Query::new(scope, policy, limit).map_err(|e| ApiError::invalid(e.field, e.message))
}

/// Replays the window's deliveries under the candidate schedule.
pub async fn whatif(
    State(state): State<AppState>,
    body: Result<Json<WhatifRequest>, JsonRejection>,
) -> Result<Json<Report>, ApiError> {
    let Json(req) = body?;
    let query = query(&req)?;
    let reader = state.engine.ledger().reader()?;
    let report = tokio::task::spawn_blocking(move || whatif::run(&reader, &query, &mut |_| {}))
        .await
        .map_err(|e| ApiError::from(crate::LedgerError::Invalid(e.to_string())))??;
    Ok(Json(report))
}
