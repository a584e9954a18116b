//! The ledger rows and the commit: a batch appended in one transaction (records and events as
//! one multi-row `INSERT ... SELECT FROM unnest(...)` each, the batch's expunges beside), the fold's scan in seq order, and
//! the record queries (pages, one delivery's history) and the registry's change log.
//!
//! Invariant: a scan hands rows on in strictly increasing seq (the primary key's order); a row
//! out of that order stops it with an error naming both seqs.

use postgres::types::ToSql;
use postgres::Row;

use super::{events, expunges, hash, seq, ts, Held, Param};
use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, WebhookId};
use crate::ledger::record::RecordKind;
use crate::ledger::stored::StoredRecord;
use crate::registry::StoredChange;
use crate::store::CommitBatch;

/// A `SELECT` of ledger rows (the columns in the order [`read_record`] reads them) with the
/// rest of the statement after `FROM webhook_deliveries`.
macro_rules! select_records {
    ($rest:literal) => {
        concat!(
            "SELECT seq, recorded_at, format_version, kind, webhook_id, event_id, attempt, \
             status_code, error_class, error, duration_ms, due_at, reason, response_body, \
             prior_state FROM webhook_deliveries ",
            $rest
        )
    };
}

const INSERT_RECORDS: &str = "INSERT INTO webhook_deliveries (seq, recorded_at, format_version, \
     kind, webhook_id, event_id, attempt, status_code, error_class, error, duration_ms, due_at, \
     reason, response_body, prior_state) \
     SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::smallint[], $4::text[], \
     $5::uuid[], $6::uuid[], $7::integer[], $8::integer[], $9::text[], $10::text[], \
     $11::bigint[], $12::timestamptz[], $13::text[], $14::text[], $15::text[])";

const INSERT_LINK: &str =
    "INSERT INTO ledger_batches (first_seq, last_seq, committed_at, hash) VALUES ($1, $2, $3, $4)";

const INSERT_CHANGE: &str = "INSERT INTO webhook_changes (seq, recorded_at, format_version, \
     kind, webhook_id, url, event_types, description, active, secret, previous_until, reason, \
     hash, app, name, metadata, token_id, token_digest, payload_format, actor) VALUES \
     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)";

const UPSERT_SETTING: &str = "INSERT INTO settings (name, value) VALUES ($1, $2) \
     ON CONFLICT (name) DO UPDATE SET value = excluded.value";

/// Everything of one batch in one transaction; the events last (see the `Store` invariant).
pub(super) fn commit(h: &mut Held, batch: &CommitBatch) -> Result<()> {
    let records = h.prepared(INSERT_RECORDS)?;
    let link = h.prepared(INSERT_LINK)?;
    let change = h.prepared(INSERT_CHANGE)?;
    let setting = h.prepared(UPSERT_SETTING)?;
    let insert_events = h.prepared(events::INSERT)?;
    let remove_body = h.prepared(events::REMOVE_BODY)?;
    let insert_fact = h.prepared(expunges::INSERT)?;
    let mut tx = h.client.transaction()?;
    if !batch.records.is_empty() {
        let r = &batch.records;
        let seqs: Vec<i64> = r.iter().map(|r| seq(r.seq)).collect();
        let recorded: Vec<_> = r.iter().map(|r| ts(r.recorded_at_us)).collect();
        let versions: Vec<i16> = r.iter().map(|r| i16::from(r.format_version)).collect();
        let kinds: Vec<&str> = r.iter().map(|r| r.kind.as_str()).collect();
        let webhooks: Vec<uuid::Uuid> = r.iter().map(|r| r.webhook_id).collect();
        let events: Vec<uuid::Uuid> = r.iter().map(|r| r.event_id).collect();
        let attempts: Vec<Option<i32>> = r.iter().map(|r| r.attempt.map(i32::from)).collect();
        let statuses: Vec<Option<i32>> = r.iter().map(|r| r.status_code.map(i32::from)).collect();
        let classes: Vec<Option<&str>> = r.iter().map(|r| r.error_class.as_deref()).collect();
        let errors: Vec<Option<&str>> = r.iter().map(|r| r.error.as_deref()).collect();
        let durations: Vec<Option<i64>> = r.iter().map(|r| r.duration_ms.map(i64::from)).collect();
        let due: Vec<Option<_>> = r.iter().map(|r| r.due_at_us.map(ts)).collect();
        let reasons: Vec<Option<&str>> = r.iter().map(|r| r.reason.as_deref()).collect();
        let bodies: Vec<Option<&str>> = r.iter().map(|r| r.response_body.as_deref()).collect();
        let prior: Vec<Option<&str>> = r.iter().map(|r| r.prior_state.as_deref()).collect();
        let params: [&(dyn ToSql + Sync); 15] = [
            &seqs, &recorded, &versions, &kinds, &webhooks, &events, &attempts, &statuses,
            &classes, &errors, &durations, &due, &reasons, &bodies, &prior,
        ];
        tx.execute(&records, &params)?;
    }
    if let Some((l, committed_at)) = &batch.link {
        tx.execute(
            &link,
            &[
                &seq(l.first_seq) as Param,
                &seq(l.last_seq),
                committed_at,
                &l.hash.as_slice(),
            ],
        )?;
    }
    for c in &batch.changes {
        tx.execute(
            &change,
            &[
                &seq(c.seq) as Param,
                &ts(c.recorded_at_us),
                &i16::from(c.format_version),
                &c.kind,
                &c.webhook_id,
                &c.url,
                &c.event_types,
                &c.description,
                &c.active,
                &c.secret,
                &c.previous_until_us.map(ts),
                &c.reason,
                &c.hash.as_slice(),
                &c.app,
                &c.name,
                &c.metadata,
                &c.token_id,
                &c.token_digest,
                &c.payload_format,
                &c.actor,
            ],
        )?;
    }
    for x in &batch.expunges {
        // A body that is not there (unknown event, already gone) fails the whole batch.
        if tx.execute(&remove_body, &[&x.event_id.0])? != 1 {
            return Err(LedgerError::CommitFailed(format!(
                "event {} has no body to expunge",
                x.event_id
            )));
        }
        expunges::append(&mut tx, &insert_fact, x)?;
    }
    for (name, value) in &batch.settings {
        tx.execute(&setting, &[name, value])?;
    }
    // Last: a repeated event id (the primary key) is the one way a batch can be refused.
    if !batch.events.is_empty() {
        events::append(&mut tx, &insert_events, &batch.events)?;
    }
    // Delivered to the other nodes' listeners when (and only if) the transaction commits.
    let notify = notification(batch);
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&super::cluster::CHANNEL as Param, &notify],
    )?;
    tx.commit()?;
    Ok(())
}

/// The notification's payload: the batch's last record seq (empty for a batch without).
fn notification(batch: &CommitBatch) -> String {
    batch
        .records
        .last()
        .map(|r| r.seq.to_string())
        .unwrap_or_default()
}

fn read_record(row: &Row) -> Result<StoredRecord> {
    let version: i16 = row.try_get(2)?;
    let narrow = |what: &str, v: i64| {
        LedgerError::Invalid(format!("stored record has {what} {v} out of its range"))
    };
    let u16_of = |what: &str, v: Option<i32>| -> Result<Option<u16>> {
        v.map(|v| u16::try_from(v).map_err(|_| narrow(what, i64::from(v))))
            .transpose()
    };
    let duration: Option<i64> = row.try_get(10)?;
    let recorded: chrono::DateTime<chrono::Utc> = row.try_get(1)?;
    let due: Option<chrono::DateTime<chrono::Utc>> = row.try_get(11)?;
    Ok(StoredRecord {
        seq: row.try_get::<_, i64>(0)? as u64,
        recorded_at_us: recorded.timestamp_micros(),
        format_version: u8::try_from(version).map_err(|_| narrow("format", version.into()))?,
        kind: row.try_get(3)?,
        webhook_id: row.try_get(4)?,
        event_id: row.try_get(5)?,
        attempt: u16_of("attempt", row.try_get(6)?)?,
        status_code: u16_of("status", row.try_get(7)?)?,
        error_class: row.try_get(8)?,
        error: row.try_get(9)?,
        duration_ms: duration
            .map(|d| u32::try_from(d).map_err(|_| narrow("duration", d)))
            .transpose()?,
        due_at_us: due.map(|d| d.timestamp_micros()),
        reason: row.try_get(12)?,
        response_body: row.try_get(13)?,
        prior_state: row.try_get(14)?,
    })
}

/// Every record in `from..=to`, streamed in seq order (the rows arrive as PostgreSQL sends
/// them; nothing holds the whole range).
pub(super) fn scan(
    h: &mut Held,
    from: u64,
    to: u64,
    f: &mut dyn FnMut(StoredRecord) -> Result<()>,
) -> Result<()> {
    const SQL: &str = select_records!("WHERE seq BETWEEN $1 AND $2 ORDER BY seq");
    let stmt = h.prepared(SQL)?;
    let (from, to) = (seq(from), seq(to));
    let params: [&(dyn ToSql + Sync); 2] = [&from, &to];
    let mut rows = h.client.query_raw(&stmt, params)?;
    let mut last: Option<u64> = None;
    use postgres::fallible_iterator::FallibleIterator;
    while let Some(row) = rows.next()? {
        let r = read_record(&row)?;
        if let Some(prev) = last.filter(|p| r.seq <= *p) {
            return Err(LedgerError::Invalid(format!(
                "the ledger scan returned seq {} after seq {prev}",
                r.seq
            )));
        }
        last = Some(r.seq);
        f(r)?;
    }
    Ok(())
}

/// Up to `limit` records after `after_seq`, optionally of one webhook, one kind, or a set of
/// webhooks (an app's).
pub(super) fn page(
    h: &mut Held,
    after_seq: u64,
    limit: usize,
    webhook: Option<WebhookId>,
    kind: Option<RecordKind>,
    webhooks: Option<&[WebhookId]>,
) -> Result<Vec<StoredRecord>> {
    const SQL: &str = select_records!(
        "\
         WHERE seq > $1 AND ($2::uuid IS NULL OR webhook_id = $2) \
           AND ($3::text IS NULL OR kind = $3) AND ($4::uuid[] IS NULL OR webhook_id = ANY($4)) \
         ORDER BY seq LIMIT $5"
    );
    let stmt = h.prepared(SQL)?;
    let webhook = webhook.map(|w| w.0);
    let kind = kind.map(|k| k.as_str());
    let webhooks: Option<Vec<uuid::Uuid>> = webhooks.map(|w| w.iter().map(|w| w.0).collect());
    let limit = limit.min(i64::MAX as usize) as i64;
    h.client
        .query(
            &stmt,
            &[&seq(after_seq) as Param, &webhook, &kind, &webhooks, &limit],
        )?
        .iter()
        .map(read_record)
        .collect()
}

pub(super) fn history(h: &mut Held, key: DeliveryKey) -> Result<Vec<StoredRecord>> {
    const SQL: &str = select_records!(
        "WHERE event_id = $1 AND webhook_id = $2 \
         ORDER BY seq"
    );
    let stmt = h.prepared(SQL)?;
    h.client
        .query(&stmt, &[&key.event_id.0, &key.webhook_id.0])?
        .iter()
        .map(read_record)
        .collect()
}

/// Every registry change row; `schema` is the database's version (schema 4 adds the actor,
/// `schema/pg/004_actor.sql`; an older database read without migrating has none).
pub(super) fn changes(h: &mut Held, schema: u32) -> Result<Vec<StoredChange>> {
    changes_after(h, schema, 0)
}

/// The changes after `after`, through the primary key (change seqs start at 1).
pub(super) fn changes_after(h: &mut Held, schema: u32, after: u64) -> Result<Vec<StoredChange>> {
    const SQL: &str = "SELECT seq, recorded_at, format_version, kind, webhook_id, url, \
         event_types, description, active, secret, previous_until, reason, hash, app, name, \
         metadata, token_id, token_digest, payload_format, actor FROM webhook_changes \
         WHERE seq > $1 ORDER BY seq";
    const SQL_3: &str = "SELECT seq, recorded_at, format_version, kind, webhook_id, url, \
         event_types, description, active, secret, previous_until, reason, hash, app, name, \
         metadata, token_id, token_digest, payload_format, NULL::text FROM webhook_changes \
         WHERE seq > $1 ORDER BY seq";
    let stmt = h.prepared(if schema >= 4 { SQL } else { SQL_3 })?;
    let after = after.min(i64::MAX as u64) as i64;
    h.client
        .query(&stmt, &[&after])?
        .iter()
        .map(|r| {
            let recorded: chrono::DateTime<chrono::Utc> = r.try_get(1)?;
            let until: Option<chrono::DateTime<chrono::Utc>> = r.try_get(10)?;
            let version: i16 = r.try_get(2)?;
            Ok(StoredChange {
                seq: r.try_get::<_, i64>(0)? as u64,
                recorded_at_us: recorded.timestamp_micros(),
                format_version: u8::try_from(version).map_err(|_| {
                    LedgerError::Invalid(format!("stored change has format {version}"))
                })?,
                kind: r.try_get(3)?,
                webhook_id: r.try_get(4)?,
                url: r.try_get(5)?,
                event_types: r.try_get(6)?,
                description: r.try_get(7)?,
                active: r.try_get(8)?,
                secret: r.try_get(9)?,
                previous_until_us: until.map(|u| u.timestamp_micros()),
                reason: r.try_get(11)?,
                hash: hash(r.try_get(12)?),
                app: r.try_get(13)?,
                name: r.try_get(14)?,
                metadata: r.try_get(15)?,
                token_id: r.try_get(16)?,
                token_digest: r.try_get(17)?,
                payload_format: r.try_get(18)?,
                actor: r.try_get(19)?,
            })
        })
        .collect()
}
