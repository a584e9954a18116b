//! Re-drive: due deliveries from the projection's due index, abandoned attempts at start,
//! redeliver and recover (requeues).

use super::*;
use crate::delivery::envelope::EventBody;

impl Engine {
    /// One re-drive pass: takes the deliveries due now that get a ticket (free slots, or a place
    /// ahead of them), records their `attempted` in one commit, and starts them. Returns how
    /// many started.
    pub async fn redrive_once(self: &Arc<Self>) -> Result<usize> {
        Ok(self.redrive_pass().await?.started)
    }

    pub(super) async fn redrive_pass(self: &Arc<Self>) -> Result<Pass> {
        self.auto_disable().await?;
        self.apply_limits();
        let fifo = self.fifo_webhooks().await?;
        let open = self.gates.free() + self.gates.ahead_room();
        if open == 0 {
            return Ok(Pass {
                started: 0,
                blocked: true,
                retry_at: None,
                held: false,
            });
        }
        // A webhook that can take nothing is skipped, however many rows it has due.
        let mut blocked = false;
        let mut retry_at = None;
        let now = self.clock.now();
        let due = self
            .ledger
            .shared()
            .read_projection()
            .due_fair(now, open, |webhook| {
                // A FIFO webhook's rows go by its line only (below), and another node's
                // (`crate::cluster`) are not this node's to start.
                if fifo.contains(&webhook) || !self.ledger.shared().attempts(webhook) {
                    return 0;
                }
                let open = self.room(webhook, now, &mut retry_at);
                blocked |= open == 0;
                open
            });
        let mut records = Vec::new();
        let mut tickets = Vec::new();
        for (key, live) in &due {
            let Live::Pending { attempts, .. } = live else {
                continue;
            };
            let Some(t) = self.ticket(key.webhook_id, now, &mut retry_at) else {
                blocked = true;
                continue;
            };
            let attempt = attempts + 1;
            records.push(NewRecord::new(*key, RecordBody::Attempted { attempt }));
            tickets.push(t);
        }
        let mut held = false;
        for (key, attempt) in self.fifo_heads(&fifo, now, &mut retry_at, &mut held) {
            let Some(t) = self.ticket(key.webhook_id, now, &mut retry_at) else {
                blocked = true;
                continue;
            };
            records.push(NewRecord::new(key, RecordBody::Attempted { attempt }));
            tickets.push(t);
        }
        if records.is_empty() {
            return Ok(Pass {
                started: 0,
                blocked,
                retry_at,
                held,
            });
        }
        let receipt = self
            .ledger
            .commit(Commit {
                records: records.clone(),
                ..Commit::default()
            })
            .await?;
        let bodies = self
            .bodies(records.iter().map(|r| r.key.event_id).collect())
            .await?;
        for (r, ticket) in records.iter().zip(tickets) {
            let RecordBody::Attempted { attempt } = r.body else {
                continue;
            };
            match bodies.get(&r.key.event_id) {
                Some(body) => self.spawn_attempt(r.key, attempt, body.clone(), ticket),
                None => self.spawn_missing_body(r.key, attempt),
            }
        }
        Ok(Pass {
            started: receipt.seqs.len(),
            blocked,
            retry_at,
            held,
        })
    }

    /// The body of each delivery starting now (one id per delivery): kept since its publish,
    /// or read back from the events table.
    pub(super) async fn bodies(
        &self,
        ids: Vec<EventId>,
    ) -> Result<HashMap<EventId, Arc<EventBody>>> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let mut waiting = self.waiting_bodies();
            for id in ids {
                match waiting.take(id) {
                    Some(body) => {
                        found.insert(id, body);
                    }
                    None if !found.contains_key(&id) => missing.push(id),
                    None => {}
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        missing.sort_unstable();
        missing.dedup();
        let reader = self.ledger.reader()?;
        let events = blocking(move || reader.events(&missing)).await?;
        found.extend(
            events
                .into_iter()
                .filter(|e| !e.expunged)
                .map(|e| (e.event_id, Arc::new(EventBody::of(e)))),
        );
        Ok(found)
    }

    pub(super) fn waiting_bodies(&self) -> std::sync::MutexGuard<'_, WaitingBodies> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At startup: every delivery left `in_attempt` belonged to a process that died mid-attempt.
    /// Each gets `failed` (`abandoned`) with its backoff, or is dead-parked when that was its
    /// last attempt, so a payload that kills the process cannot loop forever.
    pub async fn recover_abandoned(&self) -> Result<usize> {
        self.abandon(|_| true, "the process stopped during the attempt")
            .await
    }

    /// Records `failed` (`abandoned`) for every delivery in an attempt whose key `cut_off`
    /// selects: attempts whose process is gone (see [`Engine::recover_abandoned`] and
    /// `takeover.rs`).
    pub(super) async fn abandon(
        &self,
        cut_off: impl Fn(&DeliveryKey) -> bool,
        why: &str,
    ) -> Result<usize> {
        let now = self.clock.now();
        let cut_off: Vec<(DeliveryKey, u16)> = self
            .ledger
            .state()
            .live_rows()
            .into_iter()
            .filter_map(|(k, l)| match l {
                Live::InAttempt { attempt } if cut_off(&k) => Some((k, attempt)),
                _ => None,
            })
            .collect();
        let mut records = Vec::new();
        for (key, attempt) in &cut_off {
            let outcome = local_failure(ErrorClass::Abandoned, why);
            let active = self.webhook_active(key.webhook_id);
            records.extend(self.outcome_records(*key, *attempt, outcome, now, active));
        }
        if !records.is_empty() {
            self.ledger
                .commit(Commit {
                    records,
                    ..Commit::default()
                })
                .await?;
        }
        Ok(cut_off.len())
    }

    /// Requeues one finished delivery (delivered, dead or parked) with a fresh budget.
    pub async fn redeliver(&self, key: DeliveryKey, reason: &str) -> Result<u64> {
        let reader = self.ledger.reader()?;
        let trail = blocking(move || reader.history(key)).await?;
        let from = match trail.last().map(|r| r.kind.as_str()) {
            Some("delivered") => Terminal::Delivered,
            Some("dead_parked") => Terminal::Dead,
            Some("parked") => Terminal::Parked,
            Some(_) => {
                return Err(LedgerError::Invalid(format!(
                    "delivery {key} is still pending or in an attempt"
                )))
            }
            None => return Err(LedgerError::UnknownDelivery(key)),
        };
        let body = RecordBody::Requeued {
            from,
            due_at: self.clock.now(),
            reason: reason.to_owned(),
        };
        let receipt = self
            .ledger
            .commit(Commit {
                records: vec![NewRecord::new(key, body)],
                ..Commit::default()
            })
            .await?;
        self.queued(&[(key, receipt.seqs[0])]);
        Ok(receipt.seqs[0])
    }

    /// Requeues every dead or parked delivery of `webhook` that finished in `since..until`
    /// (a bulk recover) in one commit; answers how many.
    pub async fn recover(
        &self,
        webhook: WebhookId,
        since: Timestamp,
        until: Timestamp,
        reason: &str,
    ) -> Result<usize> {
        let reader = self.ledger.reader()?;
        let finished = blocking(move || reader.finished_in_window(webhook, since, until)).await?;
        // Deliveries of expunged events can never be sent again: left out (410 if only they).
        let reader = self.ledger.reader()?;
        let ids: Vec<EventId> = finished.iter().map(|(e, _)| *e).collect();
        let gone =
            crate::ledger::expunge::expunged_among(blocking(move || reader.events(&ids)).await?);
        let (finished, skipped): (Vec<_>, Vec<_>) =
            finished.into_iter().partition(|(e, _)| !gone.contains(e));
        if let (true, Some((e, _))) = (finished.is_empty(), skipped.first()) {
            return Err(LedgerError::BodyExpunged(*e));
        }
        let due_at = self.clock.now();
        let records: Vec<NewRecord> = finished
            .into_iter()
            .map(|(event_id, from)| {
                let body = RecordBody::Requeued {
                    from,
                    due_at,
                    reason: reason.to_owned(),
                };
                NewRecord::new(DeliveryKey::new(webhook, event_id), body)
            })
            .collect();
        if records.is_empty() {
            return Ok(0);
        }
        let keys: Vec<DeliveryKey> = records.iter().map(|r| r.key).collect();
        let receipt = self
            .ledger
            .commit(Commit {
                records,
                ..Commit::default()
            })
            .await?;
        let places: Vec<(DeliveryKey, u64)> = keys.into_iter().zip(receipt.seqs.clone()).collect();
        self.queued(&places);
        self.wake();
        Ok(receipt.seqs.len())
    }
}
