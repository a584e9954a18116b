//! Publish: the event and its fan-out (one `enqueued` per matching webhook, the first
//! `attempted` for those with a ticket) in one commit; test deliveries.
//!
//! Fan-out rule: a published event goes to ordinary webhooks only, an operational event
//! ([`Engine::publish_operational`]) to operational webhooks only, whatever their filters say.

use super::*;
use crate::delivery::envelope::{EventBody, FORMAT_PAYLOAD};
use crate::ids::{AppUid, ProducerId};
use crate::ledger::record::to_micros;

impl Engine {
    /// Stores the event and enqueues one delivery per matching active webhook, with its first
    /// `attempted` record, in one commit; then starts the first attempts.
    /// Operational webhooks get none of them ([`crate::delivery::operational`]).
    pub async fn publish(self: &Arc<Self>, req: Publish) -> Result<Published> {
        self.publish_to(req, false).await
    }

    /// Publishes one of hookledger's own events ([`crate::delivery::operational`]): like
    /// [`Engine::publish`], but it fans out to the app's matching operational webhooks only.
    pub async fn publish_operational(self: &Arc<Self>, req: Publish) -> Result<Published> {
        self.publish_to(req, true).await
    }

    /// A publish to the matching webhooks whose `operational` option is `operational`.
    async fn publish_to(self: &Arc<Self>, req: Publish, operational: bool) -> Result<Published> {
        let payload = serde_json::to_vec(&req.payload)
            .map_err(|e| LedgerError::Invalid(format!("payload: {e}")))?;
        let now = self.clock.now();
        let producer = req
            .producer_id
            .unwrap_or_else(|| ProducerId::of_uuid(EventId::new()));
        let event_id = producer.key(&req.app);
        // Only the app's own webhooks are looked at (the registry's per-app index).
        let webhooks: Vec<WebhookId> = {
            let registry = self.ledger.shared().read_registry();
            registry
                .matching(&req.app, &req.event_type)
                .filter(|w| registry.options_of(&w.id).operational == operational)
                .map(|w| w.id)
                .collect()
        };
        let mut attempting = Vec::with_capacity(webhooks.len());
        let mut first_attempts = Vec::with_capacity(webhooks.len());
        // The place of each FIFO webhook's `enqueued` record in the commit (see
        // `enqueue_commit`): FIFO webhooks get no inline attempt, their line decides.
        let mut fifo = Vec::new();
        let mut index = 0;
        let mut ours = 0;
        for w in &webhooks {
            // Beside other nodes, another node may attempt this webhook (`crate::cluster`).
            if !self.ledger.shared().attempts(*w) {
                index += 1;
                continue;
            }
            ours += 1;
            if self.is_fifo(*w) {
                fifo.push((DeliveryKey::new(*w, event_id), index));
                index += 1;
                continue;
            }
            index += 1;
            // Without a ticket the delivery stays pending, due now, for the re-drive.
            if let Some(ticket) = self.ticket(*w, now, &mut None) {
                attempting.push(*w);
                first_attempts.push((DeliveryKey::new(*w, event_id), ticket));
                index += 1;
            }
        }
        let body = Arc::new(EventBody {
            event_type: req.event_type.clone(),
            published_at: to_micros(now),
            body: payload,
            format: Some(FORMAT_PAYLOAD),
            producer_id: Some(producer.to_string()),
        });
        let commit = enqueue_commit(
            new_event(event_id, &req.app, &producer, &body),
            (&webhooks, &attempting),
            now,
        );
        // Kept before the commit, so a re-drive pass that starts a waiting delivery right
        // after it finds the body.
        let waiting = ours - attempting.len();
        self.waiting_bodies().keep(event_id, &body, waiting);
        let committed = self.ledger.commit(commit).await;
        if committed.is_err() {
            self.waiting_bodies().forget(event_id);
        }
        match committed {
            Ok(receipt) => {
                let places: Vec<(DeliveryKey, u64)> =
                    fifo.iter().map(|(k, i)| (*k, receipt.seqs[*i])).collect();
                self.queued(&places);
            }
            Err(LedgerError::EventExists {
                same_body: true, ..
            }) => return self.original(event_id, req.app).await,
            Err(e) => return Err(e),
        }
        for (key, ticket) in first_attempts {
            self.spawn_attempt(key, 1, body.clone(), ticket);
        }
        Ok(Published {
            event_id: producer.to_string(),
            key: event_id,
            app: req.app,
            deliveries: webhooks,
            duplicate: false,
        })
    }

    /// The first answer to an event published again with the same body.
    pub(super) async fn original(&self, event_id: EventId, app: AppUid) -> Result<Published> {
        let reader = self.ledger.reader()?;
        let (deliveries, stored) = blocking(move || {
            Ok((
                reader.enqueued_webhooks(event_id)?,
                reader.events(&[event_id])?,
            ))
        })
        .await?;
        let producer = stored
            .first()
            .map_or_else(|| event_id.to_string(), |e| e.producer_event_id());
        Ok(Published {
            event_id: producer,
            key: event_id,
            app,
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
        let app = self
            .ledger
            .shared()
            .read_registry()
            .app_of(&webhook)
            .clone();
        let producer = ProducerId::of_uuid(EventId::new());
        let event_id = producer.key(&app);
        let payload = serde_json::json!({
            "type": TEST_EVENT_TYPE,
            "webhook_id": webhook,
            "sent_at": now,
        });
        let body = EventBody {
            event_type: TEST_EVENT_TYPE.to_owned(),
            published_at: to_micros(now),
            body: payload.to_string().into_bytes(),
            format: Some(FORMAT_PAYLOAD),
            producer_id: Some(producer.to_string()),
        };
        // A test waits for its permits (its webhook's first), then records its attempt.
        let limit = hold::in_flight(self.ledger.shared().read_registry().options_of(&webhook));
        let permits = self.gates.wait_permits(webhook, limit).await;
        let commit = enqueue_commit(
            new_event(event_id, &app, &producer, &body),
            (&[webhook], &[webhook]),
            now,
        );
        let receipt = self.ledger.commit(commit).await?;
        let key = DeliveryKey::new(webhook, event_id);
        // Outside a FIFO line now; its retries, if it fails, are at the back of it.
        self.queued(&[(key, receipt.seqs[0])]);
        self.running.send_modify(|n| *n += 1);
        let outcome = self.send(key, &body, permits).await;
        let records = self.record(key, 1, outcome).await;
        self.running.send_modify(|n| *n -= 1);
        Ok(TestDelivery {
            event_id: producer.to_string(),
            key: event_id,
            records,
        })
    }
}

/// The event row of a publish.
fn new_event(event_id: EventId, app: &AppUid, producer: &ProducerId, body: &EventBody) -> NewEvent {
    NewEvent {
        event_id,
        event_type: body.event_type.clone(),
        body: body.body.clone(),
        app: Some(app.to_string()),
        producer_id: Some(producer.to_string()),
        format: body.format,
        published_at: Some(body.published_at),
    }
}
