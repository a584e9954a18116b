//! The bytes a delivery POSTs, built from the stored event alone, so every retry of a delivery
//! sends exactly the same bytes.
//!
//! - An event stored before apps (no format) is sent as it was stored.
//! - An event of format 1 stores its payload (the compact JSON the producer sent). A webhook
//!   with the standard payload (the default) receives the Standard Webhooks envelope
//!   `{"type":<event type>,"timestamp":<publish time, RFC 3339 UTC with microseconds>,"data":<payload>}`,
//!   made by concatenating the stored payload bytes between a fixed head and `}` (never by
//!   re-serialising the payload); a webhook with `payload_format: raw` receives the payload.

use crate::ledger::record::Timestamp;
use crate::registry::PayloadFormat;
use crate::store::StoredEvent;

/// The body format of events stored from now on: the payload, wrapped at send time.
pub const FORMAT_PAYLOAD: u8 = 1;

/// What an attempt needs of its event to build its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventBody {
    pub event_type: String,
    pub published_at: Timestamp,
    /// The stored body.
    pub body: Vec<u8>,
    /// The stored format (`None`: sent as stored).
    pub format: Option<u8>,
    /// The producer's id (`None`: stored before producer ids), the `webhook-id` header.
    pub producer_id: Option<String>,
}

impl EventBody {
    pub fn of(e: StoredEvent) -> Self {
        Self {
            event_type: e.event_type,
            published_at: e.published_at,
            body: e.body,
            format: e.format,
            producer_id: e.producer_id,
        }
    }

    /// The bytes kept in memory for it.
    pub fn len(&self) -> usize {
        self.body.len() + self.event_type.len()
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// The bytes a webhook receiving `format` is sent.
    pub fn wire(&self, format: PayloadFormat) -> std::borrow::Cow<'_, [u8]> {
        match (self.format, format) {
            (Some(FORMAT_PAYLOAD), PayloadFormat::Standard) => {
                envelope(&self.event_type, self.published_at, &self.body).into()
            }
            _ => self.body.as_slice().into(),
        }
    }
}

/// `{"type":…,"timestamp":…,"data":<payload>}` with `payload` copied byte for byte.
pub fn envelope(event_type: &str, published_at: Timestamp, payload: &[u8]) -> Vec<u8> {
    let head = format!(
        "{{\"type\":{},\"timestamp\":{},\"data\":",
        serde_json::Value::from(event_type),
        serde_json::Value::from(published_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    );
    let mut out = Vec::with_capacity(head.len() + payload.len() + 1);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(payload);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(format: Option<u8>) -> EventBody {
        EventBody {
            event_type: "order.created".into(),
            published_at: chrono::DateTime::from_timestamp_micros(1_767_225_600_123_456).unwrap(),
            body: br#"{"b":1,"a":[1.50,"x"]}"#.to_vec(),
            format,
            producer_id: None,
        }
    }

    #[test]
    fn the_envelope_wraps_the_stored_payload_bytes_unchanged() {
        let b = body(Some(FORMAT_PAYLOAD));
        let wire = b.wire(PayloadFormat::Standard);
        assert_eq!(
            std::str::from_utf8(&wire).unwrap(),
            r#"{"type":"order.created","timestamp":"2026-01-01T00:00:00.123456Z","data":{"b":1,"a":[1.50,"x"]}}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&wire).unwrap();
        assert_eq!(v["data"]["a"][1], "x");
        assert_eq!(
            b.wire(PayloadFormat::Standard),
            wire,
            "the same bytes every time"
        );
        assert_eq!(&*b.wire(PayloadFormat::Raw), b.body.as_slice());
    }

    #[test]
    fn an_event_stored_before_formats_is_sent_as_stored() {
        let b = body(None);
        assert_eq!(&*b.wire(PayloadFormat::Standard), b.body.as_slice());
        assert_eq!(&*b.wire(PayloadFormat::Raw), b.body.as_slice());
    }
}
