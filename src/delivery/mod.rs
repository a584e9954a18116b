//! Everything that talks to receivers: Standard Webhooks signing, the retry schedule, and the
//! URL guard that keeps deliveries away from internal addresses and its bounded system resolver, the HTTP sender and its memo of parsed URLs, the concurrency
//! gates (slots on the wire, attempts recorded ahead of them), the rate limits' token buckets, the FIFO webhooks' lines, the records an
//! attempt's outcome becomes, the failing spans behind auto-disable, the operational events sent to operational webhooks, and the engine that publishes, attempts, re-drives, parks and
//! recovers.

pub mod backoff;
pub mod bodies;
pub mod dns;
pub mod engine;
pub mod envelope;
pub mod fifo;
pub mod gate;
pub mod guard;
pub mod health;
pub mod operational;
pub mod outcome;
pub mod rate;
pub mod sender;
pub mod signing;
pub mod url_cache;
