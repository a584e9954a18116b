//! `POST /v1/whatif`: the what-if report ([`crate::whatif`]) from a running server, the same
//! JSON as `hookledger whatif --json`. It reads the log through a read connection and writes
//! nothing; bad input is a 422 naming the field.

use aide::axum::routing::post_with;
use aide::axum::ApiRouter;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{blocking, Refusals};
use crate::api::error::ApiError;
use crate::api::extract::Json;
use crate::api::scope::Scope as Access;
use crate::api::AppState;
use crate::delivery::backoff::RetrySchedule;
use crate::ids::WebhookId;
use crate::ledger::record::Timestamp;
use crate::whatif::{self, Policy, Query, Report, Scope};

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new().api_route(
        "/whatif",
        post_with(whatif, |op| {
            op.summary("The window's deliveries replayed under another retry schedule")
                .description("The same JSON as `hookledger whatif --json`; reads only.")
                .refuses(&[403, 422])
        }),
    )
}

/// The most fate changes one answer lists.
const MAX_LIMIT: usize = 10_000;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatifRequest {
    /// The candidate retry schedule: comma-separated durations (`30s,5m,1h`).
    schedule: String,
    /// Attempts before a delivery is dead-parked.
    budget: Option<u32>,
    #[schemars(with = "Option<Timestamp>")]
    since: Option<String>,
    #[schemars(with = "Option<Timestamp>")]
    until: Option<String>,
    #[schemars(with = "Option<uuid::Uuid>")]
    webhook_id: Option<String>,
    /// The most fate changes listed (0 to 10,000).
    #[schemars(range(max = 10_000))]
    limit: Option<usize>,
}

fn timestamp(field: &str, s: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    s.map(|s| super::timestamp(field, s)).transpose()
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
async fn whatif(
    State(state): State<AppState>,
    access: Access,
    Json(req): Json<WhatifRequest>,
) -> Result<axum::Json<Report>, ApiError> {
    access.operator()?;
    let query = query(&req)?;
    let reader = state.engine.ledger().reader()?;
    let report = blocking(move || whatif::run(&reader, &query, &mut |_| {})).await?;
    Ok(axum::Json(report))
}
