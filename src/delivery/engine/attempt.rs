//! One attempt: sending it (signed, while holding its permits) and recording its outcome.

use super::*;
use crate::delivery::envelope::EventBody;

impl Engine {
    pub(super) fn spawn_attempt(
        self: &Arc<Self>,
        key: DeliveryKey,
        attempt: u16,
        body: Arc<EventBody>,
        ticket: Ticket,
    ) {
        self.running.send_modify(|n| *n += 1);
        let engine = self.clone();
        tokio::spawn(async move {
            let permits = ticket.permits().await;
            engine.attempt(key, attempt, &body, permits).await;
            engine.running.send_modify(|n| *n -= 1);
        });
    }

    /// An attempt whose event body is gone (expunged) fails at once, visibly.
    pub(super) fn spawn_missing_body(self: &Arc<Self>, key: DeliveryKey, attempt: u16) {
        let outcome = local_failure(ErrorClass::Other, "the event body is missing");
        self.running.send_modify(|n| *n += 1);
        let engine = self.clone();
        tokio::spawn(async move {
            engine.record(key, attempt, outcome).await;
            // A body is only ever missing because it was expunged: park the delivery rather
            // than retry it (refused, harmlessly, when that failure dead-parked it).
            let reason = crate::ledger::expunge::PARK_REASON.to_owned();
            let park = NewRecord::new(key, RecordBody::Parked { reason });
            let _ = engine
                .ledger
                .commit(Commit {
                    records: vec![park],
                    ..Commit::default()
                })
                .await;
            engine.running.send_modify(|n| *n -= 1);
        });
    }

    pub(super) async fn attempt(
        &self,
        key: DeliveryKey,
        attempt: u16,
        body: &EventBody,
        permits: Permits,
    ) {
        let outcome = self.send(key, body, permits).await;
        // The permits are back before the outcome's commit wakes the re-drive loop, so the
        // loop never sees a stale "all busy" and sleeps past due work.
        self.record(key, attempt, outcome).await;
    }

    /// The signing secrets with their keys: sealed ones opened with the key ring (in memory
    /// only). A secret that does not open fails the attempt, visibly, rather than sending an
    /// unsigned request.
    fn open_secrets(
        &self,
        secrets: Vec<&crate::delivery::signing::Secret>,
    ) -> std::result::Result<Vec<crate::delivery::signing::Secret>, String> {
        secrets
            .into_iter()
            .map(|s| match &self.ops.keyring {
                _ if s.has_key() => Ok(s.clone()),
                Some(ring) => ring
                    .open(s)
                    .map_err(|e| format!("the signing secret does not open: {e}")),
                None => Err("the signing secret is sealed and no main key is given".into()),
            })
            .collect()
    }

    /// Sends one attempt; its permits are held until the answer (or failure) is in.
    pub(super) async fn send(
        &self,
        key: DeliveryKey,
        body: &EventBody,
        _permits: Permits,
    ) -> Outcome {
        let now = self.clock.now();
        // Only what the request needs leaves the registry's read lock: the URL and the opened
        // secrets, not a clone of the whole webhook.
        let target = {
            let registry = self.ledger.shared().read_registry();
            registry.get(&key.webhook_id).filter(|w| w.active).map(|w| {
                let secrets = self.open_secrets(w.signing_secrets(now));
                (w.url.clone(), secrets, registry.format_of(&key.webhook_id))
            })
        };
        let Some((url, secrets, format)) = target else {
            return local_failure(ErrorClass::Other, "the webhook is not active");
        };
        let secrets = match secrets {
            Ok(s) => s,
            Err(e) => return local_failure(ErrorClass::Other, &e),
        };
        let secrets: Vec<&crate::delivery::signing::Secret> = secrets.iter().collect();
        // The producer's id (an old event's UUID): the same on every attempt.
        let msg_id = body
            .producer_id
            .clone()
            .unwrap_or_else(|| key.event_id.to_string());
        let bytes = body.wire(format);
        let a = Attempt {
            url: &url,
            msg_id: &msg_id,
            body: &bytes,
            secrets: &secrets,
            timestamp: now.timestamp(),
        };
        self.sender.send(&a, now).await
    }

    /// Commits an attempt's outcome records and answers them.
    pub(super) async fn record(
        &self,
        key: DeliveryKey,
        attempt: u16,
        outcome: Outcome,
    ) -> Vec<RecordBody> {
        self.metrics.observe(&outcome);
        let active = self.webhook_active(key.webhook_id);
        let records = self.outcome_records(key, attempt, outcome, self.clock.now(), active);
        let bodies: Vec<RecordBody> = records.iter().map(|r| r.body.clone()).collect();
        let mut backoff = Backoff::new();
        loop {
            let commit = Commit {
                records: records.clone(),
                ..Commit::default()
            };
            match self.ledger.commit(commit).await {
                Ok(_) => {
                    self.observe_health(key.webhook_id, &bodies);
                    break;
                }
                Err(e @ LedgerError::StorageUnavailable { .. })
                    if !self.stopping.load(Ordering::Relaxed) =>
                {
                    tracing::warn!(delivery = %key, error = %e, "could not record an attempt's outcome; retrying");
                    tokio::time::sleep(backoff.next()).await;
                }
                Err(e) => {
                    // The delivery stays in_attempt in the log; a restart records it as abandoned.
                    tracing::error!(delivery = %key, error = %e, "could not record an attempt's outcome");
                    // No commit lands to wake the re-drive loop, which may sleep on "all
                    // slots busy" while this attempt's slots are free again.
                    self.wake();
                    break;
                }
            }
        }
        bodies
    }

    pub(super) fn webhook_active(&self, id: WebhookId) -> bool {
        self.ledger
            .shared()
            .read_registry()
            .get(&id)
            .is_some_and(|w| w.active)
    }

    /// The records an outcome becomes: the decision (next due time, dead or parked) is made
    /// here, once, and recorded.
    pub(super) fn outcome_records(
        &self,
        key: DeliveryKey,
        attempt: u16,
        outcome: Outcome,
        now: Timestamp,
        webhook_active: bool,
    ) -> Vec<NewRecord> {
        outcome_records(
            &self.config.schedule,
            key,
            attempt,
            outcome,
            now,
            webhook_active,
            &mut fastrand::f64,
        )
    }
}
