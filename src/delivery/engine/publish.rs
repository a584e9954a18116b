//! Publish: the event and its fan-out (one `enqueued` per matching webhook, the first
//! `attempted` for those with a ticket) in one commit; test deliveries.

use super::*;

impl Engine {
    /// Stores the event and enqueues one delivery per matching active webhook, with its first
    /// `attempted` record, in one commit; then starts the first attempts.
    pub async fn publish(self: &Arc<Self>, req: Publish) -> Result<Published> {
        let body = serde_json::to_vec(&req.payload)
            .map_err(|e| LedgerError::Invalid(format!("payload: {e}")))?;
        let now = self.clock.now();
        let webhooks: Vec<WebhookId> = self
            .ledger
            .shared()
            .read_registry()
            .matching(&req.event_type)
            .map(|w| w.id)
            .collect();
        let mut attempting = Vec::with_capacity(webhooks.len());
        let mut first_attempts = Vec::with_capacity(webhooks.len());
        for w in &webhooks {
            // Without a ticket the delivery stays pending, due now, for the re-drive.
            if let Some(ticket) = self.gates.try_ticket(*w) {
                attempting.push(*w);
                first_attempts.push((DeliveryKey::new(*w, req.event_id), ticket));
            }
        }
        let commit = enqueue_commit(
            req.event_id,
            &req.event_type,
            &body,
            (&webhooks, &attempting),
            now,
        );
        // Kept before the commit, so a re-drive pass that starts a waiting delivery right
        // after it finds the body.
        let body = Arc::new(body);
        let waiting = webhooks.len() - attempting.len();
        self.waiting_bodies().keep(req.event_id, &body, waiting);
        let committed = self.ledger.commit(commit).await;
        if committed.is_err() {
            self.waiting_bodies().forget(req.event_id);
        }
        match committed {
            Ok(_) => {}
            Err(LedgerError::EventExists {
                same_body: true, ..
            }) => return self.original(req.event_id).await,
            Err(e) => return Err(e),
        }
        for (key, ticket) in first_attempts {
            self.spawn_attempt(key, 1, body.clone(), ticket);
        }
        Ok(Published {
            event_id: req.event_id,
            deliveries: webhooks,
            duplicate: false,
        })
    }

    /// The first answer to an event published again with the same body.
    pub(super) async fn original(&self, event_id: EventId) -> Result<Published> {
        let reader = self.ledger.reader()?;
        let deliveries = blocking(move || reader.enqueued_webhooks(event_id)).await?;
        Ok(Published {
            event_id,
            deliveries,
            duplicate: true,
        })
    }

    /// Sends one signed test event (`webhook.test`) to `webhook` whatever its filter, recorded
    /// like any delivery (event, `enqueued`, `attempted`, outcome), and waits for the attempt:
    /// answers the event id and the outcome records. A failed test is retried on the schedule
    /// like any other delivery.
    pub async fn test_delivery(self: &Arc<Self>, webhook: WebhookId) -> Result<TestDelivery> {
        if !self.webhook_active(webhook) {
            return Err(LedgerError::Invalid(format!(
                "webhook {webhook} is not active"
            )));
        }
        let now = self.clock.now();
        let event_id = EventId::new();
        let payload = serde_json::json!({
            "type": TEST_EVENT_TYPE,
            "webhook_id": webhook,
            "sent_at": now,
        });
        let body = payload.to_string().into_bytes();
        // A test waits for its permits (its webhook's first), then records its attempt.
        let permits = self.gates.wait_permits(webhook).await;
        let commit = enqueue_commit(
            event_id,
            TEST_EVENT_TYPE,
            &body,
            (&[webhook], &[webhook]),
            now,
        );
        self.ledger.commit(commit).await?;
        let key = DeliveryKey::new(webhook, event_id);
        self.running.send_modify(|n| *n += 1);
        let outcome = self.send(key, &body, permits).await;
        let records = self.record(key, 1, outcome).await;
        self.running.send_modify(|n| *n -= 1);
        Ok(TestDelivery { event_id, records })
    }
}
