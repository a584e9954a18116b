//! The head anchor: `hookledger head` prints `SEQ:HASH`; `verify --expect-head` passes on the
//! original file and fails on a copy whose tail (records and their chain links) was removed,
//! which a plain `verify` cannot tell from a shorter log.

use hookledger::store::duck::{DuckStore, OpenMode};

use crate::common::*;

#[test]
fn expect_head_passes_on_the_original_and_fails_on_a_copy_with_its_tail_removed() {
    let mut t = TestLedger::new();
    for n in 1..=6 {
        t.publish(n, &[webhook(1)]).unwrap();
        t.advance(1);
    }
    let live_head = t.ledger().head().unwrap();
    assert_eq!(live_head.seq, 6);
    t.close();

    let printed = hookledger(&["head"], &t.path);
    assert_eq!(printed.status.code(), Some(0), "{printed:?}");
    let anchor = stdout(&printed).lines().next().unwrap().to_owned();
    assert_eq!(anchor, live_head.anchor());
    assert!(anchor.starts_with("6:"), "{anchor}");

    let copy = t.dir.path().join("copy.duckdb");
    std::fs::copy(&t.path, &copy).unwrap();
    {
        let store = DuckStore::open(&copy, OpenMode::ReadWrite).unwrap();
        store
            .connection()
            .execute_batch(
                "DELETE FROM webhook_deliveries WHERE seq > 4; \
                 DELETE FROM ledger_batches WHERE last_seq > 4;",
            )
            .unwrap();
    }
    let plain = hookledger(&["verify"], &copy);
    assert_eq!(
        plain.status.code(),
        Some(0),
        "a shorter log verifies: {plain:?}"
    );

    let original = hookledger(&["verify", "--expect-head", &anchor], &t.path);
    assert_eq!(original.status.code(), Some(0), "{original:?}");
    let cut = hookledger(&["verify", "--expect-head", &anchor], &copy);
    assert_eq!(cut.status.code(), Some(1), "{cut:?}");
    let text = stdout(&cut);
    assert!(text.contains("expected head 6:"), "{text}");

    // A head that never existed fails too, and a malformed one is an error.
    let forged = format!("6:{}", "00".repeat(32));
    assert_eq!(
        hookledger(&["verify", "--expect-head", &forged], &t.path)
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        hookledger(&["verify", "--expect-head", "6:zz"], &t.path)
            .status
            .code(),
        Some(2)
    );
}
