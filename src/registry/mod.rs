//! The registry, event-sourced like the ledger: an append-only `webhook_changes` log and the
//! apps, webhooks and scoped tokens folded from it.
//!
//! - **Apps** own webhooks; an event is published to one app and fans out to that app's
//!   matching webhooks only, found through the per-app index (a publish never looks at another
//!   app's webhooks). Every webhook of a database written before apps belongs to the `default`
//!   app, which always exists and cannot be deleted. An app with active webhooks cannot be
//!   deleted (remove its webhooks first, which parks their deliveries); a deleted app's uid is
//!   never reused (event ids are derived from it, see [`crate::ids::ProducerId::key`]) and its
//!   tokens stop working.
//! - **Tokens** scoped to one app are stored as SHA-256 digests only ([`apps`]).
//! - Changes: webhook `created`, `updated`, `configured` (rate limit, in-flight limit,
//!   ordering, operational: [`options`]), `deactivated`, `secret_rotated`,
//!   `secret_resealed` (the same key sealed under a new main key); `app_created`,
//!   `app_updated`, `app_deleted`; `token_issued`, `token_revoked`.
//!
//! Each change row carries its own SHA-256 link to the previous change (the registry changes
//! rarely, so a per-row hash costs nothing that matters), so "who changed this URL, and when" is
//! an audit query that cannot be quietly edited ([`row`]). The "who" is the row's actor
//! ([`actor`]: `operator`, `token:<token id>`, `system:<what>`, `cli`), given with the change
//! as [`Change::By`] and covered by the link (rows of format 3); rows from before have none.
//!
//! Secrets are stored in the change rows (the sender needs them after a restart), sealed by
//! [`crate::secrets`] when the process has a key ring; they are folded in their stored form
//! (no key is needed to fold, verify or audit) and leave this module only as [`Secret`], whose
//! `Debug` and `Display` print `whsec_***`.
//!
//! A projection checkpoint stores the webhooks only; apps, tokens and the webhook-to-app index
//! with each webhook's options are folded from the change log at every open (so
//! [`Registry`]'s equality compares the checkpointed part, and an option such as
//! `max_in_flight` needs no place in the checkpoint body).

pub mod actor;
pub mod apps;
pub mod options;
mod row;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::delivery::signing::Secret;
use crate::error::LedgerError;
use crate::ids::{AppUid, WebhookId};
use crate::ledger::chain::Hash;
use crate::ledger::record::Timestamp;
pub use actor::Actor;
pub use apps::{App, Token};
pub use options::{OptionsChange, Ordering, WebhookOptions, MAX_IN_FLIGHT_CAP};
pub use row::{genesis, StoredChange};

/// How long the previous secret keeps signing after a rotation, by default.
pub const ROTATION_OVERLAP_HOURS: i64 = 24;

/// What a webhook's POST body is: the Standard Webhooks envelope
/// `{"type", "timestamp", "data"}` (the default) or the bare payload.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    #[default]
    Standard,
    Raw,
}

impl PayloadFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Standard => "standard",
            PayloadFormat::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "standard" => Some(PayloadFormat::Standard),
            "raw" => Some(PayloadFormat::Raw),
            _ => None,
        }
    }
}

/// A change to the registry, before the writer gives it a seq and a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Created {
        url: String,
        event_types: Vec<String>,
        description: Option<String>,
        secret: Secret,
        app: AppUid,
        payload_format: PayloadFormat,
    },
    /// Only the fields that are `Some` change.
    Updated {
        url: Option<String>,
        event_types: Option<Vec<String>>,
        description: Option<String>,
        active: Option<bool>,
        payload_format: Option<PayloadFormat>,
    },
    Deactivated {
        reason: String,
    },
    /// The webhook's delivery options ([`options`]) that change; stored as a `configured` row
    /// with the options as JSON in `metadata`.
    Configured(OptionsChange),
    /// Deactivated by hookledger: every attempt failed since `first_failure` (`failures` of
    /// them, the last with `last_error`). Stored as a `deactivated` row with reason
    /// `auto_disabled` and the evidence as JSON in `metadata`.
    AutoDisabled {
        first_failure: Timestamp,
        failures: u64,
        last_error: String,
    },
    SecretRotated {
        secret: Secret,
        /// Until when the previous secret still signs alongside the new one.
        previous_until: Timestamp,
    },
    /// The same signing key sealed again (under the current main key, see
    /// [`crate::secrets`]): the key whose `until` is `until` (`None`: the current one) is
    /// stored as `secret` from now on. Nothing about what signs changes.
    SecretResealed {
        secret: Secret,
        until: Option<Timestamp>,
    },
    AppCreated {
        app: AppUid,
        name: String,
        /// A JSON object, as compact text.
        metadata: String,
    },
    /// Only the fields that are `Some` change.
    AppUpdated {
        app: AppUid,
        name: Option<String>,
        metadata: Option<String>,
    },
    AppDeleted {
        app: AppUid,
    },
    TokenIssued {
        app: AppUid,
        token: Uuid,
        digest: Hash,
    },
    TokenRevoked {
        app: AppUid,
        token: Uuid,
    },
    /// `change`, made by `actor`: how a change reaches the writer, which stores the actor in
    /// its row ([`actor`]). Every check and fold looks at the bare change ([`Change::bare`]);
    /// a change read back from its row is bare (the actor is in [`StoredChange::actor`]).
    By {
        actor: Actor,
        change: Box<Change>,
    },
}

impl Change {
    /// This change made by `actor` (an attributed change gets the new actor).
    pub fn by(self, actor: Actor) -> Self {
        Change::By {
            actor,
            change: Box::new(self.into_bare()),
        }
    }

    /// The change without its actor.
    pub fn bare(&self) -> &Change {
        match self {
            Change::By { change, .. } => change.bare(),
            other => other,
        }
    }

    fn into_bare(self) -> Change {
        match self {
            Change::By { change, .. } => change.into_bare(),
            other => other,
        }
    }

    /// Who made the change, if it says.
    pub fn actor(&self) -> Option<&Actor> {
        match self {
            Change::By { actor, .. } => Some(actor),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Change::By { change, .. } => change.kind(),
            Change::Created { .. } => "created",
            Change::Updated { .. } => "updated",
            Change::Configured(_) => "configured",
            Change::Deactivated { .. } | Change::AutoDisabled { .. } => "deactivated",
            Change::SecretRotated { .. } => "secret_rotated",
            Change::SecretResealed { .. } => "secret_resealed",
            Change::AppCreated { .. } => "app_created",
            Change::AppUpdated { .. } => "app_updated",
            Change::AppDeleted { .. } => "app_deleted",
            Change::TokenIssued { .. } => "token_issued",
            Change::TokenRevoked { .. } => "token_revoked",
        }
    }

    /// A webhook with these fields and the defaults for the rest (the `default` app, the
    /// standard payload).
    pub fn created(
        url: impl Into<String>,
        event_types: Vec<String>,
        description: Option<String>,
        secret: Secret,
    ) -> Self {
        Change::Created {
            url: url.into(),
            event_types,
            description,
            secret,
            app: AppUid::default_app(),
            payload_format: PayloadFormat::Standard,
        }
    }

    /// Whether the change is about an app or a token (its record's `webhook_id` is nil).
    pub fn is_app_change(&self) -> bool {
        matches!(
            self.bare(),
            Change::AppCreated { .. }
                | Change::AppUpdated { .. }
                | Change::AppDeleted { .. }
                | Change::TokenIssued { .. }
                | Change::TokenRevoked { .. }
        )
    }
}

/// An appended registry change. `webhook_id` is the webhook it is about (nil for app and token
/// changes).
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

/// A webhook as folded from its changes (its app and payload format are in the registry's
/// index: [`Registry::app_of`], [`Registry::format_of`]).
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

/// Where a webhook belongs and what it receives.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Placement {
    app: AppUid,
    format: PayloadFormat,
    options: WebhookOptions,
}

/// The registry folded from `webhook_changes`.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    webhooks: BTreeMap<WebhookId, Webhook>,
    last_seq: u64,
    /// Every webhook's app and payload format (a webhook missing here is the default app's).
    placement: HashMap<WebhookId, Placement>,
    /// Each app's webhooks: what a publish to the app looks at.
    by_app: HashMap<AppUid, BTreeSet<WebhookId>>,
    apps: apps::Apps,
}

/// The checkpointed part: the webhooks and the last change seq.
impl PartialEq for Registry {
    fn eq(&self, other: &Self) -> bool {
        self.webhooks == other.webhooks && self.last_seq == other.last_seq
    }
}

impl Eq for Registry {}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The registry folded from every stored change row.
    pub fn fold_all(rows: Vec<StoredChange>) -> Result<Self, LedgerError> {
        let mut r = Self::new();
        for row in rows {
            r.apply(&row.into_change()?)?;
        }
        Ok(r)
    }

    /// A registry as a checkpoint stored it: these webhooks after change `last_seq` (all in
    /// the default app; the ledger folds the full registry from the log).
    pub(crate) fn from_parts(webhooks: Vec<Webhook>, last_seq: u64) -> Self {
        let mut r = Self {
            webhooks: webhooks.into_iter().map(|w| (w.id, w)).collect(),
            last_seq,
            ..Self::default()
        };
        let ids: BTreeSet<WebhookId> = r.webhooks.keys().copied().collect();
        r.by_app.insert(AppUid::default_app(), ids);
        r
    }

    pub fn get(&self, id: &WebhookId) -> Option<&Webhook> {
        self.webhooks.get(id)
    }

    /// `id`, if it belongs to `app` (`None`: any app).
    pub fn get_in(&self, id: &WebhookId, app: Option<&AppUid>) -> Option<&Webhook> {
        self.get(id)
            .filter(|_| app.is_none_or(|a| self.app_of(id) == a))
    }

    pub fn all(&self) -> impl Iterator<Item = &Webhook> {
        self.webhooks.values()
    }

    /// The webhooks of `app`, in id order.
    pub fn of_app<'a>(&'a self, app: &AppUid) -> impl Iterator<Item = &'a Webhook> + 'a {
        self.by_app
            .get(app)
            .into_iter()
            .flatten()
            .filter_map(|id| self.webhooks.get(id))
    }

    /// The app `id` belongs to.
    pub fn app_of(&self, id: &WebhookId) -> &AppUid {
        static DEFAULT: std::sync::OnceLock<AppUid> = std::sync::OnceLock::new();
        self.placement
            .get(id)
            .map(|p| &p.app)
            .unwrap_or_else(|| DEFAULT.get_or_init(AppUid::default_app))
    }

    /// The payload format `id` receives.
    pub fn format_of(&self, id: &WebhookId) -> PayloadFormat {
        self.placement.get(id).map(|p| p.format).unwrap_or_default()
    }

    /// The delivery options of `id` (the defaults for an unknown webhook).
    pub fn options_of(&self, id: &WebhookId) -> WebhookOptions {
        self.placement
            .get(id)
            .map(|p| p.options)
            .unwrap_or_default()
    }

    /// Active webhooks of `app` whose filter matches `event_type`, in id order: only that
    /// app's webhooks are looked at.
    pub fn matching<'a>(
        &'a self,
        app: &AppUid,
        event_type: &'a str,
    ) -> impl Iterator<Item = &'a Webhook> + 'a {
        self.of_app(app)
            .filter(move |w| w.active && w.matches(event_type))
    }

    /// The apps, tokens and their checks.
    pub fn apps(&self) -> &apps::Apps {
        &self.apps
    }

    /// Checks a change against the current registry without applying it.
    pub fn check(&self, webhook_id: WebhookId, change: &Change) -> Result<(), String> {
        let change = change.bare();
        if change.is_app_change() {
            return self
                .apps
                .check(change, |app| self.of_app(app).any(|w| w.active));
        }
        match (self.webhooks.get(&webhook_id), change) {
            (None, Change::Created { app, .. }) => {
                if self.apps.live(app).is_some() {
                    Ok(())
                } else {
                    Err(format!("no app {app}"))
                }
            }
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
        if rec.change.is_app_change() {
            self.apps.fold(rec.change.bare(), rec.recorded_at);
        } else {
            self.fold(rec);
        }
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
            app,
            payload_format,
        } = rec.change.bare()
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
            self.placement.insert(
                rec.webhook_id,
                Placement {
                    app: app.clone(),
                    format: *payload_format,
                    options: WebhookOptions::default(),
                },
            );
            self.by_app
                .entry(app.clone())
                .or_default()
                .insert(rec.webhook_id);
            return;
        }
        let Some(w) = self.webhooks.get_mut(&rec.webhook_id) else {
            return;
        };
        w.updated_at = at;
        match rec.change.bare() {
            Change::Updated {
                url,
                event_types,
                description,
                active,
                payload_format,
            } => {
                w.url = url.clone().unwrap_or_else(|| w.url.clone());
                w.event_types = event_types.clone().unwrap_or_else(|| w.event_types.clone());
                w.description = description.clone().or_else(|| w.description.clone());
                w.active = active.unwrap_or(w.active);
                if let (Some(f), Some(p)) =
                    (payload_format, self.placement.get_mut(&rec.webhook_id))
                {
                    p.format = *f;
                }
            }
            Change::Deactivated { .. } | Change::AutoDisabled { .. } => w.active = false,
            Change::Configured(c) => {
                if let Some(p) = self.placement.get_mut(&rec.webhook_id) {
                    c.apply(&mut p.options);
                }
            }
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
            Change::SecretResealed { secret, until } => {
                if let Some(k) = w.keys.iter_mut().find(|k| k.until == *until) {
                    k.secret = secret.clone();
                }
            }
            _ => {}
        }
    }
}

/// SHA-256 of `bytes` (token digests).
pub fn digest(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
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
                app: AppUid::default_app(),
                payload_format: PayloadFormat::Standard,
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
