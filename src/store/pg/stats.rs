//! [`Store::attempt_stats`](crate::store::Store::attempt_stats) on PostgreSQL: the console's
//! figures, the same questions as DuckDB's (`store/duck/stats.rs`) with `percentile_cont`
//! where DuckDB has `quantile_cont`, and minutes taken in UTC whatever the session's zone.
//!
//! Invariant: only the window's attempts of the asked webhooks are read (the filter is in the
//! `WHERE`), and every list comes back in the same fixed order as DuckDB's, so the two stores
//! answer the same value (the console's store test holds them together).

use super::{Held, Param};
use crate::error::Result;
use crate::ids::WebhookId;
use crate::store::{
    latency_bucket_sql, AttemptStats, AttemptStatsQuery, WebhookAttempts, LATENCY_BOUNDS_MS,
};

/// `$1`, `$2`: the window; `$3`: the webhooks (NULL: every one).
const ATTEMPTS: &str = "kind IN ('delivered', 'failed') AND recorded_at > $1 \
     AND recorded_at <= $2 AND ($3::uuid[] IS NULL OR webhook_id = ANY($3))";

pub(super) fn attempt_stats(h: &mut Held, q: &AttemptStatsQuery) -> Result<AttemptStats> {
    let webhooks: Option<Vec<uuid::Uuid>> =
        q.webhooks.as_ref().map(|w| w.iter().map(|w| w.0).collect());
    let window = [&q.since as Param, &q.until, &webhooks];
    let mut out = AttemptStats::default();

    let sql = format!(
        "SELECT (extract(epoch FROM date_trunc('minute', recorded_at AT TIME ZONE 'UTC')) \
                  * 1000)::bigint AS m, \
                count(*) FILTER (WHERE kind = 'delivered'), count(*) FILTER (WHERE kind = 'failed') \
         FROM webhook_deliveries WHERE {ATTEMPTS} GROUP BY m ORDER BY m"
    );
    let minutes = [&q.minutes_since as Param, &q.until, &webhooks];
    for r in h.client.query(sql.as_str(), &minutes)? {
        let (m, ok, bad): (i64, i64, i64) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        out.per_minute.push((m, count(ok), count(bad)));
    }

    let sql = format!(
        "SELECT webhook_id, coalesce(error_class, 'other') AS c, count(*) \
         FROM webhook_deliveries WHERE {ATTEMPTS} AND kind = 'failed' \
         GROUP BY webhook_id, c ORDER BY webhook_id, coalesce(error_class, 'other') COLLATE \"C\""
    );
    for r in h.client.query(sql.as_str(), &window)? {
        let n: i64 = r.try_get(2)?;
        out.failure_classes
            .push((WebhookId(r.try_get(0)?), r.try_get(1)?, count(n)));
    }

    let sql = format!(
        "SELECT webhook_id, count(*), count(*) FILTER (WHERE kind = 'delivered'), \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms), \
                floor(extract(epoch FROM max(recorded_at) FILTER (WHERE kind = 'failed')) \
                  * 1000)::bigint \
         FROM webhook_deliveries WHERE {ATTEMPTS} GROUP BY webhook_id ORDER BY webhook_id"
    );
    for r in h.client.query(sql.as_str(), &window)? {
        let (attempts, delivered): (i64, i64) = (r.try_get(1)?, r.try_get(2)?);
        out.webhooks.push(WebhookAttempts {
            webhook_id: WebhookId(r.try_get(0)?),
            attempts: count(attempts),
            delivered: count(delivered),
            p50_ms: r.try_get(3)?,
            p99_ms: r.try_get(4)?,
            last_failure_ms: r.try_get(5)?,
        });
    }

    out.latency_histogram = vec![0; LATENCY_BOUNDS_MS.len() + 1];
    let sql = format!(
        "SELECT {} AS b, count(*) FROM webhook_deliveries \
         WHERE {ATTEMPTS} AND duration_ms IS NOT NULL GROUP BY b",
        latency_bucket_sql()
    );
    for r in h.client.query(sql.as_str(), &window)? {
        let (b, n): (i32, i64) = (r.try_get(0)?, r.try_get(1)?);
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
