//! Apps and their scoped tokens, folded from the registry's change log.
//!
//! Invariants: the `default` app always exists and cannot be deleted; an app uid is created at
//! most once (a deleted app's uid stays taken, since event keys are derived from it); a token
//! is stored as the SHA-256 digest of its value only (the value is shown once, when issued) and
//! authenticates only while it is not revoked and its app is not deleted.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use uuid::Uuid;

use super::{digest, Change};
use crate::ids::AppUid;
use crate::ledger::chain::Hash;
use crate::ledger::record::Timestamp;

/// The prefix of a scoped token's value.
pub const TOKEN_PREFIX: &str = "hlt_";

/// An app as folded from its changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct App {
    pub uid: AppUid,
    pub name: String,
    pub metadata: serde_json::Value,
    /// `None` for the implicit `default` app until it is first changed.
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

impl App {
    fn implicit_default() -> Self {
        Self {
            uid: AppUid::default_app(),
            name: crate::ids::DEFAULT_APP.to_owned(),
            metadata: serde_json::json!({}),
            created_at: None,
            updated_at: None,
        }
    }
}

/// A scoped token, without its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Token {
    pub id: Uuid,
    pub app: AppUid,
    pub created_at: Timestamp,
    #[serde(skip)]
    pub digest: Hash,
    pub revoked_at: Option<Timestamp>,
}

/// The apps and tokens.
#[derive(Clone, Debug, Default)]
pub struct Apps {
    apps: BTreeMap<AppUid, App>,
    deleted: BTreeMap<AppUid, Timestamp>,
    tokens: BTreeMap<Uuid, Token>,
    by_digest: HashMap<Hash, Uuid>,
}

/// A new token's value (`hlt_` and 64 hex digits from the OS's random source) and its digest.
pub fn generate_token() -> (String, Hash) {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(Uuid::new_v4().as_bytes());
    let value = format!("{TOKEN_PREFIX}{}", hex::encode(digest(&bytes)));
    let d = digest(value.as_bytes());
    (value, d)
}

impl Apps {
    /// `uid` if it exists and is not deleted (the `default` app always is).
    pub fn live(&self, uid: &AppUid) -> Option<&App> {
        match self.apps.get(uid) {
            Some(a) => Some(a),
            None if uid.is_default() => Some(self.default_app()),
            None => None,
        }
    }

    fn default_app(&self) -> &App {
        static DEFAULT: std::sync::OnceLock<App> = std::sync::OnceLock::new();
        DEFAULT.get_or_init(App::implicit_default)
    }

    /// Every live app, the default one first.
    pub fn all(&self) -> Vec<&App> {
        let mut out = vec![self.live(&AppUid::default_app()).expect("default app")];
        out.extend(self.apps.values().filter(|a| !a.uid.is_default()));
        out
    }

    pub fn is_deleted(&self, uid: &AppUid) -> bool {
        self.deleted.contains_key(uid)
    }

    /// The tokens of `app`, revoked ones included, by id.
    pub fn tokens_of<'a>(&'a self, app: &'a AppUid) -> impl Iterator<Item = &'a Token> + 'a {
        self.tokens.values().filter(move |t| &t.app == app)
    }

    pub fn token(&self, id: &Uuid) -> Option<&Token> {
        self.tokens.get(id)
    }

    /// The app a presented token value is scoped to, if it is a live token of a live app. The
    /// lookup is by the value's SHA-256 digest (what is stored), and the digests are then
    /// compared in constant time.
    pub fn token_app(&self, presented: &str) -> Option<&AppUid> {
        self.live_token(presented).map(|t| &t.app)
    }

    /// The live token (of a live app) a presented value is, looked up as [`Self::token_app`].
    pub fn live_token(&self, presented: &str) -> Option<&Token> {
        use subtle::ConstantTimeEq;
        let d = digest(presented.as_bytes());
        let t = self.tokens.get(self.by_digest.get(&d)?)?;
        let same = bool::from(t.digest.as_slice().ct_eq(d.as_slice()));
        (same && t.revoked_at.is_none() && self.live(&t.app).is_some()).then_some(t)
    }

    /// Checks an app or token change; `has_active_webhooks` answers for an app.
    pub fn check(
        &self,
        change: &Change,
        has_active_webhooks: impl Fn(&AppUid) -> bool,
    ) -> Result<(), String> {
        let need_live = |app: &AppUid| match self.live(app) {
            Some(_) => Ok(()),
            None => Err(format!("no app {app}")),
        };
        match change {
            Change::AppCreated { app, .. } => {
                if self.live(app).is_some() {
                    Err(format!("app {app} exists"))
                } else if self.is_deleted(app) {
                    Err(format!("app {app} was deleted; its uid is not reused"))
                } else {
                    Ok(())
                }
            }
            Change::AppUpdated { app, .. } => need_live(app),
            Change::AppDeleted { app } => {
                need_live(app)?;
                if app.is_default() {
                    Err("the default app cannot be deleted".to_owned())
                } else if has_active_webhooks(app) {
                    Err(format!("app {app} has active webhooks: delete them first"))
                } else {
                    Ok(())
                }
            }
            Change::TokenIssued { app, token, digest } => {
                need_live(app)?;
                if self.tokens.contains_key(token) || self.by_digest.contains_key(digest) {
                    Err(format!("token {token} exists"))
                } else {
                    Ok(())
                }
            }
            Change::TokenRevoked { app, token } => match self.tokens.get(token) {
                Some(t) if &t.app == app && t.revoked_at.is_none() => Ok(()),
                Some(t) if &t.app == app => Err(format!("token {token} is revoked")),
                _ => Err(format!("no token {token}")),
            },
            _ => Err("not an app change".to_owned()),
        }
    }

    /// Folds a checked app or token change.
    pub fn fold(&mut self, change: &Change, at: Timestamp) {
        match change {
            Change::AppCreated {
                app,
                name,
                metadata,
            } => {
                self.apps.insert(
                    app.clone(),
                    App {
                        uid: app.clone(),
                        name: name.clone(),
                        metadata: parse_metadata(metadata),
                        created_at: Some(at),
                        updated_at: Some(at),
                    },
                );
            }
            Change::AppUpdated {
                app,
                name,
                metadata,
            } => {
                if app.is_default() && !self.apps.contains_key(app) {
                    let mut d = App::implicit_default();
                    d.created_at = Some(at);
                    self.apps.insert(app.clone(), d);
                }
                if let Some(a) = self.apps.get_mut(app) {
                    if let Some(n) = name {
                        a.name = n.clone();
                    }
                    if let Some(m) = metadata {
                        a.metadata = parse_metadata(m);
                    }
                    a.updated_at = Some(at);
                }
            }
            Change::AppDeleted { app } => {
                self.apps.remove(app);
                self.deleted.insert(app.clone(), at);
            }
            Change::TokenIssued { app, token, digest } => {
                self.tokens.insert(
                    *token,
                    Token {
                        id: *token,
                        app: app.clone(),
                        created_at: at,
                        digest: *digest,
                        revoked_at: None,
                    },
                );
                self.by_digest.insert(*digest, *token);
            }
            Change::TokenRevoked { token, .. } => {
                if let Some(t) = self.tokens.get_mut(token) {
                    t.revoked_at = Some(at);
                    self.by_digest.remove(&t.digest);
                }
            }
            _ => {}
        }
    }
}

fn parse_metadata(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|_| serde_json::json!({}))
}
