//! Retry schedule: owns how long to wait after a failed delivery attempt,
//! the attempt budget, and parsing of the `Retry-After` response header.
//!
//! Invariant: a [`RetrySchedule`] holds at least one delay and every delay is
//! greater than zero; its attempt budget is `delays.len() + 1` (the first
//! attempt plus one retry per delay). Everything here is pure: no clock and
//! no global randomness — callers pass `now` and the random source
//! (`fastrand::f64` in production), so results are deterministic in tests.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Environment variable read for a custom schedule, e.g. `5s,5m,30m,2h`.
pub const ENV_VAR: &str = "HOOKLEDGER_RETRY_SCHEDULE";

/// Jitter applied to scheduled delays: ±1/5 = ±20 %.
const JITTER_DIVISOR: u128 = 5;

const HOUR: u64 = 60 * 60;
/// 5s, 5m, 30m, 2h, 5h, 10h, 10h: eight attempts over about 28 hours.
const DEFAULT_DELAYS_SECS: [u64; 7] =
    [5, 5 * 60, 30 * 60, 2 * HOUR, 5 * HOUR, 10 * HOUR, 10 * HOUR];

/// Why a retry schedule string was rejected. `index` is 1-based.
#[derive(Debug, thiserror::Error)]
pub enum BackoffError {
    /// No entries at all.
    #[error("retry schedule is empty; expected comma-separated durations like `5s,5m,30m`")]
    Empty,
    /// An entry that is not a duration.
    #[error("retry schedule entry {index} `{entry}` is not a duration: {reason}")]
    BadEntry {
        /// 1-based position in the list.
        index: usize,
        /// The trimmed entry text.
        entry: String,
        /// What the duration parser objected to.
        reason: humantime::DurationError,
    },
    /// An entry that parses to zero.
    #[error("retry schedule entry {index} `{entry}` is zero; every delay must be positive")]
    ZeroDelay {
        /// 1-based position in the list.
        index: usize,
        /// The trimmed entry text.
        entry: String,
    },
}

/// Delays to wait after each failed attempt; see the module invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            delays: DEFAULT_DELAYS_SECS.map(Duration::from_secs).to_vec(),
        }
    }
}

impl RetrySchedule {
    /// Parses a comma-separated list of durations (`humantime` syntax, e.g.
    /// `5s,5m,30m,2h` or `1h 30m`); whitespace around entries is ignored.
    pub fn parse(s: &str) -> Result<Self, BackoffError> {
        if s.trim().is_empty() {
            return Err(BackoffError::Empty);
        }
        let delays = s
            .split(',')
            .enumerate()
            .map(|(i, entry)| parse_entry(i + 1, entry.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RetrySchedule { delays })
    }

    /// The delays, in order: `delays()[n - 1]` follows failed attempt `n`.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// Total attempts allowed, the first one included: `delays.len() + 1`.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// How long to wait after failed attempt number `attempt` (1-based; 0 is
    /// treated as 1), or `None` when the budget is spent
    /// (`attempt >= max_attempts()`).
    ///
    /// Without `retry_after` the scheduled delay gets ±20 % jitter from
    /// `rng`, which must return a uniform value in `[0, 1)` (values outside
    /// are clamped, NaN means no jitter). With `retry_after` (a 429/503
    /// `Retry-After`) the result is that value clamped to
    /// `[delay, 2 × delay]`, without jitter, and `rng` is not called.
    pub fn next_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut impl FnMut() -> f64,
    ) -> Option<Duration> {
        let index = usize::try_from(attempt.saturating_sub(1)).ok()?;
        let base = *self.delays.get(index)?;
        Some(match retry_after {
            Some(wanted) => wanted.clamp(base, base.saturating_mul(2)),
            None => jittered(base, rng()),
        })
    }
}

impl FromStr for RetrySchedule {
    type Err = BackoffError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RetrySchedule::parse(s)
    }
}

/// The schedule in the syntax [`RetrySchedule::parse`] accepts.
impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, delay) in self.delays.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{}", humantime::format_duration(*delay))?;
        }
        Ok(())
    }
}

fn parse_entry(index: usize, entry: &str) -> Result<Duration, BackoffError> {
    let delay = humantime::parse_duration(entry).map_err(|reason| BackoffError::BadEntry {
        index,
        entry: entry.to_owned(),
        reason,
    })?;
    if delay.is_zero() {
        return Err(BackoffError::ZeroDelay {
            index,
            entry: entry.to_owned(),
        });
    }
    Ok(delay)
}

/// `base` scaled by a factor in `[0.8, 1.2)` chosen by `r` in `[0, 1]`,
/// computed in whole nanoseconds so the upper bound stays exclusive even
/// when float rounding (or `r == 1.0`) would reach it.
fn jittered(base: Duration, r: f64) -> Duration {
    let r = if r.is_nan() { 0.5 } else { r.clamp(0.0, 1.0) };
    let nanos = base.as_nanos();
    let low = nanos - nanos / JITTER_DIVISOR;
    let span = 2 * nanos / JITTER_DIVISOR;
    let offset = ((r * span as f64) as u128).min(span.saturating_sub(1));
    duration_from_nanos(low + offset)
}

fn duration_from_nanos(nanos: u128) -> Duration {
    const PER_SEC: u128 = 1_000_000_000;
    let subsec = u32::try_from(nanos % PER_SEC).unwrap_or(0);
    u64::try_from(nanos / PER_SEC).map_or(Duration::MAX, |secs| Duration::new(secs, subsec))
}

/// Parses a `Retry-After` value: delta-seconds (`120`) or an HTTP-date
/// (`Sun, 06 Nov 1994 08:49:37 GMT`, relative to `now`). A date in the past
/// gives `Some(0)`; a delta too large for a `Duration` gives `Duration::MAX`;
/// anything else (negative, fractional, obsolete date forms) gives `None`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let when = DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&Utc).signed_duration_since(now);
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 60 * 60;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn schedule(s: &str) -> RetrySchedule {
        RetrySchedule::parse(s).expect("test schedule parses")
    }

    fn fixed(r: f64) -> impl FnMut() -> f64 {
        move || r
    }

    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) <= Duration::from_micros(1)
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-03-01T12:00:00Z")
            .expect("fixed time parses")
            .with_timezone(&Utc)
    }

    #[test]
    fn default_schedule_is_seven_delays_and_eight_attempts() {
        let s = RetrySchedule::default();
        let want = [5, 300, 1800, 2 * H, 5 * H, 10 * H, 10 * H].map(secs);
        assert_eq!(s.delays(), want);
        assert_eq!(s.max_attempts(), 8);
    }

    #[test]
    fn parse_trims_whitespace_and_counts_budget() {
        let s = schedule(" 5s, 5m ,30m,2h ");
        assert_eq!(s.delays(), [secs(5), secs(300), secs(1800), secs(2 * H)]);
        assert_eq!(s.max_attempts(), 5);
        assert_eq!(schedule("1h 30m").delays(), [secs(90 * 60)]);
        assert_eq!(schedule("250ms").delays(), [Duration::from_millis(250)]);
    }

    #[test]
    fn from_str_and_display_round_trip() {
        let s: RetrySchedule = "5s,5m,30m,2h,5h,10h,10h".parse().expect("parses");
        assert_eq!(s, RetrySchedule::default());
        assert_eq!(s.to_string(), "5s,5m,30m,2h,5h,10h,10h");
        assert_eq!(schedule(&s.to_string()), s);
    }

    #[test]
    fn parse_rejects_empty_list() {
        for bad in ["", "   ", "\n"] {
            let err = RetrySchedule::parse(bad).expect_err("empty");
            assert!(matches!(err, BackoffError::Empty), "{bad:?}: {err:?}");
        }
    }

    #[test]
    fn parse_rejects_bad_entry_naming_it() {
        let cases = [
            ("5s,abc", 2, "abc"),
            ("5s,,5m", 2, ""),
            ("5s,5m,", 3, ""),
            ("-5s", 1, "-5s"),
        ];
        for (input, at, word) in cases {
            let err = RetrySchedule::parse(input).expect_err(input);
            let BackoffError::BadEntry { index, entry, .. } = &err else {
                panic!("{input}: {err:?}");
            };
            assert_eq!((*index, entry.as_str()), (at, word), "{input}");
            assert!(
                err.to_string().contains(&format!("entry {at} `{word}`")),
                "{err}"
            );
        }
    }

    #[test]
    fn parse_rejects_zero_delay_naming_it() {
        let err = RetrySchedule::parse("5s, 0s ,5m").expect_err("zero");
        assert!(
            matches!(&err, BackoffError::ZeroDelay { index: 2, entry } if entry == "0s"),
            "{err:?}"
        );
        assert!(err.to_string().contains("`0s`"), "{err}");
    }

    #[test]
    fn jitter_at_rng_zero_is_eighty_percent() {
        let s = RetrySchedule::default();
        for (i, base) in s.delays().iter().enumerate() {
            let attempt = u32::try_from(i + 1).expect("small");
            let got = s
                .next_delay(attempt, None, &mut fixed(0.0))
                .expect("in budget");
            assert!(close(got, base.mul_f64(0.8)), "attempt {attempt}: {got:?}");
        }
        assert_eq!(s.next_delay(1, None, &mut fixed(0.0)), Some(secs(4)));
    }

    #[test]
    fn jitter_near_rng_one_stays_below_hundred_twenty_percent() {
        let s = RetrySchedule::default();
        let r = 1.0 - f64::EPSILON / 2.0;
        for (i, base) in s.delays().iter().enumerate() {
            let attempt = u32::try_from(i + 1).expect("small");
            let got = s
                .next_delay(attempt, None, &mut fixed(r))
                .expect("in budget");
            assert!(got < base.mul_f64(1.2), "attempt {attempt}: {got:?}");
            assert!(got > base.mul_f64(1.19), "attempt {attempt}: {got:?}");
        }
    }

    #[test]
    fn jitter_midpoint_is_the_scheduled_delay() {
        let s = RetrySchedule::default();
        assert_eq!(s.next_delay(2, None, &mut fixed(0.5)), Some(secs(300)));
        assert_eq!(s.next_delay(7, None, &mut fixed(0.5)), Some(secs(10 * H)));
    }

    #[test]
    fn out_of_range_rng_is_clamped_not_panicking() {
        let s = schedule("10s");
        let at = |r: f64| s.next_delay(1, None, &mut fixed(r)).expect("in budget");
        assert_eq!(at(-3.0), secs(8));
        assert_eq!(at(f64::NEG_INFINITY), secs(8));
        assert!(at(7.0) < secs(12) && at(7.0) > secs(12) - Duration::from_micros(1));
        assert!(at(f64::INFINITY) < secs(12));
        assert_eq!(at(f64::NAN), secs(10));
    }

    #[test]
    fn huge_delays_saturate_without_panic() {
        let s = RetrySchedule {
            delays: vec![Duration::MAX],
        };
        for r in [0.0, 0.5, 1.0] {
            assert!(s.next_delay(1, None, &mut fixed(r)).is_some());
        }
        let got = s.next_delay(1, Some(secs(1)), &mut fixed(0.0));
        assert_eq!(got, Some(Duration::MAX));
    }

    #[test]
    fn production_rng_stays_within_bounds() {
        let s = schedule("100s");
        for _ in 0..1000 {
            let got = s
                .next_delay(1, None, &mut fastrand::f64)
                .expect("in budget");
            assert!(got >= secs(80) && got < secs(120), "{got:?}");
        }
    }

    #[test]
    fn retry_after_is_clamped_to_base_and_twice_base_without_jitter() {
        let s = RetrySchedule::default();
        let mut calls = 0;
        let mut rng = || {
            calls += 1;
            0.0
        };
        assert_eq!(s.next_delay(2, Some(secs(1)), &mut rng), Some(secs(300)));
        assert_eq!(s.next_delay(2, Some(secs(450)), &mut rng), Some(secs(450)));
        assert_eq!(s.next_delay(2, Some(secs(9999)), &mut rng), Some(secs(600)));
        assert_eq!(
            s.next_delay(2, Some(Duration::MAX), &mut rng),
            Some(secs(600))
        );
        assert_eq!(
            s.next_delay(1, Some(Duration::ZERO), &mut rng),
            Some(secs(5))
        );
        assert_eq!(calls, 0, "Retry-After path must not use jitter");
    }

    #[test]
    fn budget_end_returns_none() {
        let s = RetrySchedule::default();
        assert!(s.next_delay(7, None, &mut fixed(0.5)).is_some());
        for attempt in [8, 9, u32::MAX] {
            assert_eq!(s.next_delay(attempt, None, &mut fixed(0.5)), None);
            assert_eq!(s.next_delay(attempt, Some(secs(60)), &mut fixed(0.5)), None);
        }
        let short = schedule("1s");
        assert_eq!(short.max_attempts(), 2);
        assert!(short.next_delay(1, None, &mut fixed(0.5)).is_some());
        assert_eq!(short.next_delay(2, None, &mut fixed(0.5)), None);
    }

    #[test]
    fn attempt_zero_is_treated_as_first() {
        let s = RetrySchedule::default();
        assert_eq!(s.next_delay(0, None, &mut fixed(0.5)), Some(secs(5)));
    }

    #[test]
    fn retry_after_delta_seconds() {
        assert_eq!(parse_retry_after("120", now()), Some(secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now()), Some(secs(0)));
        let huge = "99999999999999999999999";
        assert_eq!(parse_retry_after(huge, now()), Some(Duration::MAX));
    }

    #[test]
    fn retry_after_http_date() {
        let future = "Fri, 01 Mar 2024 12:01:30 GMT";
        assert_eq!(parse_retry_after(future, now()), Some(secs(90)));
        let past = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_retry_after(past, now()), Some(Duration::ZERO));
        let same = "Fri, 01 Mar 2024 12:00:00 GMT";
        assert_eq!(parse_retry_after(same, now()), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_rejects_garbage() {
        for bad in [
            "",
            "soon",
            "-5",
            "+5",
            "1.5",
            "5s",
            "Friday, 01-Mar-24 12:01:30 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now()), None, "{bad:?}");
        }
    }
}
