//! The `deliver` scenario: events published through the engine until every delivery is
//! recorded `delivered`, against a plain reqwest POST loop to the same receiver with the same
//! body and concurrency, measured in the same run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;

use super::{figure, rate, Figure};
use crate::clock::SystemClock;
use crate::delivery::engine::{Engine, EngineConfig, Publish};
use crate::delivery::guard::EgressPolicy;
use crate::delivery::sender::{Sender, SenderConfig};
use crate::delivery::signing::Secret;
use crate::error::{LedgerError, Result};
use crate::ids::{EventId, WebhookId};
use crate::ledger::writer::Commit;
use crate::ledger::Ledger;
use crate::registry::Change;

const BODY: &str = r#"{"order":{"id":12345,"total":"99.90","currency":"EUR"}}"#;

pub fn run(dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| LedgerError::Invalid(format!("cannot start a runtime: {e}")))?;
    rt.block_on(async {
        let url = receiver().await?;
        let mut figures = Vec::new();
        for (concurrency, events) in [(1usize, 300usize), (64, 4000), (512, 6000)] {
            let base = rate(events as u64, baseline(&url, concurrency, events).await?);
            let path = dir.join(format!("deliver-{concurrency}.duckdb"));
            let ours = rate(
                events as u64,
                deliver(&path, &url, concurrency, events).await?,
            );
            progress(&format!("deliver: concurrency {concurrency} done"));
            figures.push(figure(
                "deliver",
                &format!("plain reqwest loop, concurrency {concurrency} (baseline)"),
                base,
                "posts/s",
                None,
            ));
            figures.push(figure(
                "deliver",
                &format!("published and delivered, concurrency {concurrency}"),
                ours,
                "deliveries/s",
                Some(ours / base),
            ));
        }
        Ok(figures)
    })
}

async fn receiver() -> Result<String> {
    let app = Router::new().route("/hook", post(|| async { "" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| LedgerError::Invalid(format!("cannot bind the receiver: {e}")))?;
    let url = format!(
        "http://{}/hook",
        listener
            .local_addr()
            .map_err(|e| LedgerError::Invalid(e.to_string()))?
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// `total` POSTs from `concurrency` workers with one pooled client.
async fn baseline(url: &str, concurrency: usize, total: usize) -> Result<Duration> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (client, url) = (client.clone(), url.to_owned());
            let share = total / concurrency + usize::from(w < total % concurrency);
            tokio::spawn(async move {
                for _ in 0..share {
                    let _ = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(BODY)
                        .send()
                        .await
                        .map(|r| r.status());
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    Ok(started.elapsed())
}

/// Publishes `total` events from `concurrency` publishers to one webhook and waits until all
/// are recorded delivered.
async fn deliver(path: &Path, url: &str, concurrency: usize, total: usize) -> Result<Duration> {
    let clock = Arc::new(SystemClock);
    let ledger = Arc::new(Ledger::open(path, clock.clone())?);
    let webhook = WebhookId::new();
    let change = Change::Created {
        url: url.to_owned(),
        event_types: vec![],
        description: None,
        secret: Secret::generate(),
    };
    ledger
        .commit(Commit {
            changes: vec![(webhook, change)],
            ..Commit::default()
        })
        .await?;
    let sender = Sender::new(SenderConfig {
        egress: Arc::new(
            EgressPolicy::parse_allowlist("127.0.0.1")
                .map_err(|e| LedgerError::Invalid(e.to_string()))?,
        ),
        ..SenderConfig::default()
    })
    .map_err(|e| LedgerError::Invalid(e.to_string()))?;
    let config = EngineConfig {
        max_in_flight: concurrency,
        per_webhook: concurrency,
        ..EngineConfig::default()
    };
    let engine = Engine::new(ledger.clone(), sender, clock, config);
    let payload: serde_json::Value =
        serde_json::from_str(BODY).map_err(|e| LedgerError::Invalid(e.to_string()))?;
    let started = Instant::now();
    let publishers: Vec<_> = (0..concurrency)
        .map(|p| {
            let (engine, payload) = (engine.clone(), payload.clone());
            let share = total / concurrency + usize::from(p < total % concurrency);
            tokio::spawn(async move {
                for _ in 0..share {
                    let req = Publish {
                        event_id: EventId::new(),
                        event_type: "order.created".into(),
                        payload: payload.clone(),
                    };
                    engine.publish(req).await?;
                }
                Ok::<_, LedgerError>(())
            })
        })
        .collect();
    for p in publishers {
        p.await.map_err(|e| LedgerError::Invalid(e.to_string()))??;
    }
    engine.drain().await;
    let elapsed = started.elapsed();
    let delivered = ledger.state().counts().delivered;
    if delivered != total as u64 {
        return Err(LedgerError::Invalid(format!(
            "deliver: {delivered} of {total} deliveries were delivered"
        )));
    }
    Ok(elapsed)
}
