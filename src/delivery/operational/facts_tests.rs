use super::*;
use crate::delivery::signing::Secret;
use crate::ids::EventId;
use crate::ledger::record::{ErrorClass, Failure, Terminal};

fn t(s: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(1_767_225_600 + s, 0).unwrap()
}

fn wh(n: u128) -> WebhookId {
    WebhookId(uuid::Uuid::from_u128(n))
}

fn key(w: u128) -> DeliveryKey {
    DeliveryKey::new(wh(w), EventId(uuid::Uuid::from_u128(99)))
}

fn failed(seq: u64, attempt: u16, error: &str) -> Record {
    Record {
        seq,
        recorded_at: t(seq as i64),
        key: key(1),
        body: RecordBody::Failed(Failure {
            attempt,
            status: Some(500),
            error_class: ErrorClass::Status,
            error: error.into(),
            duration_ms: 1,
            next_due_at: t(0),
            response_body: None,
        }),
    }
}

fn record(seq: u64, w: u128, body: RecordBody) -> Record {
    Record {
        seq,
        recorded_at: t(seq as i64),
        key: key(w),
        body,
    }
}

fn change(seq: u64, w: u128, change: Change) -> ChangeRecord {
    ChangeRecord {
        seq,
        recorded_at: t(seq as i64),
        webhook_id: wh(w),
        change,
    }
}

/// Webhook 7 is the operational one.
fn op(w: &WebhookId) -> bool {
    *w == wh(7)
}

fn delivered(attempt: u16) -> RecordBody {
    RecordBody::Delivered {
        attempt,
        status: 200,
        duration_ms: 1,
    }
}

#[test]
fn each_change_kind_makes_its_event_and_an_operational_webhook_makes_none() {
    let created = Change::created("http://x/h", vec![], None, Secret::generate());
    let e = of_change(&change(1, 1, created.clone()), op).unwrap();
    assert_eq!(e.kind, Kind::WebhookCreated);
    assert_eq!(e.cause, Cause::Change(1));
    assert!(
        !e.payload(None).to_string().contains("whsec_"),
        "never the secret"
    );
    assert_eq!(of_change(&change(2, 7, created), op), None, "no loop");
    let update = |active| Change::Updated {
        url: Some("http://y/h".into()),
        event_types: None,
        description: None,
        active,
        payload_format: None,
    };
    let e = of_change(&change(3, 1, update(None)), op).unwrap();
    assert_eq!(e.kind, Kind::WebhookUpdated);
    assert_eq!(e.detail["changed"], json!(["url"]));
    let e = of_change(&change(4, 1, update(Some(false))), op).unwrap();
    assert_eq!(e.kind, Kind::WebhookDeactivated);
    let gone = Change::Deactivated {
        reason: "deleted".into(),
    };
    assert_eq!(
        of_change(&change(5, 1, gone.clone()), op).unwrap().kind,
        Kind::WebhookDeactivated
    );
    assert_eq!(of_change(&change(6, 7, gone), op), None, "no loop");
    let auto = Change::AutoDisabled {
        first_failure: t(0),
        failures: 9,
        last_error: "HTTP 500".into(),
    };
    let e = of_change(&change(7, 1, auto.clone()), op).unwrap();
    assert_eq!(e.kind, Kind::WebhookAutoDisabled);
    assert_eq!(e.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(e.detail["failures"], 9);
    assert_eq!(of_change(&change(8, 7, auto), op), None, "no loop");
    let configured = Change::Configured(Default::default());
    assert_eq!(of_change(&change(9, 1, configured), op), None);
}

#[test]
fn records_make_failing_at_the_nth_failure_dead_parked_and_recovered() {
    assert_eq!(of_record(&failed(1, 3, "e"), 4, op), None);
    let e = of_record(&failed(2, 4, "HTTP 503"), 4, op).unwrap();
    assert_eq!(e.kind, Kind::DeliveryFailing);
    assert_eq!(e.last_error.as_deref(), Some("HTTP 503"));
    assert!(!e.needs_history);
    assert_eq!(
        of_record(&failed(3, 5, "e"), 4, op),
        None,
        "once, at the 4th"
    );
    let failing_op = Record {
        key: key(7),
        ..failed(4, 4, "e")
    };
    assert_eq!(of_record(&failing_op, 4, op), None, "no loop");
    assert_eq!(of_record(&record(5, 1, delivered(1)), 4, op), None);
    let dead = RecordBody::DeadParked {
        reason: "budget".into(),
    };
    assert_eq!(of_record(&record(6, 7, dead.clone()), 4, op), None);
    let history = vec![
        record(1, 1, RecordBody::Enqueued { due_at: t(0) }),
        failed(2, 1, "first"),
        failed(3, 2, "second"),
    ];
    let e = of_record(&record(4, 1, dead), 4, op).unwrap();
    assert_eq!(e.kind, Kind::DeliveryDeadParked);
    let e = e.finish(&history).unwrap();
    assert_eq!(e.last_error.as_deref(), Some("second"));
    let e = of_record(&record(4, 1, delivered(3)), 4, op).unwrap();
    assert_eq!(e.kind, Kind::DeliveryRecovered);
    assert_eq!(
        e.clone().finish(&history).unwrap().last_error.as_deref(),
        Some("second")
    );
    // Attempt 2 after a requeue, whose first attempt was cut off: nothing had failed since.
    let mut requeued = history.clone();
    requeued.push(record(
        5,
        1,
        RecordBody::Requeued {
            from: Terminal::Dead,
            due_at: t(5),
            reason: "recover".into(),
        },
    ));
    let e = of_record(&record(6, 1, delivered(2)), 4, op).unwrap();
    assert_eq!(e.finish(&requeued), None);
}

#[test]
fn an_event_id_is_a_uuid_v8_of_kind_and_cause_and_the_payload_is_the_facts() {
    let a = of_record(&failed(2, 4, "x"), 4, op).unwrap();
    let b = of_record(&failed(2, 4, "x"), 4, op).unwrap();
    assert_eq!(a.event_uuid(), b.event_uuid());
    assert_eq!(a.event_uuid().get_version_num(), 8);
    assert_eq!(
        a.payload(Some(("p1", "order"))),
        b.payload(Some(("p1", "order")))
    );
    let c = of_record(&failed(3, 4, "x"), 4, op).unwrap();
    assert_ne!(a.event_uuid(), c.event_uuid());
    let created = Change::created("http://x/h", vec![], None, Secret::generate());
    let d = of_change(&change(2, 1, created), op).unwrap();
    assert_ne!(a.event_uuid(), d.event_uuid(), "change 2 is not record 2");
    let p = a.payload(Some(("p1", "order.created")));
    assert_eq!(p["type"], "delivery.failing");
    assert_eq!(p["webhook_id"], json!(wh(1)));
    assert_eq!(p["event"]["id"], "p1");
    assert_eq!(p["event"]["type"], "order.created");
    assert_eq!(p["last_error"], "x");
    assert_eq!(p["cause"]["record_seq"], 2);
    let kinds: HashSet<&str> = Kind::ALL.iter().map(|k| k.event_type()).collect();
    assert_eq!(kinds.len(), 7);
}

use std::collections::HashSet;
