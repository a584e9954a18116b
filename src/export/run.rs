//! `serve`'s continuous export (`HOOKLEDGER_EXPORT_DIR`): a background task that seals a file
//! every `HOOKLEDGER_EXPORT_EVERY` records or `HOOKLEDGER_EXPORT_INTERVAL`, whichever comes
//! first.
//!
//! Invariant: it never stalls commits. It reads through its own reader of the store (never the
//! writer's connection), on a blocking thread, and only what is committed; the writer does not
//! wait for it. A failed pass is logged and tried again at the next poll; a crash leaves no
//! partial file visible ([`super::writer`]), and the next start continues after the last file.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::manifest::Manifest;
use super::plan::Seal;
use super::{writer, ExportError, Options};
use crate::config::ExportSettings;
use crate::ledger::Ledger;
use crate::store::Store as _;

/// Whether to seal now: `pending` records not exported yet, `waited` since the last file was
/// sealed or since nothing was pending. A full file as soon as one is there; after the
/// interval, whatever is pending.
pub fn due(pending: u64, every: u64, waited: Duration, interval: Duration) -> Option<Seal> {
    if pending == 0 {
        None
    } else if waited >= interval {
        Some(Seal::All)
    } else if pending >= every {
        Some(Seal::Full)
    } else {
        None
    }
}

/// How often the task looks at the ledger's head: a tenth of the interval, from 50 ms to 1 s.
pub fn poll_period(interval: Duration) -> Duration {
    (interval / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// One pass: what the pending count was and how many files were sealed.
fn pass(
    ledger: &Ledger,
    settings: &ExportSettings,
    waited: Duration,
) -> Result<(u64, usize), ExportError> {
    let reader = ledger.reader()?;
    let exported = Manifest::load(&settings.dir)?.last_seq();
    let pending = reader.last_seq()?.saturating_sub(exported);
    let Some(seal) = due(pending, settings.every, waited, settings.interval) else {
        return Ok((pending, 0));
    };
    let options = Options {
        every: settings.every,
        bodies: settings.bodies,
        ..Options::default()
    };
    let written = writer::export(&reader, &settings.dir, &options, seal)?;
    for e in &written {
        tracing::info!(
            file = %e.name, rows = e.rows, chain_hash = %e.chain_hash,
            "export: sealed a file"
        );
    }
    Ok((pending, written.len()))
}

/// Runs until `shutdown` turns true.
pub async fn run(
    ledger: Arc<Ledger>,
    settings: ExportSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let poll = poll_period(settings.interval);
    let settings = Arc::new(settings);
    let mut since = Instant::now();
    tracing::info!(
        dir = %settings.dir.display(), every = settings.every,
        interval = ?settings.interval, "export: continuous mode"
    );
    loop {
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
        let (l, s) = (ledger.clone(), settings.clone());
        let waited = since.elapsed();
        match tokio::task::spawn_blocking(move || pass(&l, &s, waited)).await {
            Ok(Ok((pending, sealed))) => {
                if pending == 0 || sealed > 0 {
                    since = Instant::now();
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "export: pass failed; trying again"),
            Err(e) => tracing::warn!(error = %e, "export: pass panicked; trying again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_sealed_at_every_records_or_after_the_interval() {
        let (s, i) = (Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(due(0, 5, i * 2, i), None, "nothing pending");
        assert_eq!(due(4, 5, s, i), None);
        assert_eq!(due(5, 5, s, i), Some(Seal::Full));
        assert_eq!(due(4, 5, i, i), Some(Seal::All));
        assert_eq!(due(50, 5, i, i), Some(Seal::All));
    }

    #[test]
    fn the_poll_is_a_tenth_of_the_interval_within_bounds() {
        assert_eq!(
            poll_period(Duration::from_secs(300)),
            Duration::from_secs(1)
        );
        assert_eq!(
            poll_period(Duration::from_secs(2)),
            Duration::from_millis(200)
        );
        assert_eq!(
            poll_period(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
    }
}
