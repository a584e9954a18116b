//! FIFO webhooks in the engine: their lines ([`crate::delivery::fifo`]) loaded from the log,
//! kept up to date by every commit that queues a delivery, and the re-drive pass's choice of
//! what may go: the head of each line, only.
//!
//! Invariant: a FIFO webhook has at most one delivery in an attempt, and it is the head of its
//! line: the re-drive pass gives its rows no room in the due index, publish makes no inline
//! first attempt for it, and the head goes when it is pending and due (a failed head waits
//! for its retry, holding the ones behind it, until it is delivered, dead-parked or parked).
//! A test delivery (`POST /v1/webhooks/{id}/test`) is sent at once, outside the line; if it
//! fails, its retries take their place at the back.

use super::hold::earliest;
use super::*;
use crate::delivery::fifo::Lines;
use crate::registry::Ordering as Order;

impl Engine {
    fn lines(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn is_fifo(&self, webhook: WebhookId) -> bool {
        self.ledger
            .shared()
            .read_registry()
            .options_of(&webhook)
            .ordering
            == Order::Fifo
    }

    /// After a commit that put deliveries in the queue (`enqueued` or `requeued` at these
    /// seqs): their places in the FIFO lines.
    pub(super) fn queued(&self, entries: &[(DeliveryKey, u64)]) {
        let mut lines = self.lines();
        for (key, seq) in entries {
            lines.push(key.webhook_id, *seq, key.event_id);
        }
    }

    /// The FIFO webhooks now, with their lines loaded (a webhook no longer FIFO loses its
    /// line).
    pub(super) async fn fifo_webhooks(&self) -> Result<Vec<WebhookId>> {
        let fifo: Vec<WebhookId> = {
            let registry = self.ledger.shared().read_registry();
            registry
                .all()
                .filter(|w| registry.options_of(&w.id).ordering == Order::Fifo)
                .map(|w| w.id)
                .collect()
        };
        let unloaded: Vec<WebhookId> = {
            let mut lines = self.lines();
            for w in lines.webhooks() {
                if !fifo.contains(&w) {
                    lines.forget(w);
                }
            }
            fifo.iter().copied().filter(|w| !lines.has(*w)).collect()
        };
        for w in unloaded {
            self.load_line(w).await?;
        }
        Ok(fifo)
    }

    /// Folds `webhook`'s line from its live deliveries' trails: each one's place is the seq of
    /// its last `enqueued` or `requeued` record.
    async fn load_line(&self, webhook: WebhookId) -> Result<()> {
        // Started before the live rows are read: what is queued from now on is pushed into it.
        self.lines().start_loading(webhook);
        let keys: Vec<DeliveryKey> = self
            .ledger
            .shared()
            .read_projection()
            .live_rows()
            .into_iter()
            .filter(|(k, _)| k.webhook_id == webhook)
            .map(|(k, _)| k)
            .collect();
        let reader = self.ledger.reader()?;
        let read = blocking(move || {
            keys.into_iter()
                .map(|k| {
                    let trail = reader.history(k)?;
                    let place = trail
                        .iter()
                        .rev()
                        .find(|r| r.kind == "enqueued" || r.kind == "requeued")
                        .map_or(0, |r| r.seq);
                    Ok((place, k.event_id))
                })
                .collect::<Result<Vec<_>>>()
        })
        .await;
        match read {
            Ok(entries) => {
                self.lines().finish_loading(webhook, entries);
                Ok(())
            }
            Err(e) => {
                self.lines().forget(webhook);
                Err(e)
            }
        }
    }

    /// The heads of the FIFO lines that may go now, with their attempt numbers. A head not yet
    /// due lowers `retry_at` to its due time; `held` is set when a line has deliveries behind
    /// its head (they are due in the index but must wait).
    pub(super) fn fifo_heads(
        &self,
        fifo: &[WebhookId],
        now: Timestamp,
        retry_at: &mut Option<Timestamp>,
        held: &mut bool,
    ) -> Vec<(DeliveryKey, u16)> {
        let now_us = now.timestamp_micros();
        let mut go = Vec::new();
        let mut lines = self.lines();
        let projection = self.ledger.shared().read_projection();
        for w in fifo {
            while let Some(event) = lines.head(*w) {
                let key = DeliveryKey::new(*w, event);
                match projection.get(&key) {
                    None => {
                        lines.remove(*w, event);
                        continue;
                    }
                    Some(Live::InAttempt { .. }) => {}
                    Some(Live::Pending { attempts, due_us }) if due_us <= now_us => {
                        go.push((key, attempts + 1));
                    }
                    Some(Live::Pending { due_us, .. }) => {
                        if let Some(due) = chrono::DateTime::from_timestamp_micros(due_us) {
                            earliest(retry_at, due);
                        }
                    }
                }
                *held |= lines.len(*w) > 1;
                break;
            }
        }
        go
    }
}
