//! Signing secrets at rest, through the real binary: the database file holds no secret in
//! plaintext (its bytes searched after a DuckDB CHECKPOINT), a wrong or missing main key
//! refuses to start naming `HOOKLEDGER_SECRET_KEY`, `hookledger verify` passes without the
//! key, a main-key rotation re-seals the secrets as new rows and signatures keep verifying,
//! and a plaintext database is sealed forward under a key file generated beside it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hookledger::clock::ManualClock;
use hookledger::delivery::signing::Secret;
use hookledger::ids::WebhookId;
use hookledger::ledger::writer::Commit;
use hookledger::ledger::Ledger;
use hookledger::registry::Change;
use hookledger::secrets::Keyring;
use serde_json::json;

use crate::ops_common::{contains_bytes, serve_expecting_exit, Hit, Receiver};
use crate::serve_child::{assert_cli_verify, post_json, ServeChild};

const KEY_VAR: &str = "HOOKLEDGER_SECRET_KEY";
const BOUND: Duration = Duration::from_secs(60);

/// The kind and stored secret of every registry row, in order.
fn secret_rows(db: &Path) -> Vec<(String, Option<String>)> {
    let c = duckdb::Connection::open(db).unwrap();
    let mut stmt = c
        .prepare("SELECT kind, secret FROM webhook_changes ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The database file's bytes (and its WAL's, if any) after a CHECKPOINT.
fn file_bytes(db: &Path) -> Vec<u8> {
    duckdb::Connection::open(db)
        .unwrap()
        .execute_batch("CHECKPOINT")
        .unwrap();
    let mut bytes = std::fs::read(db).unwrap();
    let mut wal = db.as_os_str().to_owned();
    wal.push(".wal");
    if let Ok(w) = std::fs::read(&wal) {
        bytes.extend(w);
    }
    bytes
}

/// The key bytes behind `whsec_<base64>`.
fn key_bytes(secret: &Secret) -> Vec<u8> {
    use base64::Engine;
    let text = secret.expose();
    base64::engine::general_purpose::STANDARD
        .decode(text.trim_start_matches("whsec_"))
        .unwrap()
}

fn assert_signed_by_one_of(hits: &[Hit], secrets: &[&Secret]) {
    for h in hits {
        let ok = secrets.iter().filter(|s| {
            standardwebhooks::Webhook::new(&s.expose())
                .unwrap()
                .verify(&h.body, &h.headers)
                .is_ok()
        });
        assert_eq!(
            ok.count(),
            1,
            "each request verifies with its webhook's secret"
        );
    }
}

async fn publish(client: &reqwest::Client, base: &str, n: u32) {
    let (status, body) = post_json(
        client,
        &format!("{base}/v1/events"),
        &json!({ "event_type": "order.created", "payload": { "n": n } }),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_in_the_file_refused_with_a_wrong_key_and_survive_a_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.duckdb");
    let log = dir.path().join("serve.log");
    let (k1, k2) = (Keyring::generate_key(), Keyring::generate_key());
    let (rx, url) = Receiver::start(0, 0.0, 1).await;
    let client = reqwest::Client::new();
    let egress = ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1");

    let serve = ServeChild::start(&db, &[(KEY_VAR, &k1), egress], &log);
    let chosen = Secret::generate();
    let (status, _) = post_json(
        &client,
        &format!("{}/v1/webhooks", serve.base),
        &json!({ "url": url, "secret": chosen.expose() }),
    )
    .await;
    assert_eq!(status, 201);
    let (status, created) = post_json(
        &client,
        &format!("{}/v1/webhooks", serve.base),
        &json!({ "url": url }),
    )
    .await;
    assert_eq!(status, 201);
    let generated = Secret::parse(created["secret"].as_str().unwrap()).unwrap();
    publish(&client, &serve.base, 1).await;
    assert!(rx.wait_for(2, BOUND).await);
    assert_signed_by_one_of(&rx.hits(), &[&chosen, &generated]);
    assert!(serve.stop().success());

    // No secret, in text or as key bytes, anywhere in the file; the column holds sealed text.
    let bytes = file_bytes(&db);
    for s in [&chosen, &generated] {
        let text = s.expose();
        assert!(!contains_bytes(
            &bytes,
            text.trim_start_matches("whsec_").as_bytes()
        ));
        assert!(!contains_bytes(&bytes, &key_bytes(s)));
    }
    let rows = secret_rows(&db);
    let sealed: Vec<&String> = rows.iter().filter_map(|(_, s)| s.as_ref()).collect();
    assert_eq!(sealed.len(), 2, "{rows:?}");
    assert!(
        sealed.iter().all(|s| s.starts_with("hlsealed1.")),
        "{rows:?}"
    );

    // Verify and audit need no key.
    assert_cli_verify(&db, "without the main key");

    // A wrong key, or none (no key file beside it either), refuses to start, naming the
    // variable, and writes nothing.
    for env in [vec![(KEY_VAR, k2.as_str())], vec![]] {
        let (ok, text) = serve_expecting_exit(&db, &env, BOUND);
        assert!(!ok, "{text}");
        assert!(text.contains(KEY_VAR), "{text}");
        assert!(!text.contains(&k1) && !text.contains(&k2), "{text}");
    }
    assert!(!dir.path().join("ledger.duckdb.key").exists());
    assert_eq!(secret_rows(&db), rows, "a refused start wrote nothing");

    // Rotation: the new key first, the old one after it. The secrets are re-sealed as new rows
    // and keep signing.
    let both = format!("{k2},{k1}");
    let serve = ServeChild::start(&db, &[(KEY_VAR, &both), egress], &log);
    publish(&client, &serve.base, 2).await;
    assert!(rx.wait_for(4, BOUND).await);
    assert!(serve.stop().success());
    let after = secret_rows(&db);
    assert_eq!(&after[..rows.len()], &rows[..], "append-only");
    let resealed: Vec<_> = after[rows.len()..].iter().collect();
    assert_eq!(resealed.len(), 2, "{after:?}");
    assert!(resealed.iter().all(|(k, _)| k == "secret_resealed"));

    // The old key can go now.
    let serve = ServeChild::start(&db, &[(KEY_VAR, &k2), egress], &log);
    publish(&client, &serve.base, 3).await;
    assert!(rx.wait_for(6, BOUND).await);
    assert!(serve.stop().success());
    assert_signed_by_one_of(&rx.hits(), &[&chosen, &generated]);
    assert_eq!(
        secret_rows(&db).len(),
        after.len(),
        "nothing more to re-seal"
    );
    assert_cli_verify(&db, "after the rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_database_is_sealed_forward_under_a_key_file_generated_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.duckdb");
    let log = dir.path().join("serve.log");
    let (rx, url) = Receiver::start(0, 0.0, 1).await;
    let client = reqwest::Client::new();
    let egress = ("HOOKLEDGER_EGRESS_ALLOW", "127.0.0.1");
    // A database written before sealing: the secret in plaintext.
    let secret = Secret::generate();
    let (path, plain, to) = (db.clone(), secret.clone(), url.clone());
    tokio::task::spawn_blocking(move || {
        let ledger = Ledger::open(&path, Arc::new(ManualClock::at_epoch())).unwrap();
        ledger
            .commit_blocking(Commit {
                changes: vec![(WebhookId::new(), Change::created(to, vec![], None, plain))],
                ..Commit::default()
            })
            .unwrap();
        ledger.close();
    })
    .await
    .unwrap();

    let serve = ServeChild::start(&db, &[egress], &log);
    let key_file = dir.path().join("ledger.duckdb.key");
    assert!(
        key_file.exists(),
        "a key file is generated beside the database"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    publish(&client, &serve.base, 1).await;
    assert!(rx.wait_for(1, BOUND).await);
    assert!(serve.stop().success());
    assert_signed_by_one_of(&rx.hits(), &[&secret]);
    let rows = secret_rows(&db);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0].1.as_ref().unwrap().starts_with("whsec_"),
        "the old row stays"
    );
    assert_eq!(rows[1].0, "secret_resealed");
    assert!(rows[1].1.as_ref().unwrap().starts_with("hlsealed1."));

    // The next start uses the file; without it, the start is refused.
    let serve = ServeChild::start(&db, &[egress], &log);
    publish(&client, &serve.base, 2).await;
    assert!(rx.wait_for(2, BOUND).await);
    assert!(serve.stop().success());
    assert_signed_by_one_of(&rx.hits(), &[&secret]);
    assert_eq!(secret_rows(&db).len(), 2);
    std::fs::remove_file(&key_file).unwrap();
    let (ok, text) = serve_expecting_exit(&db, &[], BOUND);
    assert!(!ok && text.contains(KEY_VAR), "{text}");
    assert_cli_verify(&db, "a sealed-forward database");
}
