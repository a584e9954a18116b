//! Delivery settings from `HOOKLEDGER_*` environment variables, validated once at start.
//! `serve` will take the same names as flags. A bad value is an error naming the variable.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `HOOKLEDGER_RETRY_SCHEDULE` | delays between attempts, e.g. `5s,5m,30m,2h`; the attempt budget is its length + 1 | `5s,5m,30m,2h,5h,10h,10h` |
//! | `HOOKLEDGER_EGRESS_ALLOW` | hosts and CIDRs exempt from the internal-address guard | none |
//! | `HOOKLEDGER_ATTEMPT_TIMEOUT` | total deadline of one attempt (connect + send + read) | `15s` |

use std::sync::Arc;
use std::time::Duration;

use crate::delivery::backoff::RetrySchedule;
use crate::delivery::engine::EngineConfig;
use crate::delivery::guard::EgressPolicy;
use crate::delivery::sender::{SenderConfig, DEFAULT_ATTEMPT_TIMEOUT};

pub const RETRY_SCHEDULE: &str = "HOOKLEDGER_RETRY_SCHEDULE";
pub const EGRESS_ALLOW: &str = "HOOKLEDGER_EGRESS_ALLOW";
pub const ATTEMPT_TIMEOUT: &str = "HOOKLEDGER_ATTEMPT_TIMEOUT";

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
        Ok(Self {
            schedule,
            egress: Arc::new(egress),
            attempt_timeout,
        })
    }

    pub fn sender_config(&self) -> SenderConfig {
        SenderConfig {
            attempt_timeout: self.attempt_timeout,
            egress: self.egress.clone(),
            ..SenderConfig::default()
        }
    }

    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            schedule: self.schedule.clone(),
            ..EngineConfig::default()
        }
    }
}

fn parse_timeout(v: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(v.trim())
        .map_err(|e| format!("`{v}` is not a duration like 15s or 500ms ({e})"))?;
    if d.is_zero() {
        return Err("the attempt timeout must be more than zero".into());
    }
    Ok(d)
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

    #[test]
    fn a_bad_value_names_its_variable() {
        for (var, value) in [
            (RETRY_SCHEDULE, "5s,soon"),
            (EGRESS_ALLOW, "not a host!"),
            (ATTEMPT_TIMEOUT, "forever"),
            (ATTEMPT_TIMEOUT, "0s"),
        ] {
            let err = settings(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }
}
