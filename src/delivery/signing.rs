//! Standard Webhooks signing: owns the endpoint [`Secret`] type and the
//! values of the `webhook-id`, `webhook-timestamp` and `webhook-signature`
//! headers sent with every delivery.
//!
//! Invariant: a [`Secret`] holds between [`MIN_KEY_LEN`] and [`MAX_KEY_LEN`]
//! key bytes, or none at all when it is a sealed secret read back from storage
//! and not opened yet (see [`crate::secrets`]: only its sealed text is known,
//! and it signs nothing until opened). Its key leaves this module only through
//! [`Secret::expose`] (and the HMACs computed with it); what is stored is
//! [`Secret::stored_form`], the sealed text once sealed. `Debug` and `Display`
//! print `whsec_***`, and `Secret` deliberately implements no `Serialize`.
//!
//! A signature is `v1,` followed by the standard-base64
//! HMAC-SHA256 of `"{msg_id}.{timestamp}.{body}"`; during a key rotation
//! every current secret signs and the entries are joined by single spaces.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// `User-Agent` sent with every delivery.
pub const USER_AGENT: &str = concat!("hookledger/", env!("CARGO_PKG_VERSION"));

/// Header carrying the message id.
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the signing time in Unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated `v1,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// Prefix of the textual form of a secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest key accepted by [`Secret::parse`], in bytes.
pub const MIN_KEY_LEN: usize = 24;
/// Longest key accepted by [`Secret::parse`], in bytes.
pub const MAX_KEY_LEN: usize = 64;

/// Length of a key made by [`Secret::generate`], in bytes.
const GENERATED_KEY_LEN: usize = 24;
/// Signature scheme version written before each signature.
const SIGNATURE_VERSION: &str = "v1";

type HmacSha256 = Hmac<Sha256>;

/// Why a secret string was rejected. The messages never contain the key.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The string does not start with `whsec_`.
    #[error("webhook secret must start with `whsec_`")]
    MissingPrefix,
    /// The text after `whsec_` is not standard (padded) base64.
    #[error("webhook secret after `whsec_` is not valid standard base64")]
    BadBase64(#[source] base64::DecodeError),
    /// The decoded key is outside 24..=64 bytes.
    #[error("webhook secret key is {len} bytes; it must be between 24 and 64 bytes")]
    KeyLength {
        /// Decoded key length in bytes.
        len: usize,
    },
}

/// Prefix of a sealed secret's stored text (see [`crate::secrets`]).
pub const SEALED_PREFIX: &str = "hlsealed1.";

/// An endpoint signing key (the raw bytes behind `whsec_<base64>`), and its sealed form once
/// sealed. Equality compares the keys in constant time when both are known, else the sealed
/// texts.
#[derive(Clone)]
pub struct Secret {
    /// Empty only for a sealed secret not opened yet.
    key: Vec<u8>,
    /// `hlsealed1.<key id>.<base64>`: what is stored instead of the key, once sealed.
    sealed: Option<std::sync::Arc<str>>,
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        if self.has_key() && other.has_key() {
            return self.key.ct_eq(&other.key).into();
        }
        matches!((&self.sealed, &other.sealed), (Some(a), Some(b)) if a == b)
    }
}

impl Eq for Secret {}

impl Secret {
    /// A fresh random 24-byte key.
    ///
    /// The bytes of two v4 UUIDs (each 122 bits from the OS random source
    /// via `getrandom`) are hashed with SHA-256 and the first 24 bytes of
    /// the digest are kept, so every key bit is uniformly random.
    pub fn generate() -> Self {
        let mut hasher = Sha256::new();
        hasher.update(uuid::Uuid::new_v4().as_bytes());
        hasher.update(uuid::Uuid::new_v4().as_bytes());
        let digest = hasher.finalize();
        Secret {
            key: digest.iter().take(GENERATED_KEY_LEN).copied().collect(),
            sealed: None,
        }
    }

    /// Parses `whsec_<standard base64>`; surrounding whitespace is ignored.
    pub fn parse(s: &str) -> Result<Self, SigningError> {
        let encoded = s
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SigningError::MissingPrefix)?;
        let key = STANDARD.decode(encoded).map_err(SigningError::BadBase64)?;
        if (MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
            Ok(Secret { key, sealed: None })
        } else {
            Err(SigningError::KeyLength { len: key.len() })
        }
    }

    /// The `whsec_<base64>` form: the only way to see the key. A sealed secret that was not
    /// opened has no key to show: its sealed text is returned instead.
    pub fn expose(&self) -> String {
        match (&self.sealed, self.has_key()) {
            (Some(sealed), false) => sealed.to_string(),
            _ => format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key)),
        }
    }

    /// What a registry row or a checkpoint stores: the sealed text once sealed, else the
    /// `whsec_` form (a database written before sealing, or without a key ring).
    pub fn stored_form(&self) -> String {
        match &self.sealed {
            Some(sealed) => sealed.to_string(),
            None => self.expose(),
        }
    }

    /// Reads a stored form back: sealed text stays sealed (no key is needed to read it),
    /// anything else must parse as `whsec_`.
    pub fn from_stored(s: &str) -> Result<Self, SigningError> {
        let s = s.trim();
        if s.starts_with(SEALED_PREFIX) {
            Ok(Secret {
                key: Vec::new(),
                sealed: Some(s.into()),
            })
        } else {
            Self::parse(s)
        }
    }

    /// This key with its sealed text (what [`crate::secrets::Keyring::seal`] makes).
    pub fn with_sealed(mut self, sealed: String) -> Self {
        self.sealed = Some(sealed.into());
        self
    }

    /// Whether the key bytes are here (false: sealed and not opened).
    pub fn has_key(&self) -> bool {
        !self.key.is_empty()
    }

    /// The sealed text, once sealed.
    pub fn sealed(&self) -> Option<&str> {
        self.sealed.as_deref()
    }

    /// `v1,<base64 HMAC-SHA256>` of `"{msg_id}.{timestamp}.{body}"`.
    fn signature(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            HmacSha256::new_from_slice(&self.key).expect("HMAC-SHA256 accepts keys of any length");
        mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        format!("{SIGNATURE_VERSION},{}", STANDARD.encode(tag))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_***")
    }
}

/// The `webhook-signature` header value: one `v1,<base64>` entry per
/// secret, in the order given, joined by single spaces. An empty `secrets`
/// slice yields an empty string; callers must sign with at least one secret.
/// A sealed secret that was not opened signs nothing (the engine opens them).
pub fn sign(msg_id: &str, timestamp: i64, body: &[u8], secrets: &[&Secret]) -> String {
    secrets
        .iter()
        .filter(|s| s.has_key())
        .map(|secret| secret.signature(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Values of the three Standard Webhooks headers for one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `webhook-id` value.
    pub id: String,
    /// `webhook-timestamp` value (Unix seconds).
    pub timestamp: String,
    /// `webhook-signature` value.
    pub signature: String,
}

/// Builds the header values for `body`, signed by every secret in `secrets`.
pub fn signed_headers(
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    secrets: &[&Secret],
) -> SignedHeaders {
    SignedHeaders {
        id: msg_id.to_owned(),
        timestamp: timestamp.to_string(),
        signature: sign(msg_id, timestamp, body, secrets),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use standardwebhooks::{Webhook, WebhookError};

    use super::*;

    /// Example from the Standard Webhooks reference library's own tests.
    const SPEC_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SPEC_MSG_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SPEC_TIMESTAMP: i64 = 1_649_367_553;
    const SPEC_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SPEC_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn secret(s: &str) -> Secret {
        Secret::parse(s).expect("test secret parses")
    }

    fn whsec_of(len: usize) -> String {
        format!("whsec_{}", STANDARD.encode(vec![7u8; len]))
    }

    /// Verifies with the third-party `standardwebhooks` crate. It does not
    /// re-export `http`, so the `http::HeaderMap` is built by inference.
    fn verify(secret: &str, headers: &SignedHeaders, body: &[u8]) -> Result<(), WebhookError> {
        let raw = HashMap::from([
            (HEADER_ID.to_owned(), headers.id.clone()),
            (HEADER_TIMESTAMP.to_owned(), headers.timestamp.clone()),
            (HEADER_SIGNATURE.to_owned(), headers.signature.clone()),
        ]);
        let map = (&raw)
            .try_into()
            .expect("header names and values are valid");
        Webhook::new(secret)?.verify(body, &map)
    }

    #[test]
    fn known_answer_matches_standard_webhooks_example() {
        let key = secret(SPEC_SECRET);
        let got = sign(SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY, &[&key]);
        assert_eq!(got, SPEC_SIGNATURE);
    }

    #[test]
    fn signature_verifies_with_standardwebhooks_crate() {
        let key = Secret::generate();
        let body = br#"{"type":"invoice.paid","id":42}"#;
        let headers = signed_headers("msg_1", now(), body, &[&key]);
        verify(&key.expose(), &headers, body).expect("valid signature verifies");
    }

    #[test]
    fn tampered_body_or_wrong_key_fails_verification() {
        let key = Secret::generate();
        let headers = signed_headers("msg_1", now(), b"{\"a\":1}", &[&key]);
        assert!(verify(&key.expose(), &headers, b"{\"a\":2}").is_err());
        let other = Secret::generate();
        assert!(verify(&other.expose(), &headers, b"{\"a\":1}").is_err());
    }

    #[test]
    fn rotation_header_verifies_with_each_key_alone() {
        let (new, old) = (Secret::generate(), Secret::generate());
        let body = b"{\"rotating\":true}";
        let headers = signed_headers("msg_rot", now(), body, &[&new, &old]);
        let parts: Vec<&str> = headers.signature.split(' ').collect();
        assert_eq!(
            parts.len(),
            2,
            "one entry per secret: {}",
            headers.signature
        );
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        verify(&new.expose(), &headers, body).expect("new key verifies");
        verify(&old.expose(), &headers, body).expect("old key verifies");
        let stranger = Secret::generate();
        assert!(verify(&stranger.expose(), &headers, body).is_err());
    }

    #[test]
    fn rotation_keeps_secret_order_and_single_spaces() {
        let (a, b) = (secret(SPEC_SECRET), Secret::generate());
        let got = sign(SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY, &[&a, &b]);
        let b_only = sign(SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY, &[&b]);
        assert_eq!(got, format!("{SPEC_SIGNATURE} {b_only}"));
    }

    #[test]
    fn signed_headers_carry_id_timestamp_and_signature() {
        let key = secret(SPEC_SECRET);
        let headers = signed_headers(SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY, &[&key]);
        assert_eq!(headers.id, SPEC_MSG_ID);
        assert_eq!(headers.timestamp, "1649367553");
        assert_eq!(headers.signature, SPEC_SIGNATURE);
    }

    #[test]
    fn no_secrets_gives_empty_signature() {
        assert_eq!(sign("msg", 1, b"x", &[]), "");
    }

    /// Checked against the manifest itself (read at test time, not through the `env!` the
    /// constant is built from), and as the header value the sender sends.
    #[test]
    fn user_agent_names_crate_and_version() {
        let manifest =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
        let package = manifest.split("\n[").next().unwrap();
        let field = |name: &str| {
            package
                .lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .trim()
                        .strip_prefix('=')?
                        .trim()
                        .strip_prefix('"')?
                        .strip_suffix('"')
                })
                .unwrap_or_else(|| panic!("no {name} in [package]"))
                .to_owned()
        };
        let expected = format!("{}/{}", field("name"), field("version"));
        assert_eq!(USER_AGENT, expected);
        assert!(USER_AGENT.starts_with("hookledger/"), "{USER_AGENT}");
        assert!(reqwest::header::HeaderValue::from_str(USER_AGENT).is_ok());
    }

    #[test]
    fn generated_secret_is_24_random_bytes_and_round_trips() {
        let (a, b) = (Secret::generate(), Secret::generate());
        assert_eq!(a.key.len(), 24);
        assert_ne!(a.key, b.key);
        assert_eq!(secret(&a.expose()).key, a.key);
        assert!(a.expose().starts_with("whsec_"));
    }

    #[test]
    fn expose_returns_canonical_whsec_form() {
        assert_eq!(secret(SPEC_SECRET).expose(), SPEC_SECRET);
        assert_eq!(secret(&format!("  {SPEC_SECRET}\n")).expose(), SPEC_SECRET);
    }

    #[test]
    fn debug_and_display_never_show_the_key() {
        let key = secret(SPEC_SECRET);
        let encoded = SPEC_SECRET.trim_start_matches("whsec_");
        assert_eq!(format!("{key}"), "whsec_***");
        assert_eq!(format!("{key:?}"), "whsec_***");
        let nested = format!("{:#?}", Some(vec![key.clone()]));
        assert!(!nested.contains(encoded), "{nested}");
        assert!(!nested.contains("C2FV"), "{nested}");
    }

    #[test]
    fn parse_accepts_key_length_bounds() {
        assert_eq!(secret(&whsec_of(MIN_KEY_LEN)).key.len(), MIN_KEY_LEN);
        assert_eq!(secret(&whsec_of(MAX_KEY_LEN)).key.len(), MAX_KEY_LEN);
    }

    #[test]
    fn parse_rejects_missing_prefix() {
        let bare = SPEC_SECRET.trim_start_matches("whsec_");
        for bad in [bare, "whsec", "WHSEC_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", ""] {
            let err = Secret::parse(bad).expect_err(bad);
            assert!(matches!(err, SigningError::MissingPrefix), "{bad}: {err:?}");
            assert!(err.to_string().contains("whsec_"));
        }
    }

    #[test]
    fn parse_rejects_bad_base64() {
        for bad in [
            "whsec_!!!!",
            "whsec_C2FV sBQI",
            "whsec_C2FVsBQIhrscChlQIMV-b5sSYspob7oD",
        ] {
            let err = Secret::parse(bad).expect_err(bad);
            assert!(matches!(err, SigningError::BadBase64(_)), "{bad}: {err:?}");
            assert!(err.to_string().contains("base64"));
        }
    }

    #[test]
    fn parse_rejects_keys_outside_24_to_64_bytes() {
        for len in [0, 16, MIN_KEY_LEN - 1, MAX_KEY_LEN + 1, 128] {
            let err = Secret::parse(&whsec_of(len)).expect_err("bad length");
            assert!(
                matches!(err, SigningError::KeyLength { len: l } if l == len),
                "{len}: {err:?}"
            );
            assert!(err.to_string().contains(&format!("{len} bytes")));
        }
    }
}
