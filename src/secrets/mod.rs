//! Signing secrets at rest: the main-key ring that seals webhook secrets before they are
//! stored in `webhook_changes` (and in projection checkpoints), and opens them to sign.
//!
//! - A main key is 32 random bytes, written as standard base64. The ring is one or more keys:
//!   the first seals, every one opens (so a new key can be put first while the old one still
//!   opens what it sealed). It comes from `HOOKLEDGER_SECRET_KEY` (keys separated by commas or
//!   newlines), else from the file `HOOKLEDGER_SECRET_KEY_FILE` names, else from the key file
//!   beside the database (`<db>.key`), which `serve` generates at the first start of a
//!   database that holds no sealed secret ([`startup`]).
//! - A sealed secret is `hlsealed1.<key id>.<base64(nonce ‖ ChaCha20-Poly1305 ciphertext)>`,
//!   the id being the first 8 bytes (hex) of SHA-256 over a label and the key: the id says
//!   which key opens it without revealing the key. What is sealed is the `whsec_` text.
//! - Invariant: a secret is opened only in memory, at signing time; its key bytes are never
//!   written while a ring is configured. Reading, folding, verifying and auditing a database
//!   need no key (the chain covers the sealed text).

pub mod startup;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

use crate::delivery::signing::{Secret, SEALED_PREFIX};
use crate::registry::Change;

/// The variable that holds the main key(s).
pub const SECRET_KEY: &str = "HOOKLEDGER_SECRET_KEY";
/// The variable that names a file holding the main key(s).
pub const SECRET_KEY_FILE: &str = "HOOKLEDGER_SECRET_KEY_FILE";

/// Bytes in a main key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
/// Bound to every ciphertext, so a blob sealed for something else does not open as a secret.
const AAD: &[u8] = b"hookledger/webhook-secret/v1";

/// Why a key ring could not be read, or a secret not opened. The messages never carry a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("no main key given")]
    Empty,
    #[error("main key {index} is not standard base64")]
    BadBase64 { index: usize },
    #[error(
        "main key {index} is {len} bytes; it must be {KEY_LEN} (e.g. `openssl rand -base64 32`)"
    )]
    BadLength { index: usize, len: usize },
    #[error("the sealed secret is malformed")]
    Malformed,
    #[error("the secret is sealed under main key {key_id}, which the key ring does not hold")]
    UnknownKey { key_id: String },
    #[error("the secret sealed under main key {key_id} does not open with it (wrong key or edited text)")]
    Corrupt { key_id: String },
}

struct MainKey {
    id: String,
    cipher: ChaCha20Poly1305,
}

impl MainKey {
    fn new(bytes: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"hookledger/main-key-id");
        h.update(bytes);
        Self {
            id: hex::encode(&h.finalize()[..8]),
            cipher: ChaCha20Poly1305::new(Key::from_slice(bytes)),
        }
    }
}

/// The main keys: the first seals, all open.
pub struct Keyring {
    keys: Vec<MainKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

impl Keyring {
    /// Keys as written in the variable or a key file: base64, separated by commas, spaces or
    /// newlines; lines starting with `#` are comments.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let keys = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split([',', ' ', '\t']))
            .filter(|k| !k.trim().is_empty())
            .enumerate()
            .map(|(i, k)| {
                let index = i + 1;
                let bytes = STANDARD
                    .decode(k.trim())
                    .map_err(|_| KeyError::BadBase64 { index })?;
                if bytes.len() != KEY_LEN {
                    return Err(KeyError::BadLength {
                        index,
                        len: bytes.len(),
                    });
                }
                Ok(MainKey::new(&bytes))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { keys })
    }

    /// A fresh random main key, as base64 text.
    pub fn generate_key() -> String {
        STANDARD.encode(ChaCha20Poly1305::generate_key(&mut OsRng))
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    /// `secret` with its sealed text under the current key (its key stays in memory). A
    /// secret without its key is returned as it is.
    pub fn seal(&self, secret: &Secret) -> Secret {
        if !secret.has_key() {
            return secret.clone();
        }
        let key = &self.keys[0];
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let plain = secret.expose();
        let ct = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain.as_bytes(),
                    aad: AAD,
                },
            )
            .expect("ChaCha20-Poly1305 seals any message this short");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        secret.clone().with_sealed(format!(
            "{SEALED_PREFIX}{}.{}",
            key.id,
            STANDARD.encode(blob)
        ))
    }

    /// The secret with its key: as it is when the key is here, else opened.
    pub fn open(&self, secret: &Secret) -> Result<Secret, KeyError> {
        if secret.has_key() {
            return Ok(secret.clone());
        }
        let sealed = secret.sealed().ok_or(KeyError::Malformed)?;
        let (key_id, blob) = split_sealed(sealed)?;
        let key =
            self.keys
                .iter()
                .find(|k| k.id == key_id)
                .ok_or_else(|| KeyError::UnknownKey {
                    key_id: key_id.to_owned(),
                })?;
        let blob = STANDARD.decode(blob).map_err(|_| KeyError::Malformed)?;
        if blob.len() <= NONCE_LEN {
            return Err(KeyError::Malformed);
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let corrupt = || KeyError::Corrupt {
            key_id: key_id.to_owned(),
        };
        let plain = key
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: AAD })
            .map_err(|_| corrupt())?;
        let text = String::from_utf8(plain).map_err(|_| corrupt())?;
        let opened = Secret::parse(&text).map_err(|_| corrupt())?;
        Ok(opened.with_sealed(sealed.to_owned()))
    }

    /// Whether `secret` is stored sealed under the current key (else it needs a re-seal).
    pub fn is_current(&self, secret: &Secret) -> bool {
        secret
            .sealed()
            .and_then(|s| split_sealed(s).ok())
            .is_some_and(|(id, _)| id == self.keys[0].id)
    }

    /// The change with every secret in it sealed under the current key.
    pub fn seal_change(&self, change: Change) -> Change {
        match change {
            Change::Created {
                url,
                event_types,
                description,
                secret,
                app,
                payload_format,
            } => Change::Created {
                url,
                event_types,
                description,
                secret: self.seal(&secret),
                app,
                payload_format,
            },
            Change::SecretRotated {
                secret,
                previous_until,
            } => Change::SecretRotated {
                secret: self.seal(&secret),
                previous_until,
            },
            Change::SecretResealed { secret, until } => Change::SecretResealed {
                secret: self.seal(&secret),
                until,
            },
            Change::By { actor, change } => self.seal_change(*change).by(actor),
            other => other,
        }
    }
}

/// `hlsealed1.<id>.<blob>` into the id and the blob.
fn split_sealed(sealed: &str) -> Result<(&str, &str), KeyError> {
    sealed
        .strip_prefix(SEALED_PREFIX)
        .and_then(|rest| rest.split_once('.'))
        .filter(|(id, blob)| id.len() == 16 && !blob.is_empty())
        .ok_or(KeyError::Malformed)
}

/// The main key a sealed secret names (`None`: not sealed, or malformed).
pub fn key_id_of(secret: &Secret) -> Option<&str> {
    secret
        .sealed()
        .and_then(|s| split_sealed(s).ok())
        .map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::parse(&Keyring::generate_key()).unwrap()
    }

    #[test]
    fn a_sealed_secret_hides_its_key_and_opens_to_the_same_key() {
        let ring = ring();
        let secret = Secret::generate();
        let sealed = ring.seal(&secret);
        let text = sealed.stored_form();
        assert!(text.starts_with(SEALED_PREFIX), "{text}");
        let plain = secret.expose();
        assert!(!text.contains(plain.trim_start_matches("whsec_")));
        let read = Secret::from_stored(&text).unwrap();
        assert!(!read.has_key());
        let opened = ring.open(&read).unwrap();
        assert_eq!(opened.expose(), plain);
        assert!(ring.is_current(&read));
    }

    #[test]
    fn a_wrong_key_an_unknown_key_or_an_edit_refuses_to_open() {
        let (a, b) = (Keyring::generate_key(), Keyring::generate_key());
        let ring_a = Keyring::parse(&a).unwrap();
        let read = Secret::from_stored(&ring_a.seal(&Secret::generate()).stored_form()).unwrap();
        let ring_b = Keyring::parse(&b).unwrap();
        assert!(matches!(
            ring_b.open(&read),
            Err(KeyError::UnknownKey { .. })
        ));
        // Both keys, the new one first: the old one still opens what it sealed.
        let both = Keyring::parse(&format!("{b},{a}")).unwrap();
        assert!(both.open(&read).is_ok());
        assert!(!both.is_current(&read));
        // An edited ciphertext does not open.
        let text = read.stored_form();
        let mut edited = text.clone().into_bytes();
        let last = edited.len() - 3;
        edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
        let edited = Secret::from_stored(std::str::from_utf8(&edited).unwrap()).unwrap();
        assert!(matches!(
            ring_a.open(&edited),
            Err(KeyError::Corrupt { .. }) | Err(KeyError::Malformed)
        ));
    }

    #[test]
    fn key_text_is_checked_and_named_by_position() {
        assert_eq!(
            Keyring::parse(" \n# only a comment\n").unwrap_err(),
            KeyError::Empty
        );
        let good = Keyring::generate_key();
        assert_eq!(
            Keyring::parse(&format!("{good},not base64!")).unwrap_err(),
            KeyError::BadBase64 { index: 2 }
        );
        assert_eq!(
            Keyring::parse(&STANDARD.encode([1u8; 16])).unwrap_err(),
            KeyError::BadLength { index: 1, len: 16 }
        );
        let ring = Keyring::parse(&format!("# main key\n{good}\n")).unwrap();
        assert!(!format!("{ring:?}").contains(&good));
    }
}
