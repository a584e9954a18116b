//! [`Store::attempt_stats`](crate::store::Store::attempt_stats) on DuckDB: the console's
//! figures (attempts per minute, failure classes, per-webhook success and latency percentiles,
//! the latency histogram) aggregated in SQL over the window's `delivered` and `failed` records.
//!
//! Invariant: only the window's attempts of the asked webhooks are read (the filter is in the
//! `WHERE`, never applied after loading), and every list comes back in the fixed order the
//! PostgreSQL twin (`store/pg/stats.rs`) answers, so the two give the same value.

use duckdb::{params, Connection};
use uuid::Uuid;

use super::summaries::webhooks_in;
use crate::error::{LedgerError, Result};
use crate::ids::WebhookId;
use crate::store::{
    latency_bucket_sql, AttemptStats, AttemptStatsQuery, WebhookAttempts, LATENCY_BOUNDS_MS,
};

pub(super) fn attempt_stats(conn: &Connection, q: &AttemptStatsQuery) -> Result<AttemptStats> {
    let mine = q
        .webhooks
        .as_deref()
        .map_or_else(|| "TRUE".to_owned(), webhooks_in);
    let attempts = format!(
        "kind IN ('delivered', 'failed') AND recorded_at > ?::TIMESTAMP \
         AND recorded_at <= ?::TIMESTAMP AND {mine}"
    );
    let (since, until) = (q.since.naive_utc(), q.until.naive_utc());
    let minutes_since = q.minutes_since.naive_utc();
    let mut out = AttemptStats::default();

    let sql = format!(
        "SELECT epoch_ms(date_trunc('minute', recorded_at)) AS m, \
                count(*) FILTER (WHERE kind = 'delivered'), count(*) FILTER (WHERE kind = 'failed') \
         FROM webhook_deliveries WHERE {attempts} GROUP BY m ORDER BY m"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![minutes_since, until], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (m, ok, bad) = row?;
        out.per_minute.push((m, count(ok), count(bad)));
    }

    let sql = format!(
        "SELECT webhook_id::VARCHAR AS w, coalesce(error_class, 'other') AS c, count(*) \
         FROM webhook_deliveries WHERE {attempts} AND kind = 'failed' \
         GROUP BY w, c ORDER BY w, c"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![since, until], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (w, class, n) = row?;
        out.failure_classes.push((webhook(&w)?, class, count(n)));
    }

    let sql = format!(
        "SELECT webhook_id::VARCHAR AS w, count(*), count(*) FILTER (WHERE kind = 'delivered'), \
                quantile_cont(duration_ms, 0.5), quantile_cont(duration_ms, 0.99), \
                epoch_ms(max(recorded_at) FILTER (WHERE kind = 'failed')) \
         FROM webhook_deliveries WHERE {attempts} GROUP BY w ORDER BY w"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![since, until], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<f64>>(3)?,
            r.get::<_, Option<f64>>(4)?,
            r.get::<_, Option<i64>>(5)?,
        ))
    })?;
    for row in rows {
        let (w, attempts, delivered, p50_ms, p99_ms, last_failure_ms) = row?;
        out.webhooks.push(WebhookAttempts {
            webhook_id: webhook(&w)?,
            attempts: count(attempts),
            delivered: count(delivered),
            p50_ms,
            p99_ms,
            last_failure_ms,
        });
    }

    out.latency_histogram = vec![0; LATENCY_BOUNDS_MS.len() + 1];
    let sql = format!(
        "SELECT {} AS b, count(*) FROM webhook_deliveries \
         WHERE {attempts} AND duration_ms IS NOT NULL GROUP BY b",
        latency_bucket_sql()
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![since, until], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (b, n) = row?;
        if let Some(slot) = usize::try_from(b)
            .ok()
            .and_then(|b| out.latency_histogram.get_mut(b))
        {
            *slot = count(n);
        }
    }
    Ok(out)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn webhook(s: &str) -> Result<WebhookId> {
    Uuid::parse_str(s)
        .map(WebhookId)
        .map_err(|e| LedgerError::Invalid(format!("stored webhook id {s}: {e}")))
}
