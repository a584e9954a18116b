//! Taking over from another node (`crate::cluster`): when the lease loop takes partitions whose
//! owner stopped renewing, every delivery of them still in an attempt was cut off with its
//! owner. The new owner catches up with the log (so it sees everything the old owner managed
//! to record), then records `failed` with class `abandoned` for each, with its backoff (or
//! `dead_parked` when that was its last attempt), and re-drive retries them when due.
//!
//! Invariant: only deliveries of partitions this node holds are abandoned here, and never an
//! attempt it started since it took the partition: a partition taken is not attempted here
//! until its take-over is done (`Membership::owns`); and the writer's transition check refuses
//! an outcome for an attempt that was already finished.

use super::*;
use crate::cluster::{bit, partition_of};

impl Engine {
    /// Abandons the cut-off attempts of the partitions taken since the last call; how many.
    pub async fn take_over(&self) -> Result<usize> {
        let Some(membership) = self.ledger.shared().cluster().cloned() else {
            return Ok(0);
        };
        let (marked, taken) = membership.to_take_over();
        if marked == 0 {
            return Ok(0);
        }
        // Nothing of `taken` is attempted here until this returns (`Membership::owns`), so
        // every attempt left open in it is the old owner's. On an error the partitions stay
        // marked and the next pass tries again.
        let abandoned = if taken == 0 {
            0
        } else {
            self.ledger.sync().await?;
            self.abandon(
                |key| taken & bit(partition_of(key.webhook_id)) != 0,
                "the node attempting it stopped (its lease expired)",
            )
            .await?
        };
        membership.took_over(marked);
        Ok(abandoned)
    }
}
