//! One row of `webhook_changes` and its chain link: how a [`ChangeRecord`] is stored.
//!
//! Rows of format 1 (webhook changes written before apps) hash exactly as they did and read
//! back into the `default` app with the standard payload; rows of format 2 add the app, app
//! name and metadata, token id and digest and payload format to the link; rows of format 3
//! (written now) add the actor ([`super::actor`]), so an edit of any of them breaks the chain
//! while old files still verify. A row of format 1 or 2 has no actor; one of format 3 may have
//! none too (a change committed without one, as benches do), and its link still covers that.
//! A row reads back into the bare change: its actor is [`StoredChange::actor`].

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Change, ChangeRecord, PayloadFormat};
use crate::delivery::signing::Secret;
use crate::error::LedgerError;
use crate::ids::{AppUid, WebhookId};
use crate::ledger::chain::Hash;
use crate::ledger::stored::{put_opt, put_str};

/// The reason of a `deactivated` row written by auto-disable (its evidence is in `metadata`).
pub const AUTO_DISABLED: &str = "auto_disabled";

/// The row format written now.
pub const CHANGE_FORMAT: u8 = 3;

/// One row of `webhook_changes`, column for column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChange {
    pub seq: u64,
    pub recorded_at_us: i64,
    pub format_version: u8,
    pub kind: String,
    /// Nil for app and token changes.
    pub webhook_id: Uuid,
    pub url: Option<String>,
    /// Comma-joined (event types cannot contain commas).
    pub event_types: Option<String>,
    pub description: Option<String>,
    pub active: Option<bool>,
    pub secret: Option<String>,
    pub previous_until_us: Option<i64>,
    pub reason: Option<String>,
    /// Format 2: the app the change belongs to (`None` in format 1: the default app).
    pub app: Option<String>,
    /// Format 2: an app's name and metadata (a JSON object as text).
    pub name: Option<String>,
    pub metadata: Option<String>,
    /// Format 2: a token's id and the SHA-256 digest of its value.
    pub token_id: Option<Uuid>,
    pub token_digest: Option<Vec<u8>>,
    /// Format 2: `standard` or `raw`.
    pub payload_format: Option<String>,
    /// Format 3: who made the change (`operator`, `token:<id>`, `system:<what>`, `cli`).
    pub actor: Option<String>,
    pub hash: Hash,
}

impl StoredChange {
    /// The row for `rec`, chained to `prev`.
    pub fn from_change(rec: &ChangeRecord, prev: &Hash) -> Self {
        let mut row = StoredChange {
            seq: rec.seq,
            recorded_at_us: rec.recorded_at.timestamp_micros(),
            format_version: CHANGE_FORMAT,
            kind: rec.change.kind().to_owned(),
            webhook_id: rec.webhook_id.0,
            url: None,
            event_types: None,
            description: None,
            active: None,
            secret: None,
            previous_until_us: None,
            reason: None,
            app: None,
            name: None,
            metadata: None,
            token_id: None,
            token_digest: None,
            payload_format: None,
            actor: rec.change.actor().map(ToString::to_string),
            hash: [0; 32],
        };
        match rec.change.bare() {
            // `bare` never answers an attributed change.
            Change::By { .. } => {}
            Change::Created {
                url,
                event_types,
                description,
                secret,
                app,
                payload_format,
            } => {
                row.url = Some(url.clone());
                row.event_types = Some(event_types.join(","));
                row.description = description.clone();
                row.active = Some(true);
                row.secret = Some(secret.stored_form());
                row.app = Some(app.to_string());
                row.payload_format = Some(payload_format.as_str().to_owned());
            }
            Change::Updated {
                url,
                event_types,
                description,
                active,
                payload_format,
            } => {
                row.url = url.clone();
                row.event_types = event_types.as_ref().map(|t| t.join(","));
                row.description = description.clone();
                row.active = *active;
                row.payload_format = payload_format.map(|f| f.as_str().to_owned());
            }
            Change::Configured(c) => row.metadata = Some(c.to_json()),
            Change::Deactivated { reason } => {
                row.active = Some(false);
                row.reason = Some(reason.clone());
            }
            Change::AutoDisabled {
                first_failure,
                failures,
                last_error,
            } => {
                row.active = Some(false);
                row.reason = Some(AUTO_DISABLED.to_owned());
                row.metadata = Some(
                    serde_json::json!({
                        "first_failure": first_failure,
                        "failures": failures,
                        "last_error": last_error,
                    })
                    .to_string(),
                );
            }
            Change::SecretRotated {
                secret,
                previous_until,
            } => {
                row.secret = Some(secret.stored_form());
                row.previous_until_us = Some(previous_until.timestamp_micros());
            }
            Change::SecretResealed { secret, until } => {
                row.secret = Some(secret.stored_form());
                row.previous_until_us = until.map(|t| t.timestamp_micros());
            }
            Change::AppCreated {
                app,
                name,
                metadata,
            } => {
                row.app = Some(app.to_string());
                row.name = Some(name.clone());
                row.metadata = Some(metadata.clone());
            }
            Change::AppUpdated {
                app,
                name,
                metadata,
            } => {
                row.app = Some(app.to_string());
                row.name = name.clone();
                row.metadata = metadata.clone();
            }
            Change::AppDeleted { app } => row.app = Some(app.to_string()),
            Change::TokenIssued { app, token, digest } => {
                row.app = Some(app.to_string());
                row.token_id = Some(*token);
                row.token_digest = Some(digest.to_vec());
            }
            Change::TokenRevoked { app, token } => {
                row.app = Some(app.to_string());
                row.token_id = Some(*token);
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
        let tag: &[u8] = if self.format_version >= 2 {
            put_opt(&mut buf, self.app.as_deref(), put_str);
            put_opt(&mut buf, self.name.as_deref(), put_str);
            put_opt(&mut buf, self.metadata.as_deref(), put_str);
            put_opt(&mut buf, self.token_id, |o, v| {
                o.extend_from_slice(v.as_bytes())
            });
            put_opt(&mut buf, self.token_digest.as_deref(), |o, v| {
                o.extend_from_slice(&(v.len() as u32).to_be_bytes());
                o.extend_from_slice(v);
            });
            put_opt(&mut buf, self.payload_format.as_deref(), put_str);
            if self.format_version >= 3 {
                put_opt(&mut buf, self.actor.as_deref(), put_str);
                b"hookledger/change/v3"
            } else {
                b"hookledger/change/v2"
            }
        } else {
            b"hookledger/change/v1"
        };
        let mut h = Sha256::new();
        h.update(tag);
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
                .and_then(|s| Secret::from_stored(s).ok())
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
        let format = |s: Option<&String>| -> Result<Option<PayloadFormat>, LedgerError> {
            s.map(|s| PayloadFormat::parse(s).ok_or_else(|| bad("invalid payload_format")))
                .transpose()
        };
        // Format 1 rows are the default app's.
        let app = || -> Result<AppUid, LedgerError> {
            match self.app.as_deref() {
                None => Ok(AppUid::default_app()),
                Some(a) => AppUid::parse(a).ok_or_else(|| bad("invalid app")),
            }
        };
        let token = || self.token_id.ok_or_else(|| bad("missing token_id"));
        // A format 1 or 2 link does not cover an actor, so such a row may not carry one.
        if self.format_version < 3 && self.actor.is_some() {
            return Err(bad(&format!(
                "an actor on a row of format {}, which has none",
                self.format_version
            )));
        }
        let change = match self.kind.as_str() {
            "created" => Change::Created {
                url: self.url.clone().ok_or_else(|| bad("missing url"))?,
                event_types: types(self.event_types.as_ref()).unwrap_or_default(),
                description: self.description.clone(),
                secret: secret()?,
                app: app()?,
                payload_format: format(self.payload_format.as_ref())?.unwrap_or_default(),
            },
            "updated" => Change::Updated {
                url: self.url.clone(),
                event_types: types(self.event_types.as_ref()),
                description: self.description.clone(),
                active: self.active,
                payload_format: format(self.payload_format.as_ref())?,
            },
            "configured" => Change::Configured(
                super::OptionsChange::from_json(self.metadata.as_deref().unwrap_or("{}"))
                    .map_err(|e| bad(&e))?,
            ),
            "deactivated" if self.reason.as_deref() == Some(AUTO_DISABLED) => {
                let evidence: serde_json::Value = self
                    .metadata
                    .as_deref()
                    .and_then(|m| serde_json::from_str(m).ok())
                    .ok_or_else(|| bad("missing auto_disabled evidence"))?;
                Change::AutoDisabled {
                    first_failure: evidence["first_failure"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.to_utc())
                        .ok_or_else(|| bad("invalid first_failure"))?,
                    failures: evidence["failures"]
                        .as_u64()
                        .ok_or_else(|| bad("invalid failures"))?,
                    last_error: evidence["last_error"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                }
            }
            "deactivated" => Change::Deactivated {
                reason: self.reason.clone().unwrap_or_default(),
            },
            "secret_rotated" => Change::SecretRotated {
                secret: secret()?,
                previous_until: ts(self.previous_until_us)
                    .ok_or_else(|| bad("missing previous_until"))?,
            },
            "secret_resealed" => Change::SecretResealed {
                secret: secret()?,
                until: ts(self.previous_until_us),
            },
            "app_created" => Change::AppCreated {
                app: app()?,
                name: self.name.clone().unwrap_or_default(),
                metadata: self.metadata.clone().unwrap_or_else(|| "{}".into()),
            },
            "app_updated" => Change::AppUpdated {
                app: app()?,
                name: self.name.clone(),
                metadata: self.metadata.clone(),
            },
            "app_deleted" => Change::AppDeleted { app: app()? },
            "token_issued" => Change::TokenIssued {
                app: app()?,
                token: token()?,
                digest: self
                    .token_digest
                    .clone()
                    .and_then(|d| d.try_into().ok())
                    .ok_or_else(|| bad("missing or invalid token_digest"))?,
            },
            "token_revoked" => Change::TokenRevoked {
                app: app()?,
                token: token()?,
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
