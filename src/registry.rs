//! The webhook registry, event-sourced like the ledger: an append-only `webhook_changes` log
//! (created, updated, deactivated, secret_rotated) and the map of webhooks folded from it.
//!
//! Each change row carries its own SHA-256 link to the previous change (the registry changes
//! rarely, so a per-row hash costs nothing that matters), so "who changed this URL, and when" is
//! an audit query that cannot be quietly edited.
//!
//! Secrets are stored in the change rows (the sender needs them after a restart) and leave this
//! module only as [`Secret`], whose `Debug` and `Display` print `whsec_***`.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::delivery::signing::Secret;
use crate::error::LedgerError;
use crate::ids::WebhookId;
use crate::ledger::chain::Hash;
use crate::ledger::record::Timestamp;
use crate::ledger::stored::{put_opt, put_str};

/// How long the previous secret keeps signing after a rotation, by default.
pub const ROTATION_OVERLAP_HOURS: i64 = 24;

/// A change to the registry, before the writer gives it a seq and a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Created {
        url: String,
        event_types: Vec<String>,
        description: Option<String>,
        secret: Secret,
    },
    /// Only the fields that are `Some` change.
    Updated {
        url: Option<String>,
        event_types: Option<Vec<String>>,
        description: Option<String>,
        active: Option<bool>,
    },
    Deactivated {
        reason: String,
    },
    SecretRotated {
        secret: Secret,
        /// Until when the previous secret still signs alongside the new one.
        previous_until: Timestamp,
    },
}

impl Change {
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Created { .. } => "created",
            Change::Updated { .. } => "updated",
            Change::Deactivated { .. } => "deactivated",
            Change::SecretRotated { .. } => "secret_rotated",
        }
    }
}

/// An appended registry change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRecord {
    pub seq: u64,
    pub recorded_at: Timestamp,
    pub webhook_id: WebhookId,
    pub change: Change,
}

/// A signing key of a webhook; `until` is set on the previous key during a rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKey {
    pub secret: Secret,
    pub until: Option<Timestamp>,
}

/// A webhook as folded from its changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Webhook {
    pub id: WebhookId,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub active: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(skip)]
    pub keys: Vec<SigningKey>,
}

impl Webhook {
    /// Whether this webhook subscribes to `event_type`: a pattern matches itself and its dotted
    /// descendants (`order` matches `order` and `order.created`, not `orders.x`); an empty
    /// filter matches everything.
    pub fn matches(&self, event_type: &str) -> bool {
        self.event_types.is_empty()
            || self.event_types.iter().any(|p| {
                event_type == p
                    || (event_type.starts_with(p.as_str())
                        && event_type.as_bytes().get(p.len()) == Some(&b'.'))
            })
    }

    /// The secrets that sign at `now`: the current one, and the previous one during a rotation.
    pub fn signing_secrets(&self, now: Timestamp) -> Vec<&Secret> {
        self.keys
            .iter()
            .filter(|k| k.until.is_none_or(|until| now < until))
            .map(|k| &k.secret)
            .collect()
    }
}

/// The registry folded from `webhook_changes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registry {
    webhooks: BTreeMap<WebhookId, Webhook>,
    last_seq: u64,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// A registry as a checkpoint stored it: these webhooks after change `last_seq`.
    pub(crate) fn from_parts(webhooks: Vec<Webhook>, last_seq: u64) -> Self {
        Self {
            webhooks: webhooks.into_iter().map(|w| (w.id, w)).collect(),
            last_seq,
        }
    }

    pub fn get(&self, id: &WebhookId) -> Option<&Webhook> {
        self.webhooks.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Webhook> {
        self.webhooks.values()
    }

    /// Active webhooks whose filter matches `event_type`, in id order.
    pub fn matching<'a>(&'a self, event_type: &'a str) -> impl Iterator<Item = &'a Webhook> {
        self.webhooks
            .values()
            .filter(move |w| w.active && w.matches(event_type))
    }

    /// Checks a change against the current registry without applying it.
    pub fn check(&self, webhook_id: WebhookId, change: &Change) -> Result<(), String> {
        match (self.webhooks.get(&webhook_id), change) {
            (None, Change::Created { .. }) => Ok(()),
            (Some(_), Change::Created { .. }) => Err(format!("webhook {webhook_id} exists")),
            (None, _) => Err(format!("no webhook {webhook_id}")),
            (Some(_), _) => Ok(()),
        }
    }

    /// Folds one change; `seq` must follow the last one.
    pub fn apply(&mut self, rec: &ChangeRecord) -> Result<(), LedgerError> {
        let invalid = |reason: String| LedgerError::InvalidChange {
            seq: rec.seq,
            reason,
        };
        if rec.seq != self.last_seq + 1 {
            return Err(invalid(format!("expected seq {}", self.last_seq + 1)));
        }
        self.check(rec.webhook_id, &rec.change).map_err(invalid)?;
        self.fold(rec);
        self.last_seq = rec.seq;
        Ok(())
    }

    fn fold(&mut self, rec: &ChangeRecord) {
        let at = rec.recorded_at;
        if let Change::Created {
            url,
            event_types,
            description,
            secret,
        } = &rec.change
        {
            let webhook = Webhook {
                id: rec.webhook_id,
                url: url.clone(),
                event_types: event_types.clone(),
                description: description.clone(),
                active: true,
                created_at: at,
                updated_at: at,
                keys: vec![SigningKey {
                    secret: secret.clone(),
                    until: None,
                }],
            };
            self.webhooks.insert(rec.webhook_id, webhook);
            return;
        }
        let Some(w) = self.webhooks.get_mut(&rec.webhook_id) else {
            return;
        };
        w.updated_at = at;
        match &rec.change {
            Change::Created { .. } => {}
            Change::Updated {
                url,
                event_types,
                description,
                active,
            } => {
                w.url = url.clone().unwrap_or_else(|| w.url.clone());
                w.event_types = event_types.clone().unwrap_or_else(|| w.event_types.clone());
                w.description = description.clone().or_else(|| w.description.clone());
                w.active = active.unwrap_or(w.active);
            }
            Change::Deactivated { .. } => w.active = false,
            Change::SecretRotated {
                secret,
                previous_until,
            } => {
                let previous = w.keys.iter().find(|k| k.until.is_none()).cloned();
                w.keys = vec![SigningKey {
                    secret: secret.clone(),
                    until: None,
                }];
                if let Some(prev) = previous {
                    w.keys.push(SigningKey {
                        secret: prev.secret,
                        until: Some(*previous_until),
                    });
                }
            }
        }
    }
}

/// One row of `webhook_changes`, column for column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChange {
    pub seq: u64,
    pub recorded_at_us: i64,
    pub format_version: u8,
    pub kind: String,
    pub webhook_id: Uuid,
    pub url: Option<String>,
    /// Comma-joined (event types cannot contain commas).
    pub event_types: Option<String>,
    pub description: Option<String>,
    pub active: Option<bool>,
    pub secret: Option<String>,
    pub previous_until_us: Option<i64>,
    pub reason: Option<String>,
    pub hash: Hash,
}

impl StoredChange {
    /// The row for `rec`, chained to `prev`.
    pub fn from_change(rec: &ChangeRecord, prev: &Hash) -> Self {
        let mut row = StoredChange {
            seq: rec.seq,
            recorded_at_us: rec.recorded_at.timestamp_micros(),
            format_version: 1,
            kind: rec.change.kind().to_owned(),
            webhook_id: rec.webhook_id.0,
            url: None,
            event_types: None,
            description: None,
            active: None,
            secret: None,
            previous_until_us: None,
            reason: None,
            hash: [0; 32],
        };
        match &rec.change {
            Change::Created {
                url,
                event_types,
                description,
                secret,
            } => {
                row.url = Some(url.clone());
                row.event_types = Some(event_types.join(","));
                row.description = description.clone();
                row.active = Some(true);
                row.secret = Some(secret.expose());
            }
            Change::Updated {
                url,
                event_types,
                description,
                active,
            } => {
                row.url = url.clone();
                row.event_types = event_types.as_ref().map(|t| t.join(","));
                row.description = description.clone();
                row.active = *active;
            }
            Change::Deactivated { reason } => {
                row.active = Some(false);
                row.reason = Some(reason.clone());
            }
            Change::SecretRotated {
                secret,
                previous_until,
            } => {
                row.secret = Some(secret.expose());
                row.previous_until_us = Some(previous_until.timestamp_micros());
            }
        }
        row.hash = row.link(prev);
        row
    }

    /// This row's chain hash given the previous row's.
    pub fn link(&self, prev: &Hash) -> Hash {
        let mut buf = Vec::with_capacity(256);
        buf.push(self.format_version);
        buf.extend_from_slice(&self.seq.to_be_bytes());
        buf.extend_from_slice(&self.recorded_at_us.to_be_bytes());
        put_str(&mut buf, &self.kind);
        buf.extend_from_slice(self.webhook_id.as_bytes());
        put_opt(&mut buf, self.url.as_deref(), put_str);
        put_opt(&mut buf, self.event_types.as_deref(), put_str);
        put_opt(&mut buf, self.description.as_deref(), put_str);
        put_opt(&mut buf, self.active, |o, v| o.push(u8::from(v)));
        put_opt(&mut buf, self.secret.as_deref(), put_str);
        put_opt(&mut buf, self.previous_until_us, |o, v| {
            o.extend_from_slice(&v.to_be_bytes())
        });
        put_opt(&mut buf, self.reason.as_deref(), put_str);
        let mut h = Sha256::new();
        h.update(b"hookledger/change/v1");
        h.update(prev);
        h.update(&buf);
        h.finalize().into()
    }

    /// Reads the row back into a change.
    pub fn into_change(self) -> Result<ChangeRecord, LedgerError> {
        let seq = self.seq;
        let bad = |what: &str| LedgerError::InvalidChange {
            seq,
            reason: what.to_owned(),
        };
        let ts = |us: Option<i64>| us.and_then(chrono::DateTime::from_timestamp_micros);
        let secret = || {
            self.secret
                .as_deref()
                .and_then(|s| Secret::parse(s).ok())
                .ok_or_else(|| bad("missing or invalid secret"))
        };
        let types = |s: Option<&String>| {
            s.map(|s| {
                s.split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
        };
        let change = match self.kind.as_str() {
            "created" => Change::Created {
                url: self.url.clone().ok_or_else(|| bad("missing url"))?,
                event_types: types(self.event_types.as_ref()).unwrap_or_default(),
                description: self.description.clone(),
                secret: secret()?,
            },
            "updated" => Change::Updated {
                url: self.url.clone(),
                event_types: types(self.event_types.as_ref()),
                description: self.description.clone(),
                active: self.active,
            },
            "deactivated" => Change::Deactivated {
                reason: self.reason.clone().unwrap_or_default(),
            },
            "secret_rotated" => Change::SecretRotated {
                secret: secret()?,
                previous_until: ts(self.previous_until_us)
                    .ok_or_else(|| bad("missing previous_until"))?,
            },
            other => return Err(bad(&format!("unknown kind {other}"))),
        };
        Ok(ChangeRecord {
            seq,
            recorded_at: ts(Some(self.recorded_at_us)).ok_or_else(|| bad("bad recorded_at"))?,
            webhook_id: WebhookId(self.webhook_id),
            change,
        })
    }
}

/// The value the first registry change chains to.
pub fn genesis() -> Hash {
    Sha256::digest(b"hookledger/registry-genesis").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(types: &[&str]) -> Webhook {
        Webhook {
            id: WebhookId(Uuid::from_u128(1)),
            url: "https://example.com".into(),
            event_types: types.iter().map(|s| s.to_string()).collect(),
            description: None,
            active: true,
            created_at: Timestamp::default(),
            updated_at: Timestamp::default(),
            keys: vec![],
        }
    }

    #[test]
    fn a_pattern_matches_itself_and_its_dotted_children_only() {
        let w = hook(&["order"]);
        assert!(w.matches("order"));
        assert!(w.matches("order.created"));
        assert!(!w.matches("orders.x"));
        assert!(!w.matches("ord"));
        assert!(!w.matches("invoice.order"));
        assert!(hook(&[]).matches("anything.at.all"));
        assert!(hook(&["a.b", "c"]).matches("c.d"));
    }

    fn created(seq: u64) -> ChangeRecord {
        ChangeRecord {
            seq,
            recorded_at: chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
            webhook_id: WebhookId(Uuid::from_u128(7)),
            change: Change::Created {
                url: "https://example.com/hook".into(),
                event_types: vec!["order".into(), "invoice.paid".into()],
                description: Some("shop".into()),
                secret: Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            },
        }
    }

    #[test]
    fn changes_round_trip_through_their_rows_and_chain() {
        let rec = created(1);
        let row = StoredChange::from_change(&rec, &genesis());
        assert_eq!(row.link(&genesis()), row.hash);
        assert_ne!(row.link(&[0; 32]), row.hash);
        assert_eq!(row.into_change().unwrap(), rec);
    }

    #[test]
    fn rotation_keeps_the_previous_secret_signing_until_its_deadline() {
        let mut reg = Registry::new();
        reg.apply(&created(1)).unwrap();
        let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let until = at + chrono::Duration::hours(1);
        let new = Secret::generate();
        reg.apply(&ChangeRecord {
            seq: 2,
            recorded_at: at,
            webhook_id: WebhookId(Uuid::from_u128(7)),
            change: Change::SecretRotated {
                secret: new.clone(),
                previous_until: until,
            },
        })
        .unwrap();
        let w = reg.get(&WebhookId(Uuid::from_u128(7))).unwrap();
        assert_eq!(w.signing_secrets(at).len(), 2);
        assert_eq!(w.signing_secrets(until), vec![&new]);
    }

    #[test]
    fn a_change_to_an_unknown_webhook_or_a_second_create_is_refused() {
        let mut reg = Registry::new();
        let mut rec = created(1);
        rec.change = Change::Deactivated { reason: "x".into() };
        assert!(reg.apply(&rec).is_err());
        reg.apply(&created(1)).unwrap();
        assert!(reg.apply(&created(2)).is_err());
    }
}
