//! Who made a registry change: the actor stored in every `webhook_changes` row of format 3.
//!
//! The actor is decided where the change is asked for, never by the caller's say-so:
//! - `operator`: a request with the operator token (`HOOKLEDGER_API_TOKEN`);
//! - `token:<token id>`: a request with a token scoped to one app, named by the token's id
//!   (the id `POST /v1/apps/{app}/tokens` answered and the token list shows), never by its
//!   value or digest;
//! - `system:<what>`: a change hookledger makes itself: `system:auto_disable` (a webhook
//!   deactivated after failing for too long, see [`crate::delivery::engine`]) and
//!   `system:reseal` (secrets sealed again under a new main key when `serve` starts);
//! - `cli`: a CLI command that writes the registry (none does today: the CLI reads it).
//!
//! A change travels to the writer as [`super::Change::By`] (the actor and the bare change);
//! the writer stores the actor in the row, whose chain link covers it, and every fold sees the
//! bare change. Rows written before format 3 have no actor (`None`, shown as null).

use std::fmt;

use uuid::Uuid;

/// Who made a registry change.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    /// The operator token.
    Operator,
    /// An app-scoped token, by id.
    Token(Uuid),
    /// hookledger itself; the text says what (`auto_disable`, `reseal`).
    System(&'static str),
    /// A CLI command.
    Cli,
}

/// The actor of auto-disable.
pub const AUTO_DISABLE: Actor = Actor::System("auto_disable");
/// The actor of the start-up re-seal of secrets.
pub const RESEAL: Actor = Actor::System("reseal");

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Operator => f.write_str("operator"),
            Actor::Token(id) => write!(f, "token:{id}"),
            Actor::System(what) => write!(f, "system:{what}"),
            Actor::Cli => f.write_str("cli"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_are_written_as_their_documented_text() {
        let id = Uuid::from_u128(0xabc);
        assert_eq!(Actor::Operator.to_string(), "operator");
        assert_eq!(
            Actor::Token(id).to_string(),
            "token:00000000-0000-0000-0000-000000000abc"
        );
        assert_eq!(AUTO_DISABLE.to_string(), "system:auto_disable");
        assert_eq!(RESEAL.to_string(), "system:reseal");
        assert_eq!(Actor::Cli.to_string(), "cli");
    }
}
