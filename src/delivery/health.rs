//! Auto-disable: each webhook's current failing span, a pure fold of its `delivered` and
//! `failed` records, and the decision to deactivate a webhook that has failed for too long.
//!
//! Invariant: the decision reads only the fold and the time it is given (the engine's
//! injected clock), never a wall-clock sleep. A span starts at a webhook's first failure after
//! its last success and after its last registry change (an operator's PATCH, re-enabling it
//! or fixing its URL, starts afresh); a `delivered` ends it. A webhook is disabled when its
//! span is at least `after` long and holds at least `min_failures` failed attempts.

use std::collections::HashMap;
use std::time::Duration;

use crate::ids::WebhookId;
use crate::ledger::record::{RecordBody, Timestamp};
use crate::registry::Registry;

/// When a failing webhook is disabled (`after: None`: never).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DisablePolicy {
    pub after: Option<Duration>,
    pub min_failures: u64,
}

impl Default for DisablePolicy {
    /// Off: what an engine built without operations settings runs with.
    fn default() -> Self {
        Self {
            after: None,
            min_failures: DEFAULT_MIN_FAILURES,
        }
    }
}

/// `HOOKLEDGER_DISABLE_AFTER`'s default for `serve`.
pub const DEFAULT_DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);
/// `HOOKLEDGER_DISABLE_MIN_FAILURES`'s default.
pub const DEFAULT_MIN_FAILURES: u64 = 5;

/// A webhook's failing span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub first_failure: Timestamp,
    pub failures: u64,
    pub last_error: String,
}

/// Why a webhook was disabled: what its `auto_disabled` registry change records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub webhook: WebhookId,
    pub span: Span,
}

/// Every webhook's failing span.
#[derive(Clone, Debug, Default)]
pub struct Health {
    spans: HashMap<WebhookId, Span>,
}

impl Health {
    /// Folds one record of `webhook` recorded at `at`; `changed_at` is the webhook's last
    /// registry change (a span older than it is dropped).
    pub fn observe(
        &mut self,
        webhook: WebhookId,
        body: &RecordBody,
        at: Timestamp,
        changed_at: Option<Timestamp>,
    ) {
        match body {
            RecordBody::Delivered { .. } => {
                self.spans.remove(&webhook);
            }
            RecordBody::Failed(f) => {
                if changed_at.is_some_and(|c| at < c) {
                    return;
                }
                let span = self.spans.entry(webhook).or_insert_with(|| Span {
                    first_failure: at,
                    failures: 0,
                    last_error: String::new(),
                });
                if changed_at.is_some_and(|c| span.first_failure < c) {
                    *span = Span {
                        first_failure: at,
                        failures: 0,
                        last_error: String::new(),
                    };
                }
                span.failures += 1;
                span.last_error = f.error.chars().take(200).collect();
            }
            _ => {}
        }
    }

    pub fn span(&self, webhook: &WebhookId) -> Option<&Span> {
        self.spans.get(webhook)
    }

    pub fn forget(&mut self, webhook: &WebhookId) {
        self.spans.remove(webhook);
    }

    /// The active webhooks to disable at `now`, in id order.
    pub fn to_disable(
        &self,
        registry: &Registry,
        policy: &DisablePolicy,
        now: Timestamp,
    ) -> Vec<Evidence> {
        let Some(after) = policy
            .after
            .and_then(|a| chrono::Duration::from_std(a).ok())
        else {
            return Vec::new();
        };
        let mut out: Vec<Evidence> = self
            .spans
            .iter()
            .filter(|(id, span)| {
                registry.get(id).is_some_and(|w| {
                    w.active
                        && span.first_failure >= w.updated_at
                        && span.failures >= policy.min_failures
                        && now - span.first_failure >= after
                })
            })
            .map(|(id, span)| Evidence {
                webhook: *id,
                span: span.clone(),
            })
            .collect();
        out.sort_by_key(|e| e.webhook);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::{ErrorClass, Failure};

    fn failed(at: Timestamp) -> RecordBody {
        RecordBody::Failed(Failure {
            attempt: 1,
            status: Some(500),
            error_class: ErrorClass::Status,
            error: "HTTP 500".into(),
            duration_ms: 1,
            next_due_at: at,
            response_body: None,
        })
    }

    #[test]
    fn a_success_ends_the_span_and_a_change_restarts_it() {
        let w = WebhookId(uuid::Uuid::from_u128(1));
        let t0 = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let mut h = Health::default();
        h.observe(w, &failed(t0), t0, None);
        h.observe(w, &failed(t0), t0 + chrono::Duration::hours(1), None);
        assert_eq!(h.span(&w).unwrap().failures, 2);
        assert_eq!(h.span(&w).unwrap().first_failure, t0);
        h.observe(
            w,
            &RecordBody::Delivered {
                attempt: 1,
                status: 200,
                duration_ms: 1,
            },
            t0 + chrono::Duration::hours(2),
            None,
        );
        assert!(h.span(&w).is_none());
        let t3 = t0 + chrono::Duration::hours(3);
        h.observe(w, &failed(t3), t3, None);
        let t4 = t0 + chrono::Duration::hours(4);
        h.observe(w, &failed(t4), t4, Some(t3 + chrono::Duration::minutes(1)));
        assert_eq!(h.span(&w).unwrap().first_failure, t4);
        assert_eq!(h.span(&w).unwrap().failures, 1);
    }
}
