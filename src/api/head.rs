//! `GET /v1/ledger/head`: the ledger's head (last seq, the chain hash of the link ending there,
//! when it was committed), for an outside system to keep. A hash chain alone cannot tell a log
//! cut short together with its last links from a shorter log; a head kept elsewhere can, with
//! `hookledger verify --expect-head SEQ:HASH`.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

pub async fn head(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let ledger = state.engine.ledger().clone();
    let head = tokio::task::spawn_blocking(move || ledger.head())
        .await
        .map_err(|e| ApiError::from(crate::LedgerError::Invalid(e.to_string())))??;
    Ok(Json(json!({
        "seq": head.seq,
        "chain_hash": hex::encode(head.hash),
        "committed_at": head.committed_at,
        "anchor": head.anchor(),
    })))
}
