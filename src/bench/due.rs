//! The `due` scenario: how long a re-drive pass takes to pick what it starts from the
//! projection's due index, with a small and a large pending queue (the ratio shows whether the
//! cost grows with the queue), and what one pending delivery costs in memory.
//!
//! It measures the call re-drive makes, [`Projection::due_fair`], in the shape re-drive makes
//! it: the pending deliveries spread over [`WEBHOOKS`] webhooks, a limit of the engine's
//! default attempts in flight, a quota of its default slots per webhook, and a quarter of the
//! webhooks able to take nothing (their slots busy), whose backlog the call must skip.
//!
//! The projection is built in memory by folding `enqueued` records (due times spread over an
//! hour), without a database: the figure is the index, not the storage. Memory is the growth of
//! this process's resident set while the largest projection is built, divided by its pending
//! deliveries (hash map, due index and allocator overhead included; bodies are never held).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::{figure, resident_bytes, Figure};
use crate::delivery::engine::EngineConfig;
use crate::error::Result;
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::projection::{Live, Projection};
use crate::ledger::record::{Record, RecordBody};

/// Webhooks the pending deliveries are spread over, round robin.
const WEBHOOKS: usize = 64;
/// Every `STALLED_EVERY`th webhook can take nothing: its quota is 0.
const STALLED_EVERY: usize = 4;

/// The pending queue and what a re-drive pass may take from it.
struct Queue {
    projection: Projection,
    /// Webhooks whose slots are all busy.
    stalled: HashSet<WebhookId>,
    /// The pass's limit: the engine's default attempts in flight.
    limit: usize,
    /// Each other webhook's quota: the engine's default slots per webhook.
    quota: usize,
}

impl Queue {
    /// One re-drive pass's pick, as [`crate::delivery::engine`] makes it.
    fn take(&self, now: chrono::DateTime<chrono::Utc>) -> Vec<(DeliveryKey, Live)> {
        self.projection.due_fair(now, self.limit, |w| {
            if self.stalled.contains(&w) {
                0
            } else {
                self.quota
            }
        })
    }
}

pub fn run(sizes: &[usize], progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let mut reference = None;
    let largest = sizes.iter().copied().max().unwrap_or(0);
    for &pending in sizes {
        // Resident memory as `serve` holds it once ready: after `settle`, which returns what
        // was freed (the tables and B-tree nodes that growing the projection left behind) at
        // once instead of after mimalloc's start-up purge delay.
        crate::alloc::settle();
        let before = resident_bytes();
        let queue = pending_queue(pending)?;
        crate::alloc::settle();
        let grown = resident_bytes().saturating_sub(before);
        let per_call = time_take(&queue);
        progress(&format!("due: {pending} pending done"));
        let us = per_call.as_secs_f64() * 1e6;
        let base = *reference.get_or_insert(us);
        figures.push(figure(
            "due",
            &format!("fair_{pending}"),
            &format!(
                "re-drive pick (due_fair): up to {}, {} a webhook, over {WEBHOOKS} webhooks ({} stalled), {pending} pending (ratio to {} pending)",
                queue.limit,
                queue.quota,
                queue.stalled.len(),
                sizes[0]
            ),
            us,
            "µs",
            Some(us / base),
        ));
        if pending == largest {
            let taken = queue.take(chrono::Utc::now());
            let from_stalled = taken
                .iter()
                .filter(|(k, _)| queue.stalled.contains(&k.webhook_id))
                .count();
            figures.push(figure(
                "due",
                "taken",
                &format!("deliveries one pick took from {pending} pending"),
                taken.len() as f64,
                "deliveries",
                None,
            ));
            figures.push(figure(
                "due",
                "taken_from_stalled",
                "of those, deliveries of stalled webhooks (must be 0)",
                from_stalled as f64,
                "deliveries",
                None,
            ));
            figures.push(figure(
                "due",
                "bytes_per_pending",
                &format!("projection memory per pending delivery (RSS growth over {pending})"),
                grown as f64 / pending.max(1) as f64,
                "bytes",
                None,
            ));
        }
        drop(queue);
    }
    Ok(figures)
}

/// `n` pending deliveries over [`WEBHOOKS`] webhooks, due over the past hour in random order.
fn pending_queue(n: usize) -> Result<Queue> {
    let mut projection = Projection::new();
    let webhooks: Vec<WebhookId> = (0..WEBHOOKS).map(|_| WebhookId::new()).collect();
    let now = chrono::Utc::now();
    let tag = fastrand::u64(..);
    for i in 0..n {
        let due_at = now - chrono::Duration::milliseconds(fastrand::i64(0..3_600_000));
        let webhook = webhooks[i % WEBHOOKS];
        projection.apply(&Record {
            seq: i as u64 + 1,
            recorded_at: now,
            key: DeliveryKey::new(webhook, EventId(uuid::Uuid::from_u64_pair(tag, i as u64))),
            body: RecordBody::Enqueued { due_at },
        })?;
    }
    let engine = EngineConfig::default();
    Ok(Queue {
        projection,
        stalled: webhooks.iter().copied().step_by(STALLED_EVERY).collect(),
        limit: engine.max_in_flight,
        quota: engine.per_webhook,
    })
}

/// The mean time of one pick, over at least 200 ms of calls.
fn time_take(queue: &Queue) -> Duration {
    let now = chrono::Utc::now();
    let started = Instant::now();
    let mut calls = 0u32;
    while calls < 100 || started.elapsed() < Duration::from_millis(200) {
        let taken = queue.take(now);
        std::hint::black_box(&taken);
        calls += 1;
    }
    started.elapsed() / calls
}
