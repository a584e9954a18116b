//! What `serve` does with the key ring before it takes a request: find the main key(s), make
//! sure every secret that still signs opens with them (or refuse to start, naming
//! `HOOKLEDGER_SECRET_KEY`), and re-seal under the current key every secret that is stored in
//! plaintext (a database written before sealing) or under an older key, as new
//! `secret_resealed` registry rows: the log stays append-only.
//!
//! Without a key configured, the first start of a database that holds no sealed secret
//! generates a key file beside it (`<db>.key`, mode 0600), the way the API token is generated
//! at first start: sealing is on by default, and the key is kept apart from the database file
//! (a copied or backed-up database alone does not give the secrets away). A database whose
//! secrets are sealed and no key given refuses to start rather than generating a key that
//! opens nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{KeyError, Keyring, SECRET_KEY, SECRET_KEY_FILE};
use crate::error::{LedgerError, Result};
use crate::ids::WebhookId;
use crate::ledger::record::Timestamp;
use crate::ledger::writer::Commit;
use crate::ledger::Ledger;
use crate::registry::{Change, Registry};

/// Where the key ring came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    Variable,
    File(PathBuf),
    /// Generated now, at this path.
    Generated(PathBuf),
}

/// The key file `serve` uses beside `db` when no variable is set.
pub fn default_key_file(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

fn refuse(message: impl Into<String>) -> LedgerError {
    LedgerError::Invalid(message.into())
}

/// The key ring from the variables (read through `get`), else the key file beside `db` (a
/// DuckDB file), generated when missing and `sealed` is false (the database holds no sealed
/// secret). A ledger in PostgreSQL (`db` is `None`) has no file to put a key beside, and all
/// its nodes must seal with one key: it needs one of the variables.
pub fn load(
    get: impl Fn(&str) -> Option<String>,
    db: Option<&Path>,
    sealed: bool,
) -> Result<(Keyring, KeySource)> {
    if let Some(text) = get(SECRET_KEY).filter(|t| !t.trim().is_empty()) {
        let ring = Keyring::parse(&text).map_err(|e| refuse(format!("{SECRET_KEY}: {e}")))?;
        return Ok((ring, KeySource::Variable));
    }
    let (path, named) = match (get(SECRET_KEY_FILE).filter(|t| !t.trim().is_empty()), db) {
        (Some(p), _) => (PathBuf::from(p), true),
        (None, Some(db)) => (default_key_file(db), false),
        (None, None) => {
            return Err(refuse(format!(
                "a ledger in PostgreSQL needs its main key from {SECRET_KEY} or \
                 {SECRET_KEY_FILE} (every node must seal with the same key; generate one with \
                 `openssl rand -base64 32`)"
            )))
        }
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let ring = Keyring::parse(&text)
                .map_err(|e| refuse(format!("{SECRET_KEY_FILE} {}: {e}", path.display())))?;
            Ok((ring, KeySource::File(path)))
        }
        Err(e) if named => Err(refuse(format!(
            "{SECRET_KEY_FILE}: cannot read {}: {e}",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !sealed => {
            let key = Keyring::generate_key();
            write_new_key_file(&path, &key)?;
            let ring = Keyring::parse(&key).expect("a generated key parses");
            Ok((ring, KeySource::Generated(path)))
        }
        Err(e) => Err(refuse(format!(
            "the signing secrets in this database are sealed and no main key is given: set \
             {SECRET_KEY} (or {SECRET_KEY_FILE}) to the key they were sealed with ({}: {e})",
            path.display()
        ))),
    }
}

fn write_new_key_file(path: &Path, key: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        refuse(format!(
            "cannot create the main key file {} ({e}); set {SECRET_KEY}",
            path.display()
        ))
    })?;
    writeln!(
        file,
        "# hookledger main key: it seals the webhook signing secrets of {}.\n# Keep it apart \
         from the database's backups; losing it loses the secrets. Put a new key first to \
         rotate.\n{key}",
        path.with_extension("").display()
    )
    .and_then(|_| file.sync_all())
    .map_err(|e| refuse(format!("cannot write {}: {e}", path.display())))
}

/// Whether any secret stored in the registry is sealed.
pub fn holds_sealed(registry: &Registry) -> bool {
    registry
        .all()
        .flat_map(|w| &w.keys)
        .any(|k| k.secret.sealed().is_some())
}

/// The re-seal rows for every signing key (live at `now`) not sealed under the current key,
/// or the first webhook whose key the ring cannot open.
pub fn plan(
    registry: &Registry,
    ring: &Keyring,
    now: Timestamp,
) -> std::result::Result<Vec<(WebhookId, Change)>, (WebhookId, KeyError)> {
    let mut changes = Vec::new();
    for w in registry.all() {
        for k in w.keys.iter().filter(|k| k.until.is_none_or(|u| now < u)) {
            let opened = ring.open(&k.secret).map_err(|e| (w.id, e))?;
            if !ring.is_current(&k.secret) {
                changes.push((
                    w.id,
                    Change::SecretResealed {
                        secret: ring.seal(&opened),
                        until: k.until,
                    }
                    .by(crate::registry::actor::RESEAL),
                ));
            }
        }
    }
    Ok(changes)
}

/// `serve`'s start: the key ring, checked against the database, with every stale secret
/// re-sealed. Prints where the key came from and what was re-sealed (never a key).
/// `db` is the DuckDB file (`None` for PostgreSQL, see [`load`]).
pub async fn prepare(ledger: &Ledger, db: Option<&Path>, now: Timestamp) -> Result<Arc<Keyring>> {
    let sealed = holds_sealed(&ledger.shared().read_registry());
    let (ring, source) = load(|k| std::env::var(k).ok(), db, sealed)?;
    match &source {
        KeySource::Variable => {}
        KeySource::File(p) => println!("signing secrets: main key from {}", p.display()),
        KeySource::Generated(p) => println!(
            "signing secrets: sealed under a main key generated at {} (keep it apart from \
             backups of the database, or set {SECRET_KEY})",
            p.display()
        ),
    }
    let planned = plan(&ledger.shared().read_registry(), &ring, now);
    let changes = planned.map_err(|(webhook, e)| {
        let wanted = match &e {
            KeyError::UnknownKey { key_id } | KeyError::Corrupt { key_id } => key_id.clone(),
            _ => "?".into(),
        };
        refuse(format!(
            "cannot open the signing secret of webhook {webhook}: {e}. Set {SECRET_KEY} to the \
             main key this database's secrets were sealed with (key id {wanted}; the key ring \
             given holds {})",
            ring.current_id()
        ))
    })?;
    if !changes.is_empty() {
        let n = changes.len();
        ledger
            .commit(Commit {
                changes,
                ..Commit::default()
            })
            .await?;
        println!(
            "signing secrets: re-sealed {n} signing keys under main key {}",
            ring.current_id()
        );
    }
    Ok(Arc::new(ring))
}
