//! Erasure and retention (issue 15, points 3 and 4) on real DuckDB files: after an expunge the
//! body's bytes are gone from the file (searched in its raw bytes, and found there before),
//! `verify` passes, a changed remaining body still fails it, pending deliveries are parked,
//! a requeue is refused `BodyExpunged` (410), and the fact is stored and chained.

use std::path::Path;

use hookledger::error::LedgerError;
use hookledger::ids::WebhookId;
use hookledger::ledger::expunge::{ExpungeOrder, OPERATOR, PARK_REASON};
use hookledger::ledger::record::{RecordBody, Terminal};
use hookledger::ledger::verify;
use hookledger::ledger::writer::{Commit, NewEvent};
use hookledger::store::duck::{DuckStore, OpenMode};
use hookledger::store::Store;

use crate::common::*;

/// A body no compression turns into other bytes in a small file: a high-entropy token.
fn body(n: u128) -> Vec<u8> {
    let token: String = (0..48).map(|_| fastrand::alphanumeric()).collect();
    format!("{{\"n\":{n},\"secret\":\"{token}\"}}").into_bytes()
}

/// Publishes event `n` with `body` to `webhooks`.
fn publish(t: &TestLedger, n: u128, body: &[u8], webhooks: &[WebhookId]) {
    let mut commit = publish_commit(n, webhooks, t.now());
    commit.events = vec![NewEvent {
        event_id: event(n),
        event_type: "order.created".into(),
        body: body.to_vec(),
        format: Some(1),
        ..Default::default()
    }];
    t.commit(commit).unwrap();
}

fn order(n: u128) -> Commit {
    Commit {
        expunge: vec![ExpungeOrder {
            event_id: event(n),
            actor: OPERATOR.into(),
            reason: "erasure request #1".into(),
        }],
        ..Commit::default()
    }
}

/// How often `needle` occurs in the database file and its WAL.
fn occurrences(path: &Path, needle: &[u8]) -> usize {
    let wal = path.with_extension("duckdb.wal");
    [path.to_path_buf(), wal]
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|bytes| bytes.windows(needle.len()).filter(|w| *w == needle).count())
        .sum()
}

/// Ten events with their bodies; event 3 pending on webhook 1, event 4 delivered.
fn ledger_with_bodies() -> (TestLedger, Vec<Vec<u8>>) {
    let t = TestLedger::new();
    let mut bodies = Vec::new();
    for n in 1..=10 {
        let b = body(n);
        let hooks: &[WebhookId] = if n == 3 || n == 4 { &[webhook(1)] } else { &[] };
        publish(&t, n, &b, hooks);
        bodies.push(b);
    }
    t.append(key(1, 4), attempted(1)).unwrap();
    t.append(key(1, 4), delivered(1)).unwrap();
    // Everything checkpointed into the file: the bodies are findable there, not only in the WAL.
    t.ledger()
        .reader()
        .unwrap()
        .connection()
        .unwrap()
        .execute_batch("CHECKPOINT")
        .unwrap();
    (t, bodies)
}

#[test]
fn an_expunged_body_leaves_the_file_and_verify_still_passes() {
    let (mut t, bodies) = ledger_with_bodies();
    let secret = |n: usize| bodies[n - 1][bodies[n - 1].len() - 50..].to_vec();
    assert_eq!(
        occurrences(&t.path, &secret(3)),
        1,
        "the search finds a stored body"
    );
    let receipt = t.commit(order(3)).unwrap();
    assert_eq!(receipt.expunges, vec![1]);
    assert_eq!(
        receipt.parked,
        Vec::new(),
        "parked by the order, not by `park`"
    );
    assert_eq!(
        receipt.seqs.len(),
        1,
        "the pending delivery got its `parked`"
    );
    assert_eq!(occurrences(&t.path, &secret(3)), 0, "gone while serving");
    assert_eq!(occurrences(&t.path, &secret(5)), 1, "the others stay");
    let history = t.ledger().history(key(1, 3)).unwrap();
    assert_eq!(
        history.last().unwrap().body,
        RecordBody::Parked {
            reason: PARK_REASON.into()
        }
    );
    let verdict = t.ledger().verify().unwrap();
    assert!(verdict.ok(), "{verdict}");
    let fact = t
        .ledger()
        .reader()
        .unwrap()
        .expunge_of(event(3))
        .unwrap()
        .unwrap();
    assert_eq!((fact.seq, fact.actor.as_str()), (1, OPERATOR));
    assert_eq!(
        fact.body_digest,
        hookledger::ledger::chain::body_digest(&bodies[2])
    );
    let stored = t.ledger().reader().unwrap().events(&[event(3)]).unwrap();
    assert!(stored[0].expunged && stored[0].body.is_empty());
    t.close();
    assert_eq!(occurrences(&t.path, &secret(3)), 0, "gone after close");
    t.reopen();
    let verdict = t.ledger().verify().unwrap();
    assert!(verdict.ok(), "{verdict}");
}

#[test]
fn an_expunge_is_refused_for_an_unknown_or_expunged_event_and_writes_nothing() {
    let (t, _) = ledger_with_bodies();
    assert!(matches!(
        t.commit(order(99)),
        Err(LedgerError::UnknownEvent(_))
    ));
    t.commit(order(5)).unwrap();
    let seq = t.ledger().state().last_seq();
    assert!(matches!(
        t.commit(order(5)),
        Err(LedgerError::BodyExpunged(_))
    ));
    assert_eq!(t.ledger().state().last_seq(), seq);
    let facts = t.ledger().reader().unwrap().last_expunge().unwrap();
    assert_eq!(facts.map(|(s, _)| s), Some(1));
}

#[test]
fn a_requeue_of_an_expunged_event_is_refused_gone() {
    let (t, _) = ledger_with_bodies();
    t.commit(order(4)).unwrap();
    let requeue = t.append(key(1, 4), requeued(Terminal::Delivered, t.now()));
    assert!(
        matches!(requeue, Err(LedgerError::BodyExpunged(e)) if e == event(4)),
        "{requeue:?}"
    );
    let api = hookledger::api::error::ApiError::from(LedgerError::BodyExpunged(event(4)));
    assert_eq!((api.status.as_u16(), api.code), (410, "body_expunged"));
}

/// Closes the ledger and runs `sql` on the file, then verifies it.
fn tamper_and_verify(t: &mut TestLedger, sql: &str) -> verify::Verdict {
    t.close();
    {
        let store = DuckStore::open(&t.path, OpenMode::ReadWrite).unwrap();
        store.connection().execute_batch(sql).unwrap();
    }
    let store = DuckStore::open(&t.path, OpenMode::ReadOnly).unwrap();
    verify::verify(&store, None).unwrap()
}

#[test]
fn a_changed_remaining_body_still_fails_verify() {
    let (mut t, _) = ledger_with_bodies();
    t.commit(order(3)).unwrap();
    let n = 6u128;
    let verdict = tamper_and_verify(
        &mut t,
        &format!(
            "UPDATE events SET body = '{{\"changed\":1}}'::BLOB WHERE event_id = '{}'",
            event(n).0
        ),
    );
    let p = verdict.problem.expect("a changed body is found");
    assert_eq!(p.seq, 6, "{p:?}");
    assert!(p.reason.contains("digest"), "{p:?}");
}

#[test]
fn a_body_removed_without_a_fact_or_a_forged_fact_fails_verify() {
    let (mut t, _) = ledger_with_bodies();
    t.commit(order(3)).unwrap();
    let verdict = tamper_and_verify(
        &mut t,
        &format!(
            "UPDATE events SET body = NULL WHERE event_id = '{}'",
            event(7).0
        ),
    );
    assert_eq!(verdict.problem.expect("no fact").seq, 7);
    let mut t2 = ledger_with_bodies().0;
    t2.commit(order(3)).unwrap();
    let verdict = tamper_and_verify(&mut t2, "UPDATE event_expunges SET reason = 'other'");
    let p = verdict.problem.expect("a changed fact");
    assert_eq!(p.log, verify::Log::Expunges, "{p:?}");
}

#[test]
fn expunge_on_the_command_line_erases_and_verify_passes() {
    let (mut t, bodies) = ledger_with_bodies();
    t.close();
    let secret = bodies[7][bodies[7].len() - 50..].to_vec();
    assert_eq!(occurrences(&t.path, &secret), 1);
    let id = event(8).0.to_string();
    let out = hookledger(&["expunge", &id, "--reason", "ticket 42"], &t.path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("fact 1"), "{}", stdout(&out));
    assert_eq!(occurrences(&t.path, &secret), 0);
    let out = hookledger(&["verify"], &t.path);
    assert!(out.status.success(), "{}", stdout(&out));
    let out = hookledger(&["expunge", &id, "--reason", " "], &t.path);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reason"));
}

#[test]
fn an_event_stored_with_an_old_link_can_be_expunged_and_verifies() {
    let t = TestLedger::new();
    let old = body(1);
    // The old shape (no format, no digest): written as before schema 5.
    let mut commit = publish_commit(1, &[], t.now());
    commit.events = vec![NewEvent::stored_as_sent(
        event(1),
        "order.created",
        old.clone(),
    )];
    t.commit(commit).unwrap();
    publish(&t, 2, &body(2), &[]);
    let mut t = t;
    t.close();
    {
        // Make event 1 an old-link event, as a file of schema 4 holds it.
        let store = DuckStore::open(&t.path, OpenMode::ReadWrite).unwrap();
        let mut e = store.events(&[event(1)]).unwrap().remove(0);
        e.body_digest = None;
        let prev = hookledger::ledger::chain::event_genesis();
        let h = hookledger::ledger::chain::event_link(&prev, &e);
        let mut next = store.events(&[event(2)]).unwrap().remove(0);
        let h2 = hookledger::ledger::chain::event_link(&h, &next);
        next.hash = h2;
        store
            .connection()
            .execute_batch(&format!(
                "UPDATE events SET body_digest = NULL, hash = from_hex('{}') WHERE seq = 1; \
                 UPDATE events SET hash = from_hex('{}') WHERE seq = 2;",
                hex::encode(h),
                hex::encode(h2)
            ))
            .unwrap();
        assert!(verify::verify(&store, None).unwrap().ok());
    }
    t.reopen();
    t.commit(order(1)).unwrap();
    let verdict = t.ledger().verify().unwrap();
    assert!(verdict.ok(), "{verdict}");
    let fact = t
        .ledger()
        .reader()
        .unwrap()
        .expunge_of(event(1))
        .unwrap()
        .unwrap();
    assert_eq!(fact.link_version, 1);
    let verdict = tamper_and_verify(
        &mut t,
        "UPDATE event_expunges SET event_hash = from_hex('00'), hash = hash",
    );
    assert!(
        verdict.problem.is_some(),
        "a fact that no longer names the event's hash"
    );
}

#[test]
fn retention_expunges_old_finished_bodies_by_the_clock_and_keeps_the_rest() {
    use hookledger::erasure::retention::{run_once, Retention};
    let (mut t, bodies) = ledger_with_bodies();
    let secret = |n: usize| bodies[n - 1][bodies[n - 1].len() - 50..].to_vec();
    let policy = Retention::parse("30d").unwrap().unwrap();
    t.advance(29 * 86_400);
    publish(&t, 11, &body(11), &[]);
    assert_eq!(
        run_once(t.ledger(), &t.clock, &policy).unwrap(),
        0,
        "nothing old enough"
    );
    t.advance(2 * 86_400);
    // Events 1-10 are 31 days old; 3 is pending (kept), 11 is 2 days old (kept).
    assert_eq!(run_once(t.ledger(), &t.clock, &policy).unwrap(), 9);
    for n in [1, 2, 4, 5, 10] {
        assert_eq!(occurrences(&t.path, &secret(n)), 0, "event {n}");
    }
    assert_eq!(
        occurrences(&t.path, &secret(3)),
        1,
        "a pending delivery keeps its body"
    );
    let reader = t.ledger().reader().unwrap();
    let fact = reader.expunge_of(event(4)).unwrap().unwrap();
    assert_eq!(fact.actor, "policy:body_retention=30d");
    assert!(reader.expunge_of(event(11)).unwrap().is_none());
    let verdict = t.ledger().verify().unwrap();
    assert!(verdict.ok(), "{verdict}");
    assert_eq!(
        run_once(t.ledger(), &t.clock, &policy).unwrap(),
        0,
        "once only"
    );
    let verdict = tamper_and_verify(
        &mut t,
        &format!(
            "UPDATE events SET body = 'x'::BLOB WHERE event_id = '{}'",
            event(11).0
        ),
    );
    assert!(
        verdict.problem.is_some(),
        "a changed remaining body still fails"
    );
}

#[tokio::test]
async fn the_route_erases_once_refuses_bad_input_and_redeliver_answers_410() {
    use crate::serve::{call, get, post_json, receiver, wait_for, Server, TOKEN};
    use reqwest::Method;
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("serve.duckdb");
    let server = Server::start(&db);
    let (url, got) = receiver().await;
    let (s, hook) = post_json(&format!("{}/v1/webhooks", server.base), json!({"url": url})).await;
    assert_eq!(s, 201, "{hook}");
    let token: String = (0..48).map(|_| fastrand::alphanumeric()).collect();
    let id = "0190a000-0000-7000-8000-0000000000aa";
    let event = json!({"event_id": id, "event_type": "order.created", "payload": {"t": token}});
    let (s, _) = post_json(&format!("{}/v1/events", server.base), event).await;
    assert_eq!(s, 202);
    wait_for(&got, 1).await;
    let body_url = format!("{}/v1/events/{id}/body", server.base);
    let delete = |body: serde_json::Value| call(Method::DELETE, &body_url, Some(TOKEN), Some(body));
    let (s, e) = delete(json!({"reason": ""})).await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (422, Some("reason")),
        "{e}"
    );
    let (s, _) = call(
        Method::DELETE,
        &body_url,
        None,
        Some(json!({"reason": "x"})),
    )
    .await;
    assert_eq!(s, 401);
    let (s, status) = get(&body_url).await;
    assert_eq!(
        (s, &status["expunged"]),
        (200, &serde_json::json!(false)),
        "{status}"
    );
    let (s, fact) = delete(json!({"reason": "GDPR erasure request 7"})).await;
    assert_eq!(s, 200, "{fact}");
    assert_eq!(fact["fact"]["actor"], "operator");
    assert_eq!(fact["fact"]["reason"], "GDPR erasure request 7");
    let (s, e) = delete(json!({"reason": "again"})).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (410, Some("body_expunged")),
        "{e}"
    );
    let unknown = format!("{}/v1/events/no-such-event/body", server.base);
    let (s, _) = call(
        Method::DELETE,
        &unknown,
        Some(TOKEN),
        Some(json!({"reason": "x"})),
    )
    .await;
    assert_eq!(s, 404);
    let (s, status) = get(&body_url).await;
    assert_eq!((s, &status["expunged"]), (200, &json!(true)), "{status}");
    let hook_id = hook["id"].as_str().unwrap();
    let redeliver = format!("{}/v1/deliveries/{hook_id}/{id}/redeliver", server.base);
    let (s, e) = post_json(&redeliver, json!({})).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (410, Some("body_expunged")),
        "{e}"
    );
    // The delivery's audit trail shows the expunge's fact.
    let (s, trail) = get(&format!("{}/v1/deliveries/{hook_id}/{id}", server.base)).await;
    assert_eq!(s, 200, "{trail}");
    assert_eq!(trail["body_expunged"]["actor"], "operator", "{trail}");
    assert_eq!(
        trail["body_expunged"]["seq"], status["fact"]["seq"],
        "{trail}"
    );
    assert!(server.stop().success());
    assert_eq!(
        occurrences(&db, token.as_bytes()),
        0,
        "the payload left the file"
    );
    let out = hookledger(&["verify"], &db);
    assert!(out.status.success(), "{}", stdout(&out));
}
