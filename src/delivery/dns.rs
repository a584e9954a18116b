//! The system resolver as the egress guard uses it: `getaddrinfo` on tokio's blocking pool, at
//! most [`MAX_LOOKUPS`] at once over the whole process.
//!
//! `getaddrinfo` cannot be cancelled. When a resolver does not answer, each lookup holds its
//! blocking thread for the resolver's full timeout (10 s with glibc's defaults, 5 s times two
//! tries) although the attempt that asked gave up at its own timeout (`HOOKLEDGER_ATTEMPT_TIMEOUT`)
//! and the next attempt asks again. Unbounded, 256 attempts in flight to names that never
//! resolve filled tokio's blocking pool (512 threads), and the API's ledger reads, which run on
//! that pool, queued behind them: `.ci/contract` saw a deliveries listing answer after 10.2 s, and
//! a recover after 27 s, on a machine whose resolver drops queries (inferred from the
//! deliveries' `timeout` class; a resolver here that never answers held a lookup 10.4 s).
//!
//! Invariant: at most [`MAX_LOOKUPS`] blocking threads are ever inside `getaddrinfo`. The permit
//! moves into the blocking closure and is released when the call returns, not when the caller
//! stops waiting, so a lookup abandoned at a timeout still counts until it really ends. A caller
//! that finds every permit taken waits without a thread, and its own timeout still applies.

use std::io;
use std::net::{IpAddr, ToSocketAddrs};

use tokio::sync::Semaphore;

use super::guard::{BoxFuture, Lookup};

/// Lookups inside `getaddrinfo` at once. A lookup that answers takes about a millisecond, so 32
/// at once resolve thousands of new connections a second; when the resolver hangs, 32 threads
/// wait on it and the other 480 of the blocking pool stay for ledger reads.
pub const MAX_LOOKUPS: usize = 32;

static LOOKUPS: Semaphore = Semaphore::const_new(MAX_LOOKUPS);

/// The system resolver (`getaddrinfo`), bounded by [`MAX_LOOKUPS`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let host = host.to_owned();
        Box::pin(bounded(&LOOKUPS, move || {
            Ok((host.as_str(), 0)
                .to_socket_addrs()?
                .map(|a| a.ip())
                .collect())
        }))
    }
}

/// Runs `resolve` on the blocking pool once `limit` has a permit, holding it until `resolve`
/// returns.
async fn bounded<T: Send + 'static>(
    limit: &'static Semaphore,
    resolve: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let permit = limit
        .acquire()
        .await
        .map_err(|_| io::Error::other("the resolver's permits are closed"))?;
    tokio::task::spawn_blocking(move || {
        let answer = resolve();
        drop(permit);
        answer
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use super::*;

    /// Lookups that hang are abandoned by their callers' timeouts, yet never more than the limit
    /// of them run at once, and the next lookup starts only when a hung one really returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_lookups_keep_their_permits_until_they_return() {
        static LIMIT: Semaphore = Semaphore::const_new(3);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Barrier::new(3 + 1));
        for _ in 0..10 {
            let (running, most, release) = (running.clone(), most.clone(), release.clone());
            let hung = bounded(&LIMIT, move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                release.wait();
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            });
            // The caller gives up, as an attempt does at its timeout.
            let gave_up = tokio::time::timeout(Duration::from_millis(1), hung).await;
            assert!(gave_up.is_err(), "the lookup cannot have returned yet");
        }
        // Three lookups hold the three permits; the seven others never started.
        assert_eq!(LIMIT.available_permits(), 0);
        let waited = tokio::time::timeout(Duration::from_millis(50), LIMIT.acquire()).await;
        assert!(
            waited.is_err(),
            "a permit was free while three lookups hung"
        );
        // The hung lookups return: their permits come back.
        tokio::task::spawn_blocking(move || release.wait())
            .await
            .unwrap();
        let permit = tokio::time::timeout(Duration::from_secs(30), LIMIT.acquire())
            .await
            .expect("a permit comes back when a hung lookup returns")
            .unwrap();
        drop(permit);
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }

    /// The system lookup answers `localhost` (from the hosts file, without the network).
    #[tokio::test]
    async fn the_system_lookup_resolves_localhost() {
        let ips = SystemLookup.lookup("localhost").await.unwrap();
        assert!(ips.iter().any(|ip| ip.is_loopback()), "{ips:?}");
    }
}
