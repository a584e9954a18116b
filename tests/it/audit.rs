//! The SQL views for auditors, and the three example queries the README shows, run against a
//! real ledger file (so the README cannot drift from the schema).

use hookledger::store::duck::{DuckStore, OpenMode};

use crate::common::*;

/// The README's example queries, verbatim.
const HISTORY: &str = "SELECT seq, recorded_at, kind, attempt, status_code, error_class \
    FROM delivery_history WHERE webhook_id = ?::UUID AND event_id = ?::UUID ORDER BY seq";
const FAILURES: &str = "SELECT webhook_id, error_class, count(*) AS failures \
    FROM attempt_outcomes WHERE NOT ok AND recorded_at > now()::TIMESTAMP - INTERVAL 24 HOUR \
    GROUP BY ALL ORDER BY failures DESC";
const P99: &str =
    "SELECT webhook_id, quantile_cont(duration_ms, 0.99) AS p99_ms, count(*) AS attempts \
    FROM attempt_outcomes GROUP BY webhook_id ORDER BY p99_ms DESC";

#[test]
fn the_readme_queries_answer_from_the_audit_views() {
    let mut t = TestLedger::new();
    t.clock.set(chrono::Utc::now());
    t.publish(1, &[webhook(1), webhook(2)]).unwrap();
    for w in [1, 2] {
        t.append(key(w, 1), attempted(1)).unwrap();
    }
    t.append(key(1, 1), failed(1, 503, t.now())).unwrap();
    t.append(key(2, 1), delivered(1)).unwrap();
    t.append(key(1, 1), attempted(2)).unwrap();
    t.append(key(1, 1), delivered(2)).unwrap();
    t.close();
    let store = DuckStore::open(&t.path, OpenMode::ReadOnly).unwrap();
    let conn = store.connection();

    let mut stmt = conn.prepare(HISTORY).unwrap();
    let kinds: Vec<String> = stmt
        .query_map([webhook(1).to_string(), event(1).to_string()], |r| {
            r.get::<_, String>(2)
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        kinds,
        ["enqueued", "attempted", "failed", "attempted", "delivered"]
    );

    let mut stmt = conn.prepare(FAILURES).unwrap();
    let failures: Vec<(String, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        failures,
        [(webhook(1).to_string(), "status".to_string(), 1)]
    );

    let mut stmt = conn.prepare(P99).unwrap();
    let rows: Vec<(String, f64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows.iter().map(|r| r.2).sum::<i64>(), 3, "three outcomes");

    let latest: i64 = conn
        .query_row(
            "SELECT count(*) FROM delivery_latest WHERE kind = 'delivered'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(latest, 2);
    let secret_columns: i64 = conn
        .query_row(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_name = 'webhook_history' AND column_name = 'secret'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(secret_columns, 0, "the registry view shows no secrets");
}
