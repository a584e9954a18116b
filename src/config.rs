//! Delivery and HTTP settings from `HOOKLEDGER_*` environment variables, validated once at
//! start.
//! `serve` will take the same names as flags. A bad value is an error naming the variable.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `HOOKLEDGER_RETRY_SCHEDULE` | delays between attempts, e.g. `5s,5m,30m,2h`; the attempt budget is its length + 1 | `5s,5m,30m,2h,5h,10h,10h` |
//! | `HOOKLEDGER_EGRESS_ALLOW` | hosts and CIDRs exempt from the internal-address guard | none |
//! | `HOOKLEDGER_MAX_IN_FLIGHT` | attempts on the wire at once over all webhooks, 1 to 65536: protects this process's sockets, memory and file descriptors, and the machine | `256` |
//! | `HOOKLEDGER_MAX_IN_FLIGHT_PER_WEBHOOK` | attempts on the wire at once to one webhook without a `max_in_flight` of its own, 1 to 65536: protects the receivers | `16` |
//! | `HOOKLEDGER_ATTEMPT_TIMEOUT` | total deadline of one attempt (connect + send + read) | `15s` |
//! | `HOOKLEDGER_HEADER_TIMEOUT` | a request head must be in this long after the server starts waiting for it | `10s` |
//! | `HOOKLEDGER_BODY_TIMEOUT` | a request body must be in this long after its head | `30s` |
//! | `HOOKLEDGER_IDLE_TIMEOUT` | a connection on which nothing moved this long is closed; at most the header timeout | `10s` |
//! | `HOOKLEDGER_MAX_CONNECTIONS` | connections served at once; one more is answered 503 and closed | `1024` |
//! | `HOOKLEDGER_DISABLE_AFTER` | a webhook whose attempts all failed this long is deactivated; `0` turns it off | `5d` |
//! | `HOOKLEDGER_DISABLE_MIN_FAILURES` | ... and only with at least this many failed attempts in that span | `5` |
//! | `HOOKLEDGER_FAILING_AFTER` | a delivery whose attempt number this fails sends `delivery.failing` to the operational webhooks (at least 1) | `4` |
//! | `HOOKLEDGER_SECRET_KEY`, `_FILE` | the main key ring sealing signing secrets (read by [`crate::secrets::startup`]) | `<db>.key` |
//! | `HOOKLEDGER_SQL_URL` | the auditor role `POST /v1/sql` runs as on a PostgreSQL ledger (checked at start; read by [`crate::sql::pg::from_env`]) | none: the route answers 503 there |
//! | `HOOKLEDGER_DRAIN_LIMIT` | bytes of a refused request's body read and discarded so that the client reads the refusal | `8388608` (8 MiB) |
//! | `HOOKLEDGER_EXPORT_DIR` | `serve` seals the ledger into Parquet files in this directory ([`crate::export`]) | none (no export) |
//! | `HOOKLEDGER_EXPORT_EVERY` | ... a file once this many records are not exported yet | `100000` |
//! | `HOOKLEDGER_EXPORT_INTERVAL` | ... or once this long has passed since the last file, whichever comes first | `300s` |
//! | `HOOKLEDGER_EXPORT_BODIES` | `true`: the files also hold the events' bodies (never an expunged one) | `false` |

use std::sync::Arc;
use std::time::Duration;

use crate::delivery::backoff::RetrySchedule;
use crate::delivery::engine::{
    EngineConfig, OpsConfig, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT_PER_WEBHOOK,
};
use crate::delivery::guard::EgressPolicy;
use crate::delivery::health::{DisablePolicy, DEFAULT_DISABLE_AFTER, DEFAULT_MIN_FAILURES};
use crate::delivery::sender::{SenderConfig, DEFAULT_ATTEMPT_TIMEOUT};
use crate::registry::MAX_IN_FLIGHT_CAP;

pub const RETRY_SCHEDULE: &str = "HOOKLEDGER_RETRY_SCHEDULE";
pub const EGRESS_ALLOW: &str = "HOOKLEDGER_EGRESS_ALLOW";
pub const ATTEMPT_TIMEOUT: &str = "HOOKLEDGER_ATTEMPT_TIMEOUT";
pub const HEADER_TIMEOUT: &str = "HOOKLEDGER_HEADER_TIMEOUT";
pub const BODY_TIMEOUT: &str = "HOOKLEDGER_BODY_TIMEOUT";
pub const IDLE_TIMEOUT: &str = "HOOKLEDGER_IDLE_TIMEOUT";
pub const MAX_CONNECTIONS: &str = "HOOKLEDGER_MAX_CONNECTIONS";
pub const DRAIN_LIMIT: &str = "HOOKLEDGER_DRAIN_LIMIT";
pub const DISABLE_AFTER: &str = "HOOKLEDGER_DISABLE_AFTER";
pub const DISABLE_MIN_FAILURES: &str = "HOOKLEDGER_DISABLE_MIN_FAILURES";
pub const EXPORT_DIR: &str = "HOOKLEDGER_EXPORT_DIR";
pub const EXPORT_EVERY: &str = "HOOKLEDGER_EXPORT_EVERY";
pub const EXPORT_INTERVAL: &str = "HOOKLEDGER_EXPORT_INTERVAL";
pub const EXPORT_BODIES: &str = "HOOKLEDGER_EXPORT_BODIES";
pub const FAILING_AFTER: &str = "HOOKLEDGER_FAILING_AFTER";
pub const MAX_IN_FLIGHT: &str = "HOOKLEDGER_MAX_IN_FLIGHT";
pub const MAX_IN_FLIGHT_PER_WEBHOOK: &str = "HOOKLEDGER_MAX_IN_FLIGHT_PER_WEBHOOK";

#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

/// What the delivery engine and its sender are configured with.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    pub schedule: RetrySchedule,
    pub egress: Arc<EgressPolicy>,
    pub attempt_timeout: Duration,
    /// Auto-disable (`serve` turns it on by default).
    pub disable: DisablePolicy,
    /// The attempt whose failure sends `delivery.failing` (`crate::delivery::operational`).
    pub failing_after: u16,
    /// Attempts on the wire at once, over all webhooks (`crate::delivery::gate`).
    pub max_in_flight: usize,
    /// ... and to one webhook without a `max_in_flight` of its own.
    pub max_in_flight_per_webhook: usize,
}

impl DeliverySettings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `get` (the environment, or a map in tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let invalid = |var: &'static str| {
            move |e: &dyn std::fmt::Display| ConfigError {
                var,
                message: e.to_string(),
            }
        };
        let schedule = match get(RETRY_SCHEDULE) {
            Some(v) => RetrySchedule::parse(&v).map_err(|e| invalid(RETRY_SCHEDULE)(&e))?,
            None => RetrySchedule::default(),
        };
        let egress = match get(EGRESS_ALLOW) {
            Some(v) => EgressPolicy::parse_allowlist(&v).map_err(|e| invalid(EGRESS_ALLOW)(&e))?,
            None => EgressPolicy::default(),
        };
        let attempt_timeout = match get(ATTEMPT_TIMEOUT) {
            Some(v) => parse_timeout(&v).map_err(|e| invalid(ATTEMPT_TIMEOUT)(&e))?,
            None => DEFAULT_ATTEMPT_TIMEOUT,
        };
        let after = match get(DISABLE_AFTER) {
            Some(v) if v.trim() == "0" => None,
            Some(v) => Some(parse_timeout(&v).map_err(|e| invalid(DISABLE_AFTER)(&e))?),
            None => Some(DEFAULT_DISABLE_AFTER),
        };
        let min_failures = match get(DISABLE_MIN_FAILURES) {
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(ConfigError {
                        var: DISABLE_MIN_FAILURES,
                        message: format!("`{v}` is not a whole number of at least 1"),
                    })
                }
            },
            None => DEFAULT_MIN_FAILURES,
        };
        let failing_after = match get(FAILING_AFTER) {
            Some(v) => match v.trim().parse::<u16>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(ConfigError {
                        var: FAILING_AFTER,
                        message: format!("`{v}` is not a whole number from 1 to 65535"),
                    })
                }
            },
            None => crate::delivery::operational::DEFAULT_FAILING_AFTER,
        };
        let max_in_flight = in_flight(&get, MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT)?;
        let max_in_flight_per_webhook = in_flight(
            &get,
            MAX_IN_FLIGHT_PER_WEBHOOK,
            DEFAULT_MAX_IN_FLIGHT_PER_WEBHOOK,
        )?;
        Ok(Self {
            failing_after,
            max_in_flight,
            max_in_flight_per_webhook,
            schedule,
            egress: Arc::new(egress),
            attempt_timeout,
            disable: DisablePolicy {
                after,
                min_failures,
            },
        })
    }

    pub fn sender_config(&self) -> SenderConfig {
        SenderConfig {
            attempt_timeout: self.attempt_timeout,
            egress: self.egress.clone(),
            ..SenderConfig::default()
        }
    }

    /// The engine's operations settings, with the key ring `serve` prepared.
    pub fn ops_config(&self, keyring: Option<Arc<crate::secrets::Keyring>>) -> OpsConfig {
        OpsConfig {
            keyring,
            disable: self.disable,
        }
    }

    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            schedule: self.schedule.clone(),
            max_in_flight: self.max_in_flight,
            per_webhook: self.max_in_flight_per_webhook,
        }
    }
}

/// An in-flight limit from `var`: a whole number from 1 to [`MAX_IN_FLIGHT_CAP`] (more
/// attempts at once than one process has sockets for is a typo, not a setting).
fn in_flight(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    let Some(v) = get(var) else {
        return Ok(default);
    };
    match v.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_IN_FLIGHT_CAP).contains(&n) => Ok(n as usize),
        _ => Err(ConfigError {
            var,
            message: format!(
                "`{v}` is not a whole number of attempts from 1 to {MAX_IN_FLIGHT_CAP}"
            ),
        }),
    }
}

fn parse_timeout(v: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(v.trim())
        .map_err(|e| format!("`{v}` is not a duration like 15s or 500ms ({e})"))?;
    if d.is_zero() {
        return Err("the timeout must be more than zero".into());
    }
    Ok(d)
}

/// How the HTTP listener bounds its clients (see `api::server` and `api::drain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// From when the server starts waiting for a request head (after accept, or after the
    /// previous answer on a keep-alive connection) until the whole head is in.
    pub header_timeout: Duration,
    /// From the head until the whole body is in; it also bounds the drain of a refused body.
    pub body_timeout: Duration,
    /// A connection on which no byte moved this long is closed (a request in flight finishes).
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Bytes of an unread request body read and discarded after its answer is ready.
    pub drain_limit: usize,
}

/// The most connections `HOOKLEDGER_MAX_CONNECTIONS` may ask for (a semaphore's permits).
const MAX_MAX_CONNECTIONS: usize = 1 << 20;

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(10),
            max_connections: 1024,
            drain_limit: 8 * 1024 * 1024,
        }
    }
}

impl HttpSettings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `get` (the environment, or a map in tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let error = |var: &'static str| move |message: String| ConfigError { var, message };
        let timeout = |var: &'static str, default: Duration| match get(var) {
            Some(v) => parse_timeout(&v).map_err(error(var)),
            None => Ok(default),
        };
        let count = |var: &'static str, default: usize, min: usize, max: usize| match get(var) {
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(error(var)(format!(
                    "`{v}` is not a whole number from {min} to {max}"
                ))),
            },
            None => Ok(default),
        };
        let settings = Self {
            header_timeout: timeout(HEADER_TIMEOUT, d.header_timeout)?,
            body_timeout: timeout(BODY_TIMEOUT, d.body_timeout)?,
            idle_timeout: timeout(IDLE_TIMEOUT, d.idle_timeout)?,
            max_connections: count(MAX_CONNECTIONS, d.max_connections, 1, MAX_MAX_CONNECTIONS)?,
            drain_limit: count(DRAIN_LIMIT, d.drain_limit, 0, usize::MAX)?,
        };
        if settings.idle_timeout > settings.header_timeout {
            return Err(error(IDLE_TIMEOUT)(format!(
                "{} is longer than {HEADER_TIMEOUT} ({}): the header clock starts when a \
                 connection goes idle, so an idle connection would be closed at the header \
                 timeout anyway",
                humantime::format_duration(settings.idle_timeout),
                humantime::format_duration(settings.header_timeout)
            )));
        }
        Ok(settings)
    }
}

/// `serve`'s continuous export (see [`crate::export::run`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSettings {
    pub dir: std::path::PathBuf,
    pub every: u64,
    pub interval: Duration,
    pub bodies: bool,
}

/// The default of `HOOKLEDGER_EXPORT_INTERVAL`.
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(300);

impl ExportSettings {
    /// Reads the settings from the process environment (`None`: no `HOOKLEDGER_EXPORT_DIR`).
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `get` (the environment, or a map in tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let Some(dir) = get(EXPORT_DIR).filter(|d| !d.trim().is_empty()) else {
            return Ok(None);
        };
        let every = match get(EXPORT_EVERY) {
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(ConfigError {
                        var: EXPORT_EVERY,
                        message: format!("`{v}` is not a whole number of records, at least 1"),
                    })
                }
            },
            None => crate::export::DEFAULT_EVERY,
        };
        let interval = match get(EXPORT_INTERVAL) {
            Some(v) => parse_timeout(&v).map_err(|message| ConfigError {
                var: EXPORT_INTERVAL,
                message,
            })?,
            None => DEFAULT_EXPORT_INTERVAL,
        };
        let bodies = match get(EXPORT_BODIES).as_deref().map(str::trim) {
            None | Some("") | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(v) => {
                return Err(ConfigError {
                    var: EXPORT_BODIES,
                    message: format!("`{v}` is not true or false"),
                })
            }
        };
        Ok(Some(Self {
            dir: dir.into(),
            every,
            interval,
            bodies,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<DeliverySettings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DeliverySettings::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_without_variables() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.schedule.max_attempts(), 8);
        assert_eq!(s.attempt_timeout, Duration::from_secs(15));
        assert!(s.egress.is_empty());
        assert_eq!(s.disable.after, Some(Duration::from_secs(5 * 86_400)));
        assert_eq!(
            settings(&[(DISABLE_AFTER, "0")]).unwrap().disable.after,
            None
        );
        let s = settings(&[(DISABLE_AFTER, "1h"), (DISABLE_MIN_FAILURES, "2")]).unwrap();
        assert_eq!(s.disable.after, Some(Duration::from_secs(3600)));
        assert_eq!(s.disable.min_failures, 2);
        assert_eq!(s.failing_after, 4);
        assert_eq!(settings(&[(FAILING_AFTER, "2")]).unwrap().failing_after, 2);
        for bad in ["0", "x", "70000"] {
            let e = settings(&[(FAILING_AFTER, bad)]).unwrap_err();
            assert_eq!(e.var, FAILING_AFTER);
        }
    }

    #[test]
    fn in_flight_limits_default_are_read_into_the_engine_and_name_a_bad_variable() {
        let s = settings(&[]).unwrap();
        assert_eq!((s.max_in_flight, s.max_in_flight_per_webhook), (256, 16));
        let e = s.engine_config();
        assert_eq!((e.max_in_flight, e.per_webhook), (256, 16));
        let s = settings(&[(MAX_IN_FLIGHT, " 1000 "), (MAX_IN_FLIGHT_PER_WEBHOOK, "3")]).unwrap();
        let e = s.engine_config();
        assert_eq!((e.max_in_flight, e.per_webhook), (1000, 3));
        let cap = MAX_IN_FLIGHT_CAP.to_string();
        assert_eq!(
            settings(&[(MAX_IN_FLIGHT, &cap)]).unwrap().max_in_flight,
            65_536
        );
        for var in [MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_WEBHOOK] {
            for bad in ["0", "-1", "many", "2.5", "", "65537", "99999999999"] {
                let err = settings(&[(var, bad)]).unwrap_err();
                assert_eq!(err.var, var, "{bad}: {err}");
                assert!(err.to_string().starts_with(var), "{err}");
                assert!(err.to_string().contains("1 to 65536"), "{err}");
            }
        }
    }

    #[test]
    fn variables_are_read() {
        let s = settings(&[
            (RETRY_SCHEDULE, "1s,2s"),
            (EGRESS_ALLOW, "127.0.0.1, 10.0.0.0/8"),
            (ATTEMPT_TIMEOUT, "500ms"),
        ])
        .unwrap();
        assert_eq!(s.schedule.max_attempts(), 3);
        assert_eq!(s.attempt_timeout, Duration::from_millis(500));
        assert!(!s.egress.is_empty());
        assert_eq!(
            s.sender_config().attempt_timeout,
            Duration::from_millis(500)
        );
    }

    fn http(vars: &[(&str, &str)]) -> Result<HttpSettings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HttpSettings::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn http_settings_default_and_are_read() {
        assert_eq!(http(&[]).unwrap(), HttpSettings::default());
        let s = http(&[
            (HEADER_TIMEOUT, "300ms"),
            (BODY_TIMEOUT, "2s"),
            (IDLE_TIMEOUT, "100ms"),
            (MAX_CONNECTIONS, "4"),
            (DRAIN_LIMIT, "0"),
        ])
        .unwrap();
        assert_eq!(
            s,
            HttpSettings {
                header_timeout: Duration::from_millis(300),
                body_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_millis(100),
                max_connections: 4,
                drain_limit: 0,
            }
        );
    }

    #[test]
    fn a_bad_http_setting_names_its_variable() {
        for (vars, var) in [
            (&[(HEADER_TIMEOUT, "soon")][..], HEADER_TIMEOUT),
            (&[(BODY_TIMEOUT, "0s")][..], BODY_TIMEOUT),
            (&[(MAX_CONNECTIONS, "0")][..], MAX_CONNECTIONS),
            (&[(MAX_CONNECTIONS, "many")][..], MAX_CONNECTIONS),
            (&[(MAX_CONNECTIONS, "2000000")][..], MAX_CONNECTIONS),
            (&[(DRAIN_LIMIT, "-1")][..], DRAIN_LIMIT),
            (&[(DRAIN_LIMIT, "8MiB")][..], DRAIN_LIMIT),
            (&[(IDLE_TIMEOUT, "11s")][..], IDLE_TIMEOUT),
            (
                &[(HEADER_TIMEOUT, "1s"), (IDLE_TIMEOUT, "2s")][..],
                IDLE_TIMEOUT,
            ),
        ] {
            let err = http(vars).unwrap_err();
            assert_eq!(err.var, var, "{vars:?}: {err}");
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    fn export(vars: &[(&str, &str)]) -> Result<Option<ExportSettings>, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExportSettings::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn export_settings_default_are_read_and_name_a_bad_variable() {
        assert_eq!(export(&[]).unwrap(), None);
        assert_eq!(export(&[(EXPORT_EVERY, "5")]).unwrap(), None, "no dir");
        let s = export(&[(EXPORT_DIR, "/x")]).unwrap().unwrap();
        assert_eq!(
            (s.every, s.interval, s.bodies),
            (100_000, Duration::from_secs(300), false)
        );
        let s = export(&[
            (EXPORT_DIR, "/x"),
            (EXPORT_EVERY, "50"),
            (EXPORT_INTERVAL, "2s"),
            (EXPORT_BODIES, "true"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            s,
            ExportSettings {
                dir: "/x".into(),
                every: 50,
                interval: Duration::from_secs(2),
                bodies: true
            }
        );
        for (var, value) in [
            (EXPORT_EVERY, "0"),
            (EXPORT_EVERY, "many"),
            (EXPORT_INTERVAL, "0s"),
            (EXPORT_INTERVAL, "soon"),
            (EXPORT_BODIES, "yes please"),
        ] {
            let err = export(&[(EXPORT_DIR, "/x"), (var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{err}");
        }
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (var, value) in [
            (RETRY_SCHEDULE, "5s,soon"),
            (EGRESS_ALLOW, "not a host!"),
            (ATTEMPT_TIMEOUT, "forever"),
            (ATTEMPT_TIMEOUT, "0s"),
            (DISABLE_AFTER, "soon"),
            (DISABLE_MIN_FAILURES, "0"),
        ] {
            let err = settings(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }
}
