//! The head anchor: `hookledger head` prints `SEQ:HASH`; `verify --expect-head` passes on the
//! original file and fails on a copy whose tail (records and their chain links) was removed,
//! which a plain `verify` cannot tell from a shorter log. `GET /v1/ledger/head` on the real
//! server needs the token and answers what `hookledger head` prints, an anchor `verify` takes.

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

#[test]
fn the_http_head_needs_the_token_and_matches_the_cli_head() {
    use crate::serve::{call, get, Server};
    let mut t = TestLedger::new();
    // Finished deliveries only, so the server has nothing to append while it runs.
    one_delivered_one_dead(&t);
    let live_head = t.ledger().head().unwrap();
    assert_eq!(live_head.seq, 7);
    t.close();

    let server = Server::start(&t.path);
    let url = format!("{}/v1/ledger/head", server.base);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for token in [None, Some("wrong-token-0123456789")] {
        let (status, body) = runtime.block_on(call(reqwest::Method::GET, &url, token, None));
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(
            !body.to_string().contains(&hex::encode(live_head.hash)),
            "{body}"
        );
    }
    let (status, answer) = runtime.block_on(get(&url));
    assert_eq!(status, 200, "{answer}");
    assert!(server.stop().success());

    assert_eq!(answer["seq"], 7, "{answer}");
    assert_eq!(answer["anchor"], live_head.anchor().as_str(), "{answer}");
    assert_eq!(answer["chain_hash"], hex::encode(live_head.hash).as_str());
    let printed = hookledger(&["head", "--json"], &t.path);
    assert_eq!(printed.status.code(), Some(0), "{printed:?}");
    let cli: serde_json::Value = serde_json::from_str(&stdout(&printed)).unwrap();
    assert_eq!(answer, cli, "the API and the CLI give the same head");
    let anchor = answer["anchor"].as_str().unwrap();
    let verified = hookledger(&["verify", "--expect-head", anchor], &t.path);
    assert_eq!(verified.status.code(), Some(0), "{verified:?}");
}
