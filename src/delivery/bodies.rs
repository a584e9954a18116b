//! The bodies of deliveries published while every permit was taken. Such a delivery is
//! recorded `pending` and started later by a re-drive pass; keeping its body here spares that
//! pass reading the event back from the database (under load, most deliveries take this path).
//!
//! Each body is kept with how many of its deliveries wait, and dropped when the last one is
//! taken. The cache is bounded in bytes; a body that does not fit, or one whose delivery never
//! starts (parked first), is read back from the events table as before, so the cache only ever
//! saves work and never decides anything.

use std::collections::HashMap;
use std::sync::Arc;

use super::envelope::EventBody;
use crate::ids::EventId;

/// The most body bytes kept at once.
pub const MAX_BYTES: usize = 64 << 20;

#[derive(Debug, Default)]
pub struct WaitingBodies {
    bodies: HashMap<EventId, (Arc<EventBody>, usize)>,
    bytes: usize,
}

impl WaitingBodies {
    /// Keeps `body` for `deliveries` more deliveries of `event` (if it fits).
    pub fn keep(&mut self, event: EventId, body: &Arc<EventBody>, deliveries: usize) {
        if deliveries == 0 {
            return;
        }
        if let Some((_, waiting)) = self.bodies.get_mut(&event) {
            *waiting += deliveries;
            return;
        }
        if self.bytes + body.len() > MAX_BYTES {
            return;
        }
        self.bytes += body.len();
        self.bodies.insert(event, (body.clone(), deliveries));
    }

    /// The body for one delivery of `event` that starts now.
    pub fn take(&mut self, event: EventId) -> Option<Arc<EventBody>> {
        let (body, waiting) = self.bodies.get_mut(&event)?;
        let body = body.clone();
        *waiting -= 1;
        if *waiting == 0 {
            self.forget(event);
        }
        Some(body)
    }

    /// Drops `event`'s body (its publish was not committed).
    pub fn forget(&mut self, event: EventId) {
        if let Some((body, _)) = self.bodies.remove(&event) {
            self.bytes -= body.len();
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(body: Vec<u8>) -> EventBody {
        EventBody {
            event_type: String::new(),
            published_at: Default::default(),
            body,
            format: None,
            producer_id: None,
        }
    }

    #[test]
    fn a_body_stays_until_its_last_waiting_delivery_takes_it() {
        let mut cache = WaitingBodies::default();
        let event = EventId::new();
        let body = Arc::new(raw(b"{}".to_vec()));
        cache.keep(event, &body, 2);
        assert_eq!(cache.bytes(), 2);
        assert_eq!(cache.take(event), Some(body.clone()));
        assert_eq!(cache.take(event), Some(body.clone()));
        assert_eq!(cache.take(event), None, "both deliveries took it");
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn the_cache_is_bounded_in_bytes_and_forgets_on_request() {
        let mut cache = WaitingBodies::default();
        let big = Arc::new(raw(vec![0; MAX_BYTES - 10]));
        let (first, second) = (EventId::new(), EventId::new());
        cache.keep(first, &big, 1);
        cache.keep(second, &Arc::new(raw(vec![0; 11])), 1);
        assert_eq!(
            cache.take(second),
            None,
            "over the bound: read back instead"
        );
        cache.forget(first);
        assert_eq!((cache.take(first), cache.bytes()), (None, 0));
    }
}
