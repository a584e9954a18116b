//! The process allocator's settings: the binary runs on mimalloc (`src/main.rs`, with the
//! `mimalloc` crate's `override` feature, so DuckDB's C++ `malloc`/`free` go to it too), and
//! this module sets the one option that differs from mimalloc's defaults.
//!
//! Why mimalloc: a profile of `serve` under `bench --scenario deliver-http` put glibc's
//! `malloc`/`free` and their helpers at about 22 % of the process, in Rust and in C++ alike;
//! with mimalloc `bench --scenario deliver` spends about a quarter less CPU per delivery
//! (README, "Allocator").
//!
//! Invariant kept: once `serve` is ready, memory freed by a burst goes back to the OS within a
//! fraction of a second. The bundled mimalloc (v3) waits 1 s before purging freed pages, and the
//! `slow_clients` test then caught a flood's memory still resident when it looked (2 failures in
//! 8 runs); at [`SERVING_PURGE_DELAY_MS`] it passed 5 of 5, for the same CPU per delivery within
//! the noise. A delay of 0 (purge at every free) cost more CPU than glibc did (184 against
//! 165 µs a delivery).
//!
//! The start-up fold is the other way round: it allocates and frees DuckDB's Arrow buffers in a
//! stream, and a 10 ms purge made it re-fault the pages it had just freed (`clear_page` about
//! 8 % of its profile; a 2 M-record fold 0.99-1.40 s against 0.90-1.00 s with 1 s). So
//! [`configure`] starts the process at [`STARTUP_PURGE_DELAY_MS`], and `serve` calls
//! [`settle`] once its fold is done: the serving delay, and a forced collection that returns
//! at once what the fold freed (the history bench found 201 / 237 MB resident once ready at
//! 1 M / 2 M records without it, 98 / 81 MB with it). An operator's `MIMALLOC_PURGE_DELAY` wins
//! over both delays.

use libmimalloc_sys::{mi_collect, mi_option_get, mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (v2 and v3).
const PURGE_DELAY: mi_option_t = 15;

/// Milliseconds mimalloc waits before returning freed pages to the OS while the process
/// starts (folding the ledger): mimalloc v3's own default.
pub const STARTUP_PURGE_DELAY_MS: i64 = 1000;

/// The same once `serve` is ready (mimalloc v2's default).
pub const SERVING_PURGE_DELAY_MS: i64 = 10;

/// The environment variable with which an operator overrides the purge delay.
pub const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Sets mimalloc's options for the start of the process. Call once, first thing in `main`.
pub fn configure() {
    set_purge_delay(STARTUP_PURGE_DELAY_MS);
}

/// Sets the purge delay for serving and returns to the OS, at once, the pages the fold freed
/// under the long delay: call once the start-up fold is done.
pub fn settle() {
    set_purge_delay(SERVING_PURGE_DELAY_MS);
    // SAFETY: mi_collect(true) frees the calling thread's heap's unused pages, purges them
    // and collects abandoned heaps; it touches no live allocation.
    unsafe { mi_collect(true) };
}

fn set_purge_delay(ms: i64) {
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        // SAFETY: mi_option_set only stores an integer in mimalloc's option table.
        unsafe { mi_option_set(PURGE_DELAY, ms as _) };
    }
}

/// The purge delay in force, in milliseconds (as mimalloc reads it: from the environment, or
/// as [`configure`] set it).
pub fn purge_delay_ms() -> i64 {
    // SAFETY: mi_option_get reads mimalloc's option table (reading the environment on first
    // use).
    unsafe { mi_option_get(PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs [`probe`] in a child of this test binary, so that mimalloc reads the given
    /// environment on its first use, and returns the delay before [`configure`], after it and
    /// after [`settle`].
    fn probe_with(env: Option<&str>) -> (i64, i64, i64) {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "alloc::tests::probe", "--ignored", "--nocapture"])
            .env("HOOKLEDGER_ALLOC_PROBE", "1")
            .env_remove(PURGE_DELAY_ENV);
        if let Some(value) = env {
            cmd.env(PURGE_DELAY_ENV, value);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "probe failed: {out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("delay "))
            .unwrap_or_else(|| panic!("no probe line in {stdout}"));
        let delays: Vec<i64> = line.split(" -> ").map(|d| d.parse().unwrap()).collect();
        (delays[0], delays[1], delays[2])
    }

    #[test]
    #[ignore = "run by the tests below in a child process"]
    fn probe() {
        if std::env::var_os("HOOKLEDGER_ALLOC_PROBE").is_none() {
            return;
        }
        let before = purge_delay_ms();
        configure();
        let starting = purge_delay_ms();
        settle();
        println!("delay {before} -> {starting} -> {}", purge_delay_ms());
    }

    #[test]
    fn the_purge_delay_is_long_while_starting_and_short_once_settled() {
        let (_, starting, serving) = probe_with(None);
        assert_eq!(starting, STARTUP_PURGE_DELAY_MS);
        assert_eq!(serving, SERVING_PURGE_DELAY_MS);
    }

    #[test]
    fn an_operators_mimalloc_purge_delay_wins() {
        assert_eq!(probe_with(Some("250")), (250, 250, 250));
    }
}
