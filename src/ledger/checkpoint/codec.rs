//! The body of a projection checkpoint, format 1: a compact, deterministic binary encoding of
//! the projection (live deliveries in key order, terminal counters, last seq and time) and the
//! registry (every webhook with its signing keys, the last change seq and that change's hash).
//!
//! Integers are big-endian; a string is its length as u32 then its UTF-8 bytes; an optional
//! value is a byte 0 (absent) or 1 then the value (as in `stored.rs`). The due index is not
//! stored: it is rebuilt from the pending deliveries. Decoding checks every length against what
//! is left, so a truncated or edited body fails to decode rather than misreads.

use crate::delivery::signing::Secret;
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::chain::Hash;
use crate::ledger::projection::{Live, Projection, TerminalCounts};
use crate::ledger::record::Timestamp;
use crate::ledger::stored::{put_opt, put_str};
use crate::registry::{Registry, SigningKey, Webhook};

/// The body format this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"hlcp";

/// What a checkpoint restores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub projection: Projection,
    pub registry: Registry,
    /// The hash of registry change `registry.last_seq()` (the registry genesis when 0).
    pub change_hash: Hash,
}

pub fn encode(s: &Snapshot) -> Vec<u8> {
    let p = &s.projection;
    let live = p.live_rows();
    let mut out = Vec::with_capacity(64 + live.len() * 45);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&p.last_seq().to_be_bytes());
    put_opt(&mut out, p.last_recorded_at(), |o, t| {
        o.extend_from_slice(&t.timestamp_micros().to_be_bytes())
    });
    let t = p.terminal();
    for n in [t.delivered, t.dead, t.parked, live.len() as u64] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    for (key, state) in &live {
        out.extend_from_slice(key.webhook_id.0.as_bytes());
        out.extend_from_slice(key.event_id.0.as_bytes());
        match state {
            Live::Pending { attempts, due_us } => {
                out.push(0);
                out.extend_from_slice(&attempts.to_be_bytes());
                out.extend_from_slice(&due_us.to_be_bytes());
            }
            Live::InAttempt { attempt } => {
                out.push(1);
                out.extend_from_slice(&attempt.to_be_bytes());
            }
        }
    }
    let r = &s.registry;
    out.extend_from_slice(&r.last_seq().to_be_bytes());
    out.extend_from_slice(&s.change_hash);
    let hooks: Vec<&Webhook> = r.all().collect();
    out.extend_from_slice(&(hooks.len() as u32).to_be_bytes());
    for w in hooks {
        out.extend_from_slice(w.id.0.as_bytes());
        put_str(&mut out, &w.url);
        out.extend_from_slice(&(w.event_types.len() as u32).to_be_bytes());
        for t in &w.event_types {
            put_str(&mut out, t);
        }
        put_opt(&mut out, w.description.as_deref(), put_str);
        out.push(u8::from(w.active));
        out.extend_from_slice(&w.created_at.timestamp_micros().to_be_bytes());
        out.extend_from_slice(&w.updated_at.timestamp_micros().to_be_bytes());
        out.extend_from_slice(&(w.keys.len() as u32).to_be_bytes());
        for k in &w.keys {
            put_str(&mut out, &k.secret.stored_form());
            put_opt(&mut out, k.until, |o, t| {
                o.extend_from_slice(&t.timestamp_micros().to_be_bytes())
            });
        }
    }
    out
}

/// A cursor over a body; every read fails cleanly past the end.
struct Reader<'a> {
    rest: &'a [u8],
}

type R<T> = std::result::Result<T, String>;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let (head, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| "the body is truncated".to_owned())?;
        self.rest = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> R<[u8; N]> {
        Ok(self.take(N)?.try_into().unwrap_or([0; N]))
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> R<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> R<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn uuid(&mut self) -> R<uuid::Uuid> {
        Ok(uuid::Uuid::from_bytes(self.array()?))
    }
    fn time(&mut self) -> R<Timestamp> {
        let us = self.i64()?;
        chrono::DateTime::from_timestamp_micros(us).ok_or_else(|| format!("bad time {us}"))
    }
    fn string(&mut self) -> R<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }
    fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> R<T>) -> R<Option<T>> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            b => Err(format!("bad option tag {b}")),
        }
    }
    /// A count of items each at least `min` bytes long, checked against what is left.
    fn count(&mut self, wide: bool, min: usize) -> R<usize> {
        let n = if wide {
            self.u64()? as usize
        } else {
            self.u32()? as usize
        };
        if n.saturating_mul(min) > self.rest.len() {
            return Err(format!("a count of {n} exceeds the body"));
        }
        Ok(n)
    }
}

pub fn decode(body: &[u8]) -> R<Snapshot> {
    let mut r = Reader { rest: body };
    if r.take(4)? != MAGIC {
        return Err("not a checkpoint body".into());
    }
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "body format {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    let last_seq = r.u64()?;
    let last_recorded_at = r.opt(Reader::time)?;
    let terminal = TerminalCounts {
        delivered: r.u64()?,
        dead: r.u64()?,
        parked: r.u64()?,
    };
    let n = r.count(true, 35)?;
    let mut live = Vec::with_capacity(n);
    for _ in 0..n {
        let key = DeliveryKey::new(WebhookId(r.uuid()?), EventId(r.uuid()?));
        let state = match r.u8()? {
            0 => Live::Pending {
                attempts: r.u16()?,
                due_us: r.i64()?,
            },
            1 => Live::InAttempt { attempt: r.u16()? },
            t => return Err(format!("bad live state tag {t}")),
        };
        live.push((key, state));
    }
    let projection = Projection::from_parts(live, terminal, last_seq, last_recorded_at)?;
    let registry_seq = r.u64()?;
    let change_hash = r.array::<32>()?;
    let n = r.count(false, 16)?;
    let mut hooks = Vec::with_capacity(n);
    for _ in 0..n {
        let id = WebhookId(r.uuid()?);
        let url = r.string()?;
        let types = r.count(false, 4)?;
        let event_types = (0..types).map(|_| r.string()).collect::<R<Vec<_>>>()?;
        let description = r.opt(Reader::string)?;
        let active = r.u8()? != 0;
        let (created_at, updated_at) = (r.time()?, r.time()?);
        let keys = r.count(false, 5)?;
        let keys = (0..keys)
            .map(|_| {
                let secret = Secret::from_stored(&r.string()?).map_err(|e| e.to_string())?;
                let until = r.opt(Reader::time)?;
                Ok(SigningKey { secret, until })
            })
            .collect::<R<Vec<_>>>()?;
        hooks.push(Webhook {
            id,
            url,
            event_types,
            description,
            active,
            created_at,
            updated_at,
            keys,
        });
    }
    if !r.rest.is_empty() {
        return Err(format!("{} bytes follow the body", r.rest.len()));
    }
    Ok(Snapshot {
        projection,
        registry: Registry::from_parts(hooks, registry_seq),
        change_hash,
    })
}
