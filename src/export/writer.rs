//! Writing an export directory: plan the next files after the last one sealed, read their rows
//! through the [`Store`] trait (either backend), and seal each file once.
//!
//! Invariant: a file is written under a hidden temp name, fsynced, renamed to its final name
//! and the directory fsynced; only then is it added to the manifest (itself replaced the same
//! way). A final name is never written twice: a run continues after the last file in the
//! directory, and leftover temp files of a crashed run are removed at the next start.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};

use super::manifest::{Entry, Manifest};
use super::plan::{self, Range, Seal};
use super::rows::{self, EventMeta, Row};
use super::{ExportError, Options};
use crate::ids::EventId;
use crate::ledger::chain::{self, BatchLink, Hash};
use crate::store::{Store, StoredEvent};

/// Writes `bytes` as `dir/name`: temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ExportError> {
    let tmp = dir.join(plan::temp_name(name));
    let mut f = File::create(&tmp).map_err(|e| ExportError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| ExportError::io(&tmp, e))?;
    f.sync_all().map_err(|e| ExportError::io(&tmp, e))?;
    drop(f);
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(|e| ExportError::io(&path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ExportError::io(dir, e))
}

/// The export files in `dir` by range, in seq order.
pub fn list(dir: &Path) -> Result<Vec<(Range, String)>, ExportError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| ExportError::io(dir, e))? {
        let entry = entry.map_err(|e| ExportError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(range) = Range::parse(&name) {
            out.push((range, name));
        }
    }
    out.sort();
    Ok(out)
}

/// Removes the temp files a crashed run left (none is ever visible to readers).
fn remove_temp_files(dir: &Path) -> Result<(), ExportError> {
    for entry in std::fs::read_dir(dir).map_err(|e| ExportError::io(dir, e))? {
        let entry = entry.map_err(|e| ExportError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| ExportError::io(&path, e))?;
        }
    }
    Ok(())
}

/// The rows of one export file.
pub fn read_file(path: &Path) -> Result<Vec<Row>, ExportError> {
    let file = File::open(path).map_err(|e| ExportError::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| ExportError::Format(e.to_string()))?;
        out.extend(rows::from_batch(&batch)?);
    }
    Ok(out)
}

/// The manifest entry of a file's bytes and rows.
pub fn entry_of(range: Range, bytes: &[u8], rows: &[Row]) -> Entry {
    Entry {
        name: range.file_name(),
        first_seq: range.first,
        last_seq: range.last,
        rows: rows.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
        prev_chain_hash: hex::encode(rows.first().map_or([0; 32], |r| r.batch_prev_hash)),
        chain_hash: hex::encode(rows.last().map_or([0; 32], |r| r.batch_hash)),
    }
}

/// Opens `dir` for writing: creates it, removes temp files, and adds to the manifest the files
/// sealed after it was last written (a crash between a rename and the manifest's).
fn prepare(dir: &Path) -> Result<Manifest, ExportError> {
    std::fs::create_dir_all(dir).map_err(|e| ExportError::io(dir, e))?;
    remove_temp_files(dir)?;
    let mut manifest = Manifest::load(dir)?;
    let mut added = false;
    for (range, name) in list(dir)? {
        if range.last <= manifest.last_seq() {
            continue;
        }
        if manifest.last_seq() != 0 && range.first != manifest.last_seq() + 1 {
            return Err(ExportError::Dir(format!(
                "{name} does not follow the last file of {} (seq {}); run `hookledger verify \
                 --export {}`",
                super::manifest::FILE_NAME,
                manifest.last_seq(),
                dir.display()
            )));
        }
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).map_err(|e| ExportError::io(&path, e))?;
        manifest
            .files
            .push(entry_of(range, &bytes, &read_file(&path)?));
        added = true;
    }
    if added {
        manifest.save(dir)?;
    }
    Ok(manifest)
}

/// Seals the next files in `dir` from `store` (see the module docs); the entries written.
pub fn export(
    store: &dyn Store,
    dir: &Path,
    options: &Options,
    seal: Seal,
) -> Result<Vec<Entry>, ExportError> {
    let mut manifest = prepare(dir)?;
    let mut after = manifest.last_seq();
    if after == 0 {
        if let Some(since) = options.since {
            let first = store.last_seq_at(since - chrono::Duration::microseconds(1))? + 1;
            after = plan::batch_start(&store.links_after(first - 1)?, first) - 1;
        }
    }
    // Only the links after the last file: a pass costs what it exports, not the whole chain.
    let links = store.links_after(after)?;
    let upto = match options.until {
        Some(until) => plan::batch_end(
            &links,
            store.last_seq_at(until - chrono::Duration::microseconds(1))?,
        ),
        None => u64::MAX,
    };
    let mut written = Vec::new();
    for range in plan::plan(&links, after, upto, options.every, seal) {
        let rows = rows_of(store, range, &links, options.bodies)?;
        let bytes = encode(&rows)?;
        let name = range.file_name();
        write_atomically(dir, &name, &bytes)?;
        let entry = entry_of(range, &bytes, &rows);
        manifest.files.push(entry.clone());
        manifest.save(dir)?;
        written.push(entry);
    }
    Ok(written)
}

/// One file's bytes: the rows as Parquet, zstd.
pub fn encode(rows: &[Row]) -> Result<Vec<u8>, ExportError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, rows::schema(), Some(props))?;
    writer.write(&rows::to_batch(rows)?)?;
    writer.close()?;
    Ok(bytes)
}

/// The rows of `range` (whole batches of `links`), each with its link and its event.
fn rows_of(
    store: &dyn Store,
    range: Range,
    links: &[BatchLink],
    bodies: bool,
) -> Result<Vec<Row>, ExportError> {
    let mut records = Vec::with_capacity(range.rows() as usize);
    store.scan_records(range.first, range.last, &mut |r| {
        records.push(r);
        Ok(())
    })?;
    let events: HashMap<EventId, EventMeta> = store
        .events_of_records(range.first, range.last)?
        .into_iter()
        .map(|e| (e.event_id, meta(e, bodies)))
        .collect();
    let mut at = links.partition_point(|l| l.last_seq < range.first);
    let mut prev: Hash = match at.checked_sub(1).map(|i| &links[i]) {
        Some(l) if l.last_seq + 1 == range.first => l.hash,
        _ if range.first == 1 => chain::genesis(),
        _ => store
            .link_ending_at(range.first - 1)?
            .map(|l| l.hash)
            .ok_or_else(|| {
                ExportError::Dir(format!("no chain link ends at seq {}", range.first - 1))
            })?,
    };
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        while links.get(at).is_some_and(|l| l.last_seq < record.seq) {
            prev = links[at].hash;
            at += 1;
        }
        let link = links
            .get(at)
            .filter(|l| l.first_seq <= record.seq)
            .ok_or_else(|| ExportError::Dir(format!("no chain link covers seq {}", record.seq)))?;
        out.push(Row {
            event: events.get(&EventId(record.event_id)).cloned(),
            batch_first_seq: link.first_seq,
            batch_last_seq: link.last_seq,
            batch_prev_hash: prev,
            batch_hash: link.hash,
            record,
        });
    }
    if out.len() as u64 != range.rows() {
        return Err(ExportError::Dir(format!(
            "the store holds {} records in {}..={}, expected {}",
            out.len(),
            range.first,
            range.last,
            range.rows()
        )));
    }
    Ok(out)
}

fn meta(e: StoredEvent, bodies: bool) -> EventMeta {
    let producer_event_id = e.producer_event_id();
    EventMeta {
        event_seq: e.seq,
        app: e
            .app
            .clone()
            .unwrap_or_else(|| crate::ids::DEFAULT_APP.to_owned()),
        producer_event_id,
        event_type: e.event_type,
        published_at_us: e.published_at.timestamp_micros(),
        event_hash: e.hash,
        body_digest: e.body_digest,
        body_expunged: e.expunged,
        body: (bodies && !e.expunged).then_some(e.body),
    }
}
