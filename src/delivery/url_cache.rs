//! The sender's memo of parsed receiver URLs.
//!
//! Parsing a URL (IDNA included) was about 6.6% of the tokio workers' samples in a `deliver`
//! profile, repeated on every attempt for the same handful of webhook URLs. This module owns a
//! small map from the URL text to its parsed [`Url`], shared by every clone of the sender.
//!
//! Invariants:
//! - **A hit is exactly what a fresh parse would return.** Parsing is a pure function of the
//!   text, so the memo only saves work; only successful parses are kept, so a bad URL is
//!   re-parsed (and reported with its parse error) every time.
//! - **Bounded.** Past [`CAPACITY`] entries the map is emptied before the next insert, so URLs
//!   that come and go (webhooks edited many times over a long run) cannot grow it without end.
//! - The egress check is not memoised: it runs on every attempt, on the parsed URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use reqwest::Url;

/// The most URLs kept before the memo starts over.
pub const CAPACITY: usize = 10_000;

/// A shared memo of parsed URLs; clones share one map.
#[derive(Debug, Clone, Default)]
pub struct UrlCache {
    parsed: Arc<Mutex<HashMap<Box<str>, Url>>>,
}

impl UrlCache {
    /// The parsed form of `raw`, from the memo or from a fresh parse.
    pub fn parse(&self, raw: &str) -> Result<Url, url::ParseError> {
        if let Some(url) = self.lock().get(raw) {
            return Ok(url.clone());
        }
        let url = Url::parse(raw)?;
        let mut parsed = self.lock();
        if parsed.len() >= CAPACITY {
            parsed.clear();
        }
        parsed.insert(raw.into(), url.clone());
        Ok(url)
    }

    /// How many URLs are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is kept.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Url>> {
        // The map is always left whole (one get or one insert per lock), so a panic elsewhere
        // while it was held cannot have broken it.
        self.parsed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_equals_a_fresh_parse() {
        let cache = UrlCache::default();
        let raw = "https://BÜCHER.example:443/a/../hook?x=1";
        let first = cache.parse(raw).unwrap();
        let second = cache.parse(raw).unwrap();
        assert_eq!(first, Url::parse(raw).unwrap());
        assert_eq!(second, first);
        assert_eq!(second.as_str(), "https://xn--bcher-kva.example/hook?x=1");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_bad_url_is_reported_every_time_and_not_kept() {
        let cache = UrlCache::default();
        for _ in 0..2 {
            let err = cache.parse("http://[::1").unwrap_err();
            assert_eq!(err, url::ParseError::InvalidIpv6Address);
        }
        assert!(cache.is_empty());
    }

    #[test]
    fn clones_share_one_memo_and_it_stays_bounded() {
        let cache = UrlCache::default();
        let clone = cache.clone();
        for i in 0..CAPACITY {
            clone.parse(&format!("https://h{i}.example/")).unwrap();
        }
        assert_eq!(cache.len(), CAPACITY);
        let url = cache.parse("https://one-more.example/").unwrap();
        assert_eq!(url.host_str(), Some("one-more.example"));
        assert_eq!(cache.len(), 1, "a full memo starts over");
    }
}
