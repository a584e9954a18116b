//! Identifier newtypes: webhooks, events and the delivery key that joins them.
//!
//! Ids are UUIDs so that the ledger stores them in DuckDB's 16-byte `UUID` type (compact and
//! compressible) rather than as strings. They are parsed once, at the boundary.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A hash map keyed by ids, hashed with foldhash (seeded per process) instead of std's SipHash:
/// the fold does a lookup and an insert or remove per record, and SipHash over the 32-byte
/// [`DeliveryKey`] was about 5 % of a full fold's CPU. The keys are ids this service
/// generated, not strings a client chose, so SipHash's flooding resistance buys nothing here.
pub type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered (v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Identifies a webhook (a subscriber endpoint).
    WebhookId
);
uuid_id!(
    /// Identifies a published event; it doubles as the publisher's idempotency key.
    EventId
);

/// One delivery is one (webhook, event) pair; it is enqueued at most once.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct DeliveryKey {
    pub webhook_id: WebhookId,
    pub event_id: EventId,
}

impl DeliveryKey {
    pub fn new(webhook_id: WebhookId, event_id: EventId) -> Self {
        Self {
            webhook_id,
            event_id,
        }
    }
}

impl fmt::Display for DeliveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.webhook_id, self.event_id)
    }
}

impl fmt::Debug for DeliveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeliveryKey({self})")
    }
}

/// The app that every webhook and event of a database written before apps belongs to, and
/// the app of the unscoped routes (`/v1/webhooks`, `/v1/events`, ...).
pub const DEFAULT_APP: &str = "default";

/// The longest app uid and producer event id.
pub const MAX_ID_LEN: usize = 256;

/// Whether `s` is a producer's id: 1 to 256 characters from `[A-Za-z0-9._:~-]`. App uids and
/// event ids follow the same rule.
pub fn is_producer_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'~' | b'-'))
}

/// An app's uid, chosen by the producer (see [`is_producer_id`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppUid(String);

impl AppUid {
    /// The uid, if `s` is a valid one.
    pub fn parse(s: &str) -> Option<Self> {
        is_producer_id(s).then(|| Self(s.to_owned()))
    }

    pub fn default_app() -> Self {
        Self(DEFAULT_APP.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_APP
    }
}

impl fmt::Display for AppUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AppUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppUid({})", self.0)
    }
}

/// A producer's own event id (see [`is_producer_id`]), unique per app. The ledger keys the
/// event by the 16-byte [`EventId`] that [`ProducerId::key`] derives from it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProducerId(String);

impl ProducerId {
    /// The id, if `s` is a valid one.
    pub fn parse(s: &str) -> Option<Self> {
        is_producer_id(s).then(|| Self(s.to_owned()))
    }

    /// The producer id of an event stored before producer ids (its UUID, as text).
    pub fn of_uuid(id: EventId) -> Self {
        Self(id.0.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The event's 16-byte key. In the `default` app a hyphenated UUID (in either case) of any
    /// version but 8 is its own key, so events published before producer ids keep their ids
    /// and their idempotency. Every other id maps to a UUIDv8 made of the first 122 bits of
    /// `SHA-256("hookledger/event-id/v1" ‖ app ‖ 0x00 ‖ id)`: the same id in two apps is two
    /// events. Version 8 UUIDs are hashed in the default app too, so that no producer there can
    /// name another app's derived key.
    pub fn key(&self, app: &AppUid) -> EventId {
        if app.is_default() && self.0.len() == 36 {
            if let Ok(u) = Uuid::try_parse(&self.0) {
                if u.get_version_num() != 8 {
                    return EventId(u);
                }
            }
        }
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"hookledger/event-id/v1");
        h.update(app.as_str().as_bytes());
        h.update([0u8]);
        h.update(self.0.as_bytes());
        let digest = h.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        EventId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }
}

impl fmt::Display for ProducerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProducerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProducerId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_are_1_to_256_safe_characters() {
        for ok in [
            "a",
            "evt_123",
            "order-42.created",
            "a:b~c",
            &"x".repeat(256),
        ] {
            assert!(ProducerId::parse(ok).is_some(), "{ok:?}");
        }
        for bad in [
            "",
            &"x".repeat(257),
            "a b",
            "a/b",
            "é",
            "a\u{0}",
            "a+b",
            "{x}",
        ] {
            assert!(ProducerId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_uuid_keeps_its_key_in_the_default_app_only() {
        let u = Uuid::now_v7();
        let default = AppUid::default_app();
        let other = AppUid::parse("shop").unwrap();
        let lower = ProducerId::parse(&u.to_string()).unwrap();
        let upper = ProducerId::parse(&u.to_string().to_uppercase()).unwrap();
        assert_eq!(lower.key(&default), EventId(u));
        assert_eq!(upper.key(&default), EventId(u));
        assert_ne!(lower.key(&other), EventId(u));
        let p = ProducerId::parse("ord-1").unwrap();
        assert_ne!(
            p.key(&default),
            p.key(&other),
            "one id in two apps is two events"
        );
        assert_eq!(p.key(&other), p.key(&other));
        assert_eq!(p.key(&other).0.get_version_num(), 8);
        let v8 = ProducerId::parse(&p.key(&other).to_string()).unwrap();
        assert_ne!(v8.key(&default), p.key(&other), "a v8 uuid is hashed");
    }
}
