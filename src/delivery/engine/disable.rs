//! Auto-disable in the engine: recorded outcomes feed the failing spans, the spans are folded
//! from the log when the re-drive loop starts, and a re-drive pass deactivates the webhooks
//! whose span is long enough at the injected clock's now: one `auto_disabled` registry change
//! with its evidence and the parking of its pending deliveries, in one commit.

use super::*;
use crate::registry::actor::AUTO_DISABLE;
use crate::registry::Change;

impl Engine {
    /// Folds the outcomes just recorded for `webhook` into its failing span.
    pub(super) fn observe_health(&self, webhook: WebhookId, bodies: &[RecordBody]) {
        if self.ops.disable.after.is_none() {
            return;
        }
        let changed = self.changed_at(webhook);
        let now = self.clock.now();
        let mut health = self.health.lock().expect("health lock");
        for body in bodies {
            health.observe(webhook, body, now, changed);
        }
    }

    fn changed_at(&self, webhook: WebhookId) -> Option<Timestamp> {
        self.ledger
            .shared()
            .read_registry()
            .get(&webhook)
            .map(|w| w.updated_at)
    }

    /// Folds every webhook's failing span from the log's `delivered` and `failed` records (one
    /// scan, at the start of the re-drive loop, when auto-disable is on).
    pub async fn load_health(&self) -> Result<()> {
        if self.ops.disable.after.is_none() {
            return Ok(());
        }
        let store = self.ledger.reader()?;
        let registry = self.ledger.shared().read_registry().clone();
        let health = blocking(move || {
            let mut health = crate::delivery::health::Health::default();
            store.scan_records(1, u64::MAX, &mut |row| {
                let rec = row.into_record()?;
                if matches!(
                    rec.body,
                    RecordBody::Delivered { .. } | RecordBody::Failed(_)
                ) {
                    let changed = registry.get(&rec.key.webhook_id).map(|w| w.updated_at);
                    health.observe(rec.key.webhook_id, &rec.body, rec.recorded_at, changed);
                }
                Ok(())
            })?;
            Ok(health)
        })
        .await?;
        *self.health.lock().expect("health lock") = health;
        Ok(())
    }

    /// Deactivates every webhook whose failing span is long enough now; how many.
    pub async fn auto_disable(&self) -> Result<usize> {
        if self.ops.disable.after.is_none() {
            return Ok(0);
        }
        let now = self.clock.now();
        let due = {
            let registry = self.ledger.shared().read_registry();
            let health = self.health.lock().expect("health lock");
            health.to_disable(&registry, &self.ops.disable, now)
        };
        for e in &due {
            let change = Change::AutoDisabled {
                first_failure: e.span.first_failure,
                failures: e.span.failures,
                last_error: e.span.last_error.clone(),
            };
            self.ledger
                .commit(Commit {
                    changes: vec![(e.webhook, change.by(AUTO_DISABLE))],
                    park: Some((e.webhook, "webhook auto-disabled".to_owned())),
                    ..Commit::default()
                })
                .await?;
            self.health.lock().expect("health lock").forget(&e.webhook);
            tracing::warn!(
                webhook = %e.webhook,
                first_failure = %e.span.first_failure,
                failures = e.span.failures,
                "webhook auto-disabled: every attempt failed for too long"
            );
        }
        Ok(due.len())
    }
}
