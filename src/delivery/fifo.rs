//! FIFO lines: for every webhook with `ordering: "fifo"`, its live deliveries in line order.
//!
//! A delivery's place in its line is the seq of the record that put it in the queue: its
//! `enqueued` record (so publish order) or, for a delivery requeued later (a redeliver or a
//! recover), its `requeued` record: a redelivered old event goes to the back of the line.
//!
//! Invariant: a line holds every live delivery of its webhook once it is loaded. It is loaded
//! lazily (folded from the log, at the first re-drive pass that sees the webhook as FIFO) and
//! every enqueue and requeue committed after the load started is pushed into it, so one that
//! lands while the load reads the log is not lost (a push and a loaded entry of the same
//! delivery keep the later place). Entries whose delivery is no longer live are dropped when
//! they reach the head. Pure: no I/O, no clock.

use std::collections::{BTreeMap, HashMap};

use crate::ids::{EventId, WebhookId};

#[derive(Debug, Default)]
struct Line {
    loaded: bool,
    order: BTreeMap<u64, EventId>,
    place: HashMap<EventId, u64>,
}

impl Line {
    fn put(&mut self, place: u64, event: EventId) {
        match self.place.get(&event) {
            Some(&old) if old >= place => {}
            old => {
                if let Some(old) = old {
                    self.order.remove(old);
                }
                self.order.insert(place, event);
                self.place.insert(event, place);
            }
        }
    }
}

/// Every FIFO webhook's line.
#[derive(Debug, Default)]
pub struct Lines {
    of: HashMap<WebhookId, Line>,
}

impl Lines {
    /// Whether `webhook`'s line is loaded (or being loaded).
    pub fn has(&self, webhook: WebhookId) -> bool {
        self.of.contains_key(&webhook)
    }

    pub fn is_loaded(&self, webhook: WebhookId) -> bool {
        self.of.get(&webhook).is_some_and(|l| l.loaded)
    }

    /// Starts `webhook`'s line: pushes land in it from now on.
    pub fn start_loading(&mut self, webhook: WebhookId) {
        self.of.entry(webhook).or_default();
    }

    /// Adds the entries folded from the log and marks the line loaded.
    pub fn finish_loading(&mut self, webhook: WebhookId, entries: Vec<(u64, EventId)>) {
        let line = self.of.entry(webhook).or_default();
        for (place, event) in entries {
            line.put(place, event);
        }
        line.loaded = true;
    }

    /// A delivery (re)entering `webhook`'s queue at `place`: at the back of its line, if the
    /// line exists (one that does not yet will find it when it loads).
    pub fn push(&mut self, webhook: WebhookId, place: u64, event: EventId) {
        if let Some(line) = self.of.get_mut(&webhook) {
            line.put(place, event);
        }
    }

    /// The delivery at the head of a loaded line.
    pub fn head(&self, webhook: WebhookId) -> Option<EventId> {
        let line = self.of.get(&webhook).filter(|l| l.loaded)?;
        line.order.first_key_value().map(|(_, e)| *e)
    }

    /// Removes `event` (no longer live) from `webhook`'s line.
    pub fn remove(&mut self, webhook: WebhookId, event: EventId) {
        if let Some(line) = self.of.get_mut(&webhook) {
            if let Some(place) = line.place.remove(&event) {
                line.order.remove(&place);
            }
        }
    }

    /// Forgets the line of a webhook that is no longer FIFO (it is loaded again if it becomes
    /// FIFO again).
    pub fn forget(&mut self, webhook: WebhookId) {
        self.of.remove(&webhook);
    }

    /// The webhooks that have a line.
    pub fn webhooks(&self) -> Vec<WebhookId> {
        self.of.keys().copied().collect()
    }

    pub fn len(&self, webhook: WebhookId) -> usize {
        self.of.get(&webhook).map_or(0, |l| l.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn e(n: u128) -> EventId {
        EventId(Uuid::from_u128(n))
    }

    #[test]
    fn the_head_is_the_earliest_place_and_a_requeue_goes_to_the_back() {
        let w = WebhookId::new();
        let mut lines = Lines::default();
        lines.push(w, 1, e(1));
        assert!(
            !lines.has(w),
            "no line before it is loaded: the push is dropped"
        );
        lines.start_loading(w);
        // Pushed while the load reads the log, and found by the load too.
        lines.push(w, 30, e(3));
        assert_eq!(lines.head(w), None, "not loaded yet");
        lines.finish_loading(w, vec![(20, e(2)), (10, e(1)), (30, e(3))]);
        assert_eq!(lines.len(w), 3);
        assert_eq!(lines.head(w), Some(e(1)));
        // e(1) is redelivered later: behind e(3).
        lines.push(w, 40, e(1));
        assert_eq!(lines.head(w), Some(e(2)));
        // An older place does not move an entry forward.
        lines.push(w, 5, e(3));
        lines.remove(w, e(2));
        assert_eq!(lines.head(w), Some(e(3)));
        lines.remove(w, e(3));
        assert_eq!(lines.head(w), Some(e(1)));
        lines.forget(w);
        assert!(!lines.has(w));
    }
}
