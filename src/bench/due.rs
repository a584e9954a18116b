//! The `due` scenario: how long the re-drive pass takes to pick the 100 earliest due deliveries
//! from the projection's due index, with a small and a large pending queue (the ratio shows
//! whether the cost grows with the queue), and what one pending delivery costs in memory.
//!
//! The projection is built in memory by folding `enqueued` records (due times spread over an
//! hour), without a database: the figure is the index, not the storage. Memory is the growth of
//! this process's resident set while the largest projection is built, divided by its pending
//! deliveries (hash map, due index and allocator overhead included; bodies are never held).

use std::time::{Duration, Instant};

use super::{figure, resident_bytes, Figure};
use crate::error::Result;
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::projection::Projection;
use crate::ledger::record::{Record, RecordBody};

/// How many deliveries one `due` call takes (the re-drive pass's permit-sized bite).
const TAKE: usize = 100;

pub fn run(sizes: &[usize], progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let mut reference = None;
    let largest = sizes.iter().copied().max().unwrap_or(0);
    for &pending in sizes {
        let before = resident_bytes();
        let projection = pending_queue(pending)?;
        let grown = resident_bytes().saturating_sub(before);
        let per_call = time_due(&projection);
        progress(&format!("due: {pending} pending done"));
        let us = per_call.as_secs_f64() * 1e6;
        let base = *reference.get_or_insert(us);
        figures.push(figure(
            "due",
            &format!("take_{pending}"),
            &format!(
                "take the {TAKE} earliest due, {pending} pending (ratio to {} pending)",
                sizes[0]
            ),
            us,
            "µs",
            Some(us / base),
        ));
        if pending == largest {
            let taken = projection.due(chrono::Utc::now(), TAKE).len();
            figures.push(figure(
                "due",
                "taken",
                &format!("deliveries one call took from {pending} pending"),
                taken as f64,
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
        drop(projection);
    }
    Ok(figures)
}

/// A projection holding `n` pending deliveries, due over the past hour in random order.
fn pending_queue(n: usize) -> Result<Projection> {
    let mut projection = Projection::new();
    let webhook = WebhookId::new();
    let now = chrono::Utc::now();
    let tag = fastrand::u64(..);
    for i in 0..n {
        let due_at = now - chrono::Duration::milliseconds(fastrand::i64(0..3_600_000));
        projection.apply(&Record {
            seq: i as u64 + 1,
            recorded_at: now,
            key: DeliveryKey::new(webhook, EventId(uuid::Uuid::from_u64_pair(tag, i as u64))),
            body: RecordBody::Enqueued { due_at },
        })?;
    }
    Ok(projection)
}

/// The mean time of one `due(now, TAKE)` call, over at least 200 ms of calls.
fn time_due(projection: &Projection) -> Duration {
    let now = chrono::Utc::now();
    let started = Instant::now();
    let mut calls = 0u32;
    while calls < 100 || started.elapsed() < Duration::from_millis(200) {
        let taken = projection.due(now, TAKE);
        std::hint::black_box(&taken);
        calls += 1;
    }
    started.elapsed() / calls
}
