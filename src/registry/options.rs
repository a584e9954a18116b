//! A webhook's delivery options: its rate limit, its in-flight limit, its ordering and whether
//! it is operational.
//!
//! They are set by a `configured` registry change (kind `configured`, the options as a JSON
//! object in the row's `metadata` column, which the change's chain link covers), written beside
//! the `created` change in the same commit when a webhook is registered with options, or alone
//! by a PATCH. A webhook without such a change has the defaults: no rate limit, the process's
//! in-flight limit (`HOOKLEDGER_MAX_IN_FLIGHT_PER_WEBHOOK`), `parallel` ordering, not
//! operational. Old rows are untouched, so old files verify as before; both stores keep the
//! options in the same `metadata` text, so they need no column of their own.
//!
//! `max_in_flight` (attempts of this webhook on the wire at once, see `crate::delivery::gate`)
//! protects its receiver; the gate resizes the webhook's slots when it changes.
//!
//! `operational` (set by the operator token only, see `crate::api::routes::webhooks`) makes
//! a webhook receive hookledger's own events instead of published ones
//! (`crate::delivery::operational`).
//!
//! Invariant: a change holds only the options it sets; folding it leaves the others as they
//! were. `rate_limit` is at least 1 request per second (`null` in a PATCH removes it);
//! `max_in_flight` is from 1 to [`MAX_IN_FLIGHT_CAP`] (`null` in a PATCH goes back to the
//! process default).

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

/// The largest in-flight limit a webhook or the process may have: more attempts than this on
/// the wire at once would need more sockets than one process can keep open (Linux has about
/// 28,000 local ports for one receiver address; the default open-file limit is far lower).
pub const MAX_IN_FLIGHT_CAP: u32 = 65_536;

/// How a webhook's deliveries are attempted relative to each other.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// As many at once as the concurrency limits allow, each on its own retry schedule.
    #[default]
    Parallel,
    /// One at a time in publish order; a failing head holds the ones behind it.
    Fifo,
}

/// A webhook's options as folded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookOptions {
    /// At most this many attempts per second (`None`: no limit).
    pub rate_limit: Option<NonZeroU32>,
    /// At most this many attempts on the wire at once (`None`: the process default).
    pub max_in_flight: Option<NonZeroU32>,
    pub ordering: Ordering,
    /// Receives hookledger's own events, and no published ones
    /// (`crate::delivery::operational`).
    pub operational: bool,
}

/// The options one `configured` change sets (`None`: unchanged; `rate_limit: Some(None)`
/// removes the limit, `max_in_flight: Some(None)` goes back to the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptionsChange {
    pub rate_limit: Option<Option<NonZeroU32>>,
    pub max_in_flight: Option<Option<NonZeroU32>>,
    pub ordering: Option<Ordering>,
    pub operational: Option<bool>,
}

impl OptionsChange {
    /// The change that gives a new webhook `options` (nothing when they are the defaults).
    pub fn of(options: WebhookOptions) -> Option<Self> {
        (options != WebhookOptions::default()).then_some(Self {
            rate_limit: options.rate_limit.map(Some),
            max_in_flight: options.max_in_flight.map(Some),
            ordering: (options.ordering != Ordering::default()).then_some(options.ordering),
            operational: options.operational.then_some(true),
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn apply(&self, to: &mut WebhookOptions) {
        if let Some(r) = self.rate_limit {
            to.rate_limit = r;
        }
        if let Some(m) = self.max_in_flight {
            to.max_in_flight = m;
        }
        if let Some(o) = self.ordering {
            to.ordering = o;
        }
        if let Some(o) = self.operational {
            to.operational = o;
        }
    }

    /// The row's `metadata`: only the keys it sets (`"rate_limit": null` removes the limit).
    pub fn to_json(&self) -> String {
        let mut m = serde_json::Map::new();
        if let Some(r) = self.rate_limit {
            m.insert("rate_limit".into(), r.map(|r| r.get()).into());
        }
        if let Some(n) = self.max_in_flight {
            m.insert("max_in_flight".into(), n.map(|n| n.get()).into());
        }
        if let Some(o) = self.ordering {
            m.insert("ordering".into(), serde_json::json!(o));
        }
        if let Some(o) = self.operational {
            m.insert("operational".into(), o.into());
        }
        serde_json::Value::Object(m).to_string()
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("options: {e}"))?;
        let obj = v.as_object().ok_or("options: not an object")?;
        let mut c = Self::default();
        if let Some(r) = obj.get("rate_limit") {
            c.rate_limit = Some(match r {
                serde_json::Value::Null => None,
                r => Some(
                    r.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .and_then(NonZeroU32::new)
                        .ok_or("options: invalid rate_limit")?,
                ),
            });
        }
        if let Some(n) = obj.get("max_in_flight") {
            c.max_in_flight = Some(match n {
                serde_json::Value::Null => None,
                n => Some(
                    n.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|n| *n <= MAX_IN_FLIGHT_CAP)
                        .and_then(NonZeroU32::new)
                        .ok_or("options: invalid max_in_flight")?,
                ),
            });
        }
        if let Some(o) = obj.get("ordering") {
            c.ordering =
                Some(serde_json::from_value(o.clone()).map_err(|_| "options: invalid ordering")?);
        }
        if let Some(o) = obj.get("operational") {
            c.operational = Some(o.as_bool().ok_or("options: invalid operational")?);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_round_trips_through_its_json_and_sets_only_its_keys() {
        let c = OptionsChange {
            rate_limit: Some(NonZeroU32::new(10)),
            max_in_flight: Some(NonZeroU32::new(3)),
            ordering: Some(Ordering::Fifo),
            operational: None,
        };
        assert_eq!(OptionsChange::from_json(&c.to_json()).unwrap(), c);
        let mut o = WebhookOptions {
            operational: true,
            ..Default::default()
        };
        c.apply(&mut o);
        assert_eq!(o.rate_limit, NonZeroU32::new(10));
        assert_eq!(o.ordering, Ordering::Fifo);
        assert_eq!(o.max_in_flight, NonZeroU32::new(3));
        assert!(o.operational, "not in the change: unchanged");
        let remove = OptionsChange {
            rate_limit: Some(None),
            ..Default::default()
        };
        assert_eq!(remove.to_json(), r#"{"rate_limit":null}"#);
        assert_eq!(OptionsChange::from_json(&remove.to_json()).unwrap(), remove);
        remove.apply(&mut o);
        assert_eq!(o.rate_limit, None);
        assert!(OptionsChange::from_json(r#"{"rate_limit":0}"#).is_err());
        assert_eq!(OptionsChange::of(WebhookOptions::default()), None);
        assert_eq!(o.max_in_flight, NonZeroU32::new(3), "not in the removal");
    }

    #[test]
    fn max_in_flight_is_set_cleared_back_to_the_default_and_bounded() {
        let mut o = WebhookOptions::default();
        let set = OptionsChange::from_json(r#"{"max_in_flight":2}"#).unwrap();
        set.apply(&mut o);
        assert_eq!(o.max_in_flight, NonZeroU32::new(2));
        assert_eq!(o.rate_limit, None, "not in the change: unchanged");
        let clear = OptionsChange {
            max_in_flight: Some(None),
            ..Default::default()
        };
        assert_eq!(clear.to_json(), r#"{"max_in_flight":null}"#);
        assert_eq!(OptionsChange::from_json(&clear.to_json()).unwrap(), clear);
        clear.apply(&mut o);
        assert_eq!(o, WebhookOptions::default());
        let cap = format!(r#"{{"max_in_flight":{MAX_IN_FLIGHT_CAP}}}"#);
        assert!(OptionsChange::from_json(&cap).is_ok());
        for bad in ["0", "-1", "2.5", "\"two\"", "65537", "4294967296"] {
            let text = format!(r#"{{"max_in_flight":{bad}}}"#);
            assert!(OptionsChange::from_json(&text).is_err(), "{text}");
        }
        let of = OptionsChange::of(WebhookOptions {
            max_in_flight: NonZeroU32::new(4),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(of.to_json(), r#"{"max_in_flight":4}"#);
    }
}
