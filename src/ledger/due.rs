//! The due index: every pending delivery by due time, kept per webhook.
//!
//! A single index ordered by due time made a re-drive pass walk one webhook's backlog to reach
//! another's due rows: a webhook that could take nothing (its slots busy, or it stopped
//! answering) with thousands of earlier due rows hid every other webhook's retries. Here each
//! webhook's pending deliveries are ordered on their own, and the webhooks by their earliest due
//! time, so [`DueIndex::fair`] skips a webhook that can take nothing in O(1), whatever its
//! backlog. Memory per pending delivery is one entry, as before; per webhook two more.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::ops::Bound;

use uuid::Uuid;

use crate::ids::{DeliveryKey, EventId, IdMap, WebhookId};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DueIndex {
    /// (webhook, due µs, event): each webhook's pending deliveries in due order.
    rows: BTreeSet<(WebhookId, i64, EventId)>,
    /// (earliest due µs, webhook) of every webhook with a pending delivery.
    heads: BTreeSet<(i64, WebhookId)>,
    /// The same earliest due times, by webhook.
    head_of: IdMap<WebhookId, i64>,
}

impl DueIndex {
    pub fn insert(&mut self, key: DeliveryKey, due_us: i64) {
        let w = key.webhook_id;
        self.rows.insert((w, due_us, key.event_id));
        match self.head_of.get(&w) {
            Some(&head) if head <= due_us => {}
            old => {
                if let Some(&old) = old {
                    self.heads.remove(&(old, w));
                }
                self.set_head(w, Some(due_us));
            }
        }
    }

    pub fn remove(&mut self, key: DeliveryKey, due_us: i64) {
        let w = key.webhook_id;
        if !self.rows.remove(&(w, due_us, key.event_id)) {
            return;
        }
        if self.head_of.get(&w) == Some(&due_us) {
            self.heads.remove(&(due_us, w));
            let next = self.of(w).next().map(|(_, due, _)| *due);
            self.set_head(w, next);
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The earliest due time of all.
    pub fn first_due(&self) -> Option<i64> {
        self.heads.first().map(|(due, _)| *due)
    }

    /// Up to `limit` deliveries due at or before `now_us`, earliest first over all webhooks (a
    /// merge of the webhooks' own orders: the cost follows `limit` and the webhooks it visits,
    /// not the size of the queue).
    pub fn earliest(&self, now_us: i64, limit: usize) -> Vec<DeliveryKey> {
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut heads = self.heads.iter().take_while(|(due, _)| *due <= now_us);
        let mut next_head = heads.next();
        let mut heap: BinaryHeap<Reverse<(i64, WebhookId, EventId)>> = BinaryHeap::new();
        while out.len() < limit {
            // Admit the next webhook while its earliest row is due before everything queued.
            if let Some(&(due, w)) = next_head {
                if heap.peek().is_none_or(|Reverse((d, ..))| due <= *d) {
                    if let Some(&(w, d, e)) = self.of(w).next() {
                        heap.push(Reverse((d, w, e)));
                    }
                    next_head = heads.next();
                    continue;
                }
            }
            let Some(Reverse((d, w, e))) = heap.pop() else {
                break;
            };
            out.push(DeliveryKey::new(w, e));
            let after = (Bound::Excluded((w, d, e)), Bound::Unbounded);
            if let Some(&(nw, nd, ne)) = self.rows.range(after).next() {
                if nw == w && nd <= now_us {
                    heap.push(Reverse((nd, nw, ne)));
                }
            }
        }
        out
    }

    /// Deliveries due at or before `now_us`, webhook by webhook (the most overdue webhook
    /// first), at most `quota(webhook)` of each and `limit` in all. A webhook whose quota is 0
    /// costs one call, however many rows it has due.
    pub fn fair(
        &self,
        now_us: i64,
        limit: usize,
        mut quota: impl FnMut(WebhookId) -> usize,
    ) -> Vec<DeliveryKey> {
        let mut out = Vec::new();
        for &(head, w) in &self.heads {
            if head > now_us || out.len() >= limit {
                break;
            }
            let take = quota(w).min(limit - out.len());
            if take == 0 {
                continue;
            }
            let due = self.of(w).take_while(|(_, d, _)| *d <= now_us).take(take);
            out.extend(due.map(|(w, _, e)| DeliveryKey::new(*w, *e)));
        }
        out
    }

    /// One webhook's pending deliveries in due order.
    fn of(&self, w: WebhookId) -> impl Iterator<Item = &(WebhookId, i64, EventId)> {
        let start = (w, i64::MIN, EventId(Uuid::nil()));
        self.rows
            .range(start..)
            .take_while(move |(rw, ..)| *rw == w)
    }

    fn set_head(&mut self, w: WebhookId, due: Option<i64>) {
        match due {
            Some(due) => {
                self.heads.insert((due, w));
                self.head_of.insert(w, due);
            }
            None => {
                self.head_of.remove(&w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(w: u128, e: u128) -> DeliveryKey {
        DeliveryKey::new(WebhookId(Uuid::from_u128(w)), EventId(Uuid::from_u128(e)))
    }

    fn index(rows: &[(u128, u128, i64)]) -> DueIndex {
        let mut ix = DueIndex::default();
        for &(w, e, due) in rows {
            ix.insert(key(w, e), due);
        }
        ix
    }

    #[test]
    fn earliest_merges_the_webhooks_in_due_order_and_stops_at_now() {
        let ix = index(&[(1, 1, 30), (2, 2, 10), (1, 3, 20), (2, 4, 40), (3, 5, 25)]);
        assert_eq!(
            ix.earliest(30, 10),
            vec![key(2, 2), key(1, 3), key(3, 5), key(1, 1)]
        );
        assert_eq!(ix.earliest(30, 2), vec![key(2, 2), key(1, 3)]);
        assert!(ix.earliest(9, 10).is_empty());
        assert_eq!(ix.first_due(), Some(10));
    }

    #[test]
    fn heads_follow_inserts_and_removes() {
        let mut ix = index(&[(1, 1, 30), (1, 2, 10), (1, 3, 10)]);
        assert_eq!(ix.first_due(), Some(10));
        ix.remove(key(1, 2), 10);
        assert_eq!(ix.first_due(), Some(10), "another row is due at 10");
        ix.remove(key(1, 3), 10);
        assert_eq!(ix.first_due(), Some(30));
        ix.remove(key(1, 3), 10);
        assert_eq!(
            (ix.first_due(), ix.len()),
            (Some(30), 1),
            "a second remove is a no-op"
        );
        ix.remove(key(1, 1), 30);
        assert_eq!((ix.first_due(), ix.is_empty()), (None, true));
        assert_eq!(ix, DueIndex::default(), "nothing is left behind");
    }

    /// Regression: with one index by due time, a webhook that could take nothing and had more
    /// earlier rows than a pass looked at hid every other webhook's due rows.
    #[test]
    fn a_webhook_that_takes_nothing_does_not_hide_the_others_however_long_its_backlog() {
        let mut rows: Vec<(u128, u128, i64)> = (0..10_000).map(|i| (1, i, i as i64)).collect();
        rows.push((2, 1_000_000, 20_000));
        rows.push((3, 1_000_001, 20_001));
        let ix = index(&rows);
        let mut asked = Vec::new();
        let taken = ix.fair(i64::MAX, 100, |w| {
            asked.push(w);
            usize::from(w != WebhookId(Uuid::from_u128(1)))
        });
        assert_eq!(taken, vec![key(2, 1_000_000), key(3, 1_000_001)]);
        assert_eq!(asked.len(), 3, "each webhook is asked once");
    }

    #[test]
    fn fair_takes_each_webhooks_quota_earliest_first_within_the_limit() {
        let ix = index(&[(1, 1, 5), (1, 2, 6), (1, 3, 7), (2, 4, 1), (2, 5, 50)]);
        assert_eq!(
            ix.fair(10, 10, |_| 2),
            vec![key(2, 4), key(1, 1), key(1, 2)]
        );
        assert_eq!(ix.fair(10, 2, |_| 5), vec![key(2, 4), key(1, 1)]);
        assert!(ix.fair(0, 10, |_| 5).is_empty());
    }
}
