//! `/v1/console/...`: the read-only figures the console (`crate::console`) needs that the
//! resource routes do not answer: who the token is (`/console/session`), attempts per minute,
//! per-webhook success rate and latency percentiles and failure classes, and the latency
//! histogram, over a window, for every webhook the token sees or one (`/console/stats`), and the event a delivery carries (`/console/events/{webhook_id}/{event_id}`).
//!
//! Invariants: nothing here writes; every answer is app-aware like the routes it sits beside (a
//! scoped token's figures are its own app's webhooks only, another app's event answers 404 as a
//! missing one does), and the figures are aggregated by the store (DuckDB or PostgreSQL,
//! [`Store::attempt_stats`]) over the window's records of those webhooks only, never by loading
//! the ledger.

use std::collections::BTreeMap;

use aide::axum::routing::get_with;
use aide::axum::ApiRouter;
use axum::extract::State;
use chrono::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{blocking, optional_id, parse_id, timestamp, ApiResult, Refusals};
use crate::api::error::ApiError;
use crate::api::extract::{Path, Query};
use crate::api::openapi::SortedJson;
use crate::api::scope::Scope;
use crate::api::AppState;
use crate::ids::{ProducerId, WebhookId};
use crate::ledger::record::Timestamp;
use crate::store::{AttemptStats, AttemptStatsQuery, Store, LATENCY_BOUNDS_MS};

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/console/session",
            get_with(session, |op| {
                op.summary("Who the token is: the operator, or a token scoped to one app")
            }),
        )
        .api_route(
            "/console/stats",
            get_with(stats, |op| {
                op.summary("Attempts per minute, failure classes and per-webhook latency")
                    .description(
                        "Over the `window` (hour, day or week) ending at `until` (the ledger's \
                         head when absent), of every webhook the token sees or of `webhook_id`; \
                         the per-minute series covers the last hour.",
                    )
                    .refuses(&[404, 422])
            }),
        )
        .api_route(
            "/console/events/{webhook_id}/{event_id}",
            get_with(event, |op| {
                op.summary("The event a delivery carries: its type and published body")
                    .refuses(&[404, 422])
            }),
        )
}

/// Who the request's token is.
#[derive(Serialize, JsonSchema)]
pub struct Session {
    /// The operator token: every app.
    operator: bool,
    /// The app a scoped token sees (null for the operator).
    app: Option<String>,
}

async fn session(scope: Scope) -> SortedJson<Session> {
    let operator = scope.operator().is_ok();
    SortedJson(Session {
        operator,
        app: (!operator).then(|| scope.app().to_string()),
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Only this app's webhooks (a scoped token's always).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:~-]{1,256}$"))]
    app: Option<String>,
    /// `hour` (default), `day` or `week`.
    #[schemars(regex(pattern = r"^(hour|day|week)$"))]
    window: Option<String>,
    /// The window's end (RFC 3339); the ledger head's commit time when absent.
    #[schemars(with = "Option<Timestamp>")]
    until: Option<String>,
    /// Only this webhook's attempts (one the token may see).
    #[schemars(with = "Option<uuid::Uuid>")]
    webhook_id: Option<String>,
}

/// One minute's attempts.
#[derive(Serialize, JsonSchema, Default, Clone, Copy)]
pub struct Minute {
    /// The minute's start, in milliseconds since the epoch.
    minute_ms: i64,
    delivered: u64,
    failed: u64,
}

/// One webhook's attempts over the window.
#[derive(Serialize, JsonSchema)]
pub struct WebhookStats {
    webhook_id: String,
    attempts: u64,
    delivered: u64,
    /// delivered / attempts.
    success_rate: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// The last failed attempt in the window, in milliseconds since the epoch.
    last_failure_ms: Option<i64>,
    /// Its failed attempts in the window by error class.
    failure_classes: BTreeMap<String, u64>,
}

/// One bucket of the latency histogram: attempts that took `from_ms` up to `under_ms`.
#[derive(Serialize, JsonSchema)]
pub struct Bucket {
    from_ms: u32,
    /// Exclusive; null for the last bucket (every slower attempt).
    under_ms: Option<u32>,
    attempts: u64,
}

/// The console's figures.
#[derive(Serialize, JsonSchema)]
pub struct Stats {
    since: Timestamp,
    until: Timestamp,
    /// The last hour before `until`, one entry per minute that had attempts, oldest first.
    per_minute: Vec<Minute>,
    /// Failed attempts in the window by error class.
    failure_classes: BTreeMap<String, u64>,
    webhooks: Vec<WebhookStats>,
    /// The window's attempts by duration.
    latency_histogram: Vec<Bucket>,
}

async fn stats(
    State(state): State<AppState>,
    scope: Scope,
    query: Result<Query<StatsQuery>, ApiError>,
) -> ApiResult<SortedJson<Stats>> {
    let Query(q) = query?;
    let span = match q.window.as_deref().unwrap_or("hour") {
        "hour" => Duration::hours(1),
        "day" => Duration::days(1),
        "week" => Duration::weeks(1),
        other => {
            let message = format!("`{other}` is not hour, day or week");
            return Err(ApiError::invalid("window", message));
        }
    };
    let until = q
        .until
        .as_deref()
        .map(|s| timestamp("until", s))
        .transpose()?;
    if until.is_some_and(|t| t.timestamp() < 0) {
        return Err(ApiError::invalid("until", "must not be before 1970"));
    }
    let webhook = optional_id("webhook_id", q.webhook_id.as_deref())?.map(WebhookId);
    let app = scope.filter(&state, q.app.as_deref())?;
    let webhooks: Option<Vec<WebhookId>> = match webhook {
        Some(w) => {
            super::deliveries::check_webhook(&state, &scope, w)?;
            Some(vec![w])
        }
        None => app.map(|app| {
            let registry = state.engine.ledger().shared().read_registry();
            registry.of_app(&app).map(|w| w.id).collect()
        }),
    };
    let ledger = state.engine.ledger().clone();
    let stats = blocking(move || {
        let until = match until {
            Some(t) => t,
            None => ledger.head()?.committed_at.unwrap_or_default(),
        };
        let since = until - span;
        let query = AttemptStatsQuery {
            webhooks,
            since,
            until,
            minutes_since: until - Duration::hours(1),
        };
        Ok(figures(
            since,
            until,
            ledger.reader()?.attempt_stats(&query)?,
        ))
    })
    .await?;
    Ok(SortedJson(stats))
}

/// The route's answer from the store's aggregates.
fn figures(since: Timestamp, until: Timestamp, a: AttemptStats) -> Stats {
    let mut failure_classes = BTreeMap::new();
    let mut per_webhook: BTreeMap<WebhookId, BTreeMap<String, u64>> = BTreeMap::new();
    for (webhook, class, n) in a.failure_classes {
        *failure_classes.entry(class.clone()).or_insert(0) += n;
        *per_webhook
            .entry(webhook)
            .or_default()
            .entry(class)
            .or_insert(0) += n;
    }
    let webhooks = a
        .webhooks
        .into_iter()
        .map(|w| WebhookStats {
            webhook_id: w.webhook_id.to_string(),
            attempts: w.attempts,
            delivered: w.delivered,
            success_rate: if w.attempts == 0 {
                0.0
            } else {
                w.delivered as f64 / w.attempts as f64
            },
            p50_ms: w.p50_ms,
            p99_ms: w.p99_ms,
            last_failure_ms: w.last_failure_ms,
            failure_classes: per_webhook.remove(&w.webhook_id).unwrap_or_default(),
        })
        .collect();
    let latency_histogram = a
        .latency_histogram
        .into_iter()
        .enumerate()
        .map(|(i, attempts)| Bucket {
            from_ms: i.checked_sub(1).map_or(0, |p| LATENCY_BOUNDS_MS[p]),
            under_ms: LATENCY_BOUNDS_MS.get(i).copied(),
            attempts,
        })
        .collect();
    Stats {
        since,
        until,
        per_minute: a
            .per_minute
            .into_iter()
            .map(|(minute_ms, delivered, failed)| Minute {
                minute_ms,
                delivered,
                failed,
            })
            .collect(),
        failure_classes,
        webhooks,
        latency_histogram,
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventPath {
    #[schemars(with = "uuid::Uuid")]
    webhook_id: String,
    /// The producer's event id.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:~-]{1,256}$"))]
    event_id: String,
}

/// The event a delivery carries.
#[derive(Serialize, JsonSchema)]
pub struct EventView {
    event_type: String,
    published_at: Timestamp,
    /// The stored body as text (null once erased).
    body: Option<String>,
    expunged: bool,
}

async fn event(
    State(state): State<AppState>,
    scope: Scope,
    Path(path): Path<EventPath>,
) -> ApiResult<SortedJson<EventView>> {
    let webhook = WebhookId(parse_id("webhook_id", &path.webhook_id)?);
    let producer = ProducerId::parse(&path.event_id).ok_or_else(|| {
        ApiError::invalid(
            "event_id",
            "must be 1 to 256 characters of [A-Za-z0-9._:~-]",
        )
    })?;
    let missing = || ApiError::not_found(format!("no event {webhook}/{producer}"));
    let key = {
        let registry = state.engine.ledger().shared().read_registry();
        let app = registry.app_of(&webhook).clone();
        if registry.get(&webhook).is_none() || !scope.sees(&app) {
            return Err(missing());
        }
        producer.key(&app)
    };
    let reader = state.engine.ledger().reader()?;
    let found = blocking(move || reader.events(&[key])).await?;
    let stored = found.into_iter().next().ok_or_else(missing)?;
    Ok(SortedJson(EventView {
        event_type: stored.event_type,
        published_at: stored.published_at,
        body: (!stored.expunged).then(|| String::from_utf8_lossy(&stored.body).into_owned()),
        expunged: stored.expunged,
    }))
}
