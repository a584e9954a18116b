//! The edges of erasure: the retention policy (`HOOKLEDGER_BODY_RETENTION`, [`retention`]) and
//! the `hookledger expunge` command ([`cli`]). Both only ask the writer for
//! [`crate::ledger::expunge::ExpungeOrder`]s; what an expunge is, where its fact lives and what
//! `verify` checks is [`crate::ledger::expunge`]'s, and how the bytes leave the file is
//! `crate::store::duck`'s (`expunges.rs`).

pub mod cli;
pub mod retention;
