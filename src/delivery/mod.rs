//! Everything that talks to receivers: Standard Webhooks signing, the retry schedule, and the
//! URL guard that keeps deliveries away from internal addresses, the HTTP sender, and the
//! engine that publishes, attempts, re-drives, parks and recovers.

pub mod backoff;
pub mod engine;
pub mod guard;
pub mod sender;
pub mod signing;
