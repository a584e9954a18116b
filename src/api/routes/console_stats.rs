//! `/v1/console/...`: the read-only figures the console (`crate::console`) needs that the
//! resource routes do not answer: who the token is (`/console/session`), attempts per minute,
//! per-webhook success rate and latency percentiles and failure classes over a window
//! (`/console/stats`), and the event a delivery carries (`/console/events/{webhook_id}/{event_id}`).
//!
//! Invariants: nothing here writes; every answer is app-aware like the routes it sits beside (a
//! scoped token's figures are its own app's webhooks only, another app's event answers 404 as a
//! missing one does), and the figures are aggregated in DuckDB over the window's records only,
//! never by loading the ledger.

use std::collections::{BTreeMap, HashSet};

use aide::axum::routing::get_with;
use aide::axum::ApiRouter;
use axum::extract::State;
use chrono::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{blocking, parse_id, timestamp, ApiResult, Refusals};
use crate::api::error::ApiError;
use crate::api::extract::{Path, Query};
use crate::api::openapi::SortedJson;
use crate::api::scope::Scope;
use crate::api::AppState;
use crate::ids::{ProducerId, WebhookId};
use crate::ledger::record::Timestamp;
use crate::store::Store;

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
                         head when absent); the per-minute series covers the last hour.",
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
    let mine: Option<HashSet<String>> = scope.filter(&state, q.app.as_deref())?.map(|app| {
        let registry = state.engine.ledger().shared().read_registry();
        registry.of_app(&app).map(|w| w.id.to_string()).collect()
    });
    let ledger = state.engine.ledger().clone();
    let stats = blocking(move || {
        let until = match until {
            Some(t) => t,
            None => ledger.head()?.committed_at.unwrap_or_default(),
        };
        let reader = ledger.reader()?;
        query_stats(reader.connection()?, until, span, mine.as_ref())
            .map_err(|e| crate::LedgerError::Invalid(format!("console stats: {e}")))
    })
    .await?;
    Ok(SortedJson(stats))
}

/// The window's figures from DuckDB, keeping only `mine`'s webhooks when given.
fn query_stats(
    conn: &duckdb::Connection,
    until: Timestamp,
    span: Duration,
    mine: Option<&HashSet<String>>,
) -> duckdb::Result<Stats> {
    let keep = |w: &String| mine.is_none_or(|m| m.contains(w));
    let since = until - span;
    let (from, to) = (since.naive_utc(), until.naive_utc());
    let hour = (until - Duration::hours(1)).naive_utc();
    let mut minutes: BTreeMap<i64, Minute> = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT webhook_id::VARCHAR, epoch_ms(date_trunc('minute', recorded_at)), \
         kind = 'delivered', count(*) FROM webhook_deliveries \
         WHERE kind IN ('delivered', 'failed') AND recorded_at > ? AND recorded_at <= ? \
         GROUP BY ALL",
    )?;
    let rows = stmt.query_map(duckdb::params![hour, to], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, bool>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (webhook, minute_ms, ok, n) = row?;
        if !keep(&webhook) {
            continue;
        }
        let m = minutes.entry(minute_ms).or_insert(Minute {
            minute_ms,
            ..Minute::default()
        });
        let n = u64::try_from(n).unwrap_or(0);
        if ok {
            m.delivered += n;
        } else {
            m.failed += n;
        }
    }
    let mut failure_classes = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT webhook_id::VARCHAR, coalesce(error_class, 'other'), count(*) \
         FROM webhook_deliveries WHERE kind = 'failed' AND recorded_at > ? AND recorded_at <= ? \
         GROUP BY ALL",
    )?;
    let rows = stmt.query_map(duckdb::params![from, to], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (webhook, class, n) = row?;
        if keep(&webhook) {
            *failure_classes.entry(class).or_insert(0) += u64::try_from(n).unwrap_or(0);
        }
    }
    let mut stmt = conn.prepare(
        "SELECT webhook_id::VARCHAR, count(*), count(*) FILTER (WHERE kind = 'delivered'), \
         quantile_cont(duration_ms, 0.5), quantile_cont(duration_ms, 0.99), \
         epoch_ms(max(recorded_at) FILTER (WHERE kind = 'failed')) \
         FROM webhook_deliveries WHERE kind IN ('delivered', 'failed') \
         AND recorded_at > ? AND recorded_at <= ? GROUP BY 1 ORDER BY 1",
    )?;
    let rows = stmt.query_map(duckdb::params![from, to], |r| {
        let attempts = u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0);
        let delivered = u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0);
        Ok(WebhookStats {
            webhook_id: r.get(0)?,
            attempts,
            delivered,
            success_rate: if attempts == 0 {
                0.0
            } else {
                delivered as f64 / attempts as f64
            },
            p50_ms: r.get(3)?,
            p99_ms: r.get(4)?,
            last_failure_ms: r.get(5)?,
        })
    })?;
    let mut webhooks = Vec::new();
    for row in rows {
        let w = row?;
        if keep(&w.webhook_id) {
            webhooks.push(w);
        }
    }
    Ok(Stats {
        since,
        until,
        per_minute: minutes.into_values().collect(),
        failure_classes,
        webhooks,
    })
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
