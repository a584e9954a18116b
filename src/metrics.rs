//! Prometheus metrics (`GET /metrics`), encoded by the `prometheus-client` crate.
//!
//! Two sources: the engine counts each attempt's outcome and latency as it records it
//! ([`Metrics::observe`], counters since the process started), and the ledger gives the
//! queue by state, the ledger seq, the start-up fold and how long the writer's transactions
//! and idle checkpoints held it ([`crate::ledger::pauses`]), read at scrape time
//! ([`Metrics::render`]). No label carries a URL, a secret or an id, so cardinality stays
//! bounded by the error classes.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::delivery::sender::Outcome;
use crate::ledger::pauses::{PauseSnapshot, WriterPauses, BOUNDS_US};
use crate::ledger::projection::Counts;
use crate::ledger::RebuildStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    /// `delivered` or `failed`.
    outcome: &'static str,
    /// The failure's error class; empty for delivered attempts.
    error_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// The metric handles and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    attempts: Family<AttemptLabels, Counter>,
    attempt_seconds: Histogram,
    deliveries: Family<StateLabels, Gauge>,
    ledger_seq: Gauge,
    fold_seconds: Gauge<f64, AtomicU64>,
    fold_records: Gauge,
    writer_commits: PauseHistogram,
    writer_idle: PauseHistogram,
}

/// A [`PauseSnapshot`] encoded as a Prometheus histogram (seconds), set at each scrape.
#[derive(Clone, Debug, Default)]
struct PauseHistogram(Arc<Mutex<PauseSnapshot>>);

impl PauseHistogram {
    fn set(&self, s: PauseSnapshot) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = s;
    }
}

impl EncodeMetric for PauseHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let s = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let bounds = BOUNDS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(s.buckets).collect();
        encoder.encode_histogram::<NoLabelSet>(s.sum_us as f64 / 1e6, s.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let attempts = Family::<AttemptLabels, Counter>::default();
        // 5 ms to about 41 s: from a local receiver to the attempt timeout.
        let attempt_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let deliveries = Family::<StateLabels, Gauge>::default();
        let ledger_seq = Gauge::default();
        let fold_seconds = Gauge::<f64, AtomicU64>::default();
        let fold_records = Gauge::default();
        let writer_commits = PauseHistogram::default();
        let writer_idle = PauseHistogram::default();
        let mut registry = Registry::with_prefix("hookledger");
        registry.register(
            "attempts",
            "Attempts recorded since the process started, by outcome and error class",
            attempts.clone(),
        );
        registry.register(
            "attempt_duration_seconds",
            "Wall time of each recorded attempt",
            attempt_seconds.clone(),
        );
        registry.register(
            "deliveries",
            "Deliveries in the ledger by state (pending and in_attempt are the queue depth)",
            deliveries.clone(),
        );
        registry.register(
            "ledger_seq",
            "The last ledger record's seq",
            ledger_seq.clone(),
        );
        registry.register(
            "fold_seconds",
            "How long the start-up fold of the ledger took",
            fold_seconds.clone(),
        );
        registry.register(
            "fold_records",
            "How many records the start-up fold read",
            fold_records.clone(),
        );
        registry.register(
            "writer_commit_duration_seconds",
            "Wall time of each ledger transaction; every commit waits for the one in flight",
            writer_commits.clone(),
        );
        registry.register(
            "writer_idle_checkpoint_duration_seconds",
            "Wall time of each DuckDB checkpoint the writer took while its queue was empty",
            writer_idle.clone(),
        );
        Self {
            registry,
            attempts,
            attempt_seconds,
            deliveries,
            ledger_seq,
            fold_seconds,
            fold_records,
            writer_commits,
            writer_idle,
        }
    }

    /// Counts one recorded attempt.
    pub fn observe(&self, outcome: &Outcome) {
        let (labels, duration_ms) = match outcome {
            Outcome::Delivered { duration_ms, .. } => (
                AttemptLabels {
                    outcome: "delivered",
                    error_class: "",
                },
                *duration_ms,
            ),
            Outcome::Failed {
                class, duration_ms, ..
            } => (
                AttemptLabels {
                    outcome: "failed",
                    error_class: class.as_str(),
                },
                *duration_ms,
            ),
        };
        self.attempts.get_or_create(&labels).inc();
        self.attempt_seconds
            .observe(f64::from(duration_ms) / 1000.0);
    }

    /// The Prometheus text exposition, with the gauges read from `counts`, `fold` and
    /// `pauses` now.
    pub fn render(
        &self,
        counts: Counts,
        ledger_seq: u64,
        fold: &RebuildStats,
        pauses: &WriterPauses,
    ) -> String {
        self.writer_commits.set(pauses.commits.snapshot());
        self.writer_idle.set(pauses.idle.snapshot());
        for (state, n) in counts.by_state() {
            self.deliveries
                .get_or_create(&StateLabels { state })
                .set(gauge_value(n));
        }
        self.ledger_seq.set(gauge_value(ledger_seq));
        self.fold_seconds.set(fold.elapsed.as_secs_f64());
        self.fold_records.set(gauge_value(fold.records));
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppStateLabels {
    app: String,
    state: &'static str,
}

/// One app's deliveries by state (`GET /metrics?app=`), as `hookledger_deliveries` with an
/// `app` label: a scrape per app adds up to the unlabelled figures.
pub fn render_app(app: &str, counts: Counts) -> String {
    let deliveries = Family::<AppStateLabels, Gauge>::default();
    for (state, n) in counts.by_state() {
        deliveries
            .get_or_create(&AppStateLabels {
                app: app.to_owned(),
                state,
            })
            .set(gauge_value(n));
    }
    let mut registry = Registry::with_prefix("hookledger");
    registry.register(
        "deliveries",
        "One app's deliveries in the ledger by state",
        deliveries,
    );
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::ErrorClass;

    #[test]
    fn attempts_and_states_are_exposed_without_ids() {
        let metrics = Metrics::new();
        metrics.observe(&Outcome::Delivered {
            status: 200,
            duration_ms: 12,
        });
        metrics.observe(&Outcome::Failed {
            status: None,
            class: ErrorClass::Timeout,
            error: "timed out".into(),
            duration_ms: 30_000,
            retry_after: None,
            response_body: None,
        });
        let counts = Counts {
            pending: 3,
            in_attempt: 1,
            delivered: 7,
            dead: 0,
            parked: 2,
        };
        let stats = RebuildStats {
            records: 42,
            changes: 1,
            elapsed: std::time::Duration::from_millis(1500),
            start: Default::default(),
        };
        let pauses = WriterPauses::default();
        pauses
            .commits
            .record(std::time::Duration::from_micros(1_500));
        pauses.commits.record(std::time::Duration::from_millis(90));
        let text = metrics.render(counts, 99, &stats, &pauses);
        for line in [
            r#"hookledger_attempts_total{outcome="delivered",error_class=""} 1"#,
            r#"hookledger_attempts_total{outcome="failed",error_class="timeout"} 1"#,
            r#"hookledger_deliveries{state="pending"} 3"#,
            r#"hookledger_deliveries{state="parked"} 2"#,
            "hookledger_attempt_duration_seconds_count 2",
            r#"hookledger_attempt_duration_seconds_bucket{le="0.02"} 1"#,
            "hookledger_ledger_seq 99",
            "hookledger_fold_seconds 1.5",
            "hookledger_fold_records 42",
            "hookledger_writer_commit_duration_seconds_count 2",
            r#"hookledger_writer_commit_duration_seconds_bucket{le="0.002"} 1"#,
            r#"hookledger_writer_commit_duration_seconds_bucket{le="0.064"} 1"#,
            r#"hookledger_writer_commit_duration_seconds_bucket{le="0.128"} 2"#,
            r#"hookledger_writer_commit_duration_seconds_bucket{le="+Inf"} 2"#,
            "hookledger_writer_commit_duration_seconds_sum 0.0915",
            "hookledger_writer_idle_checkpoint_duration_seconds_count 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
    }
}
