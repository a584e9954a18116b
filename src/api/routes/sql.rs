//! `POST /v1/sql`: one read-only query over the ledger's tables and audit views, run inside the
//! serving process on a reader connection of its own (see [`crate::sql`]): the answer as JSON,
//! or CSV with `Accept: text/csv`. A query that would write, reach outside the ledger or read a
//! secret is refused with 400 naming the reason, and nothing runs. On a PostgreSQL ledger it runs
//! as the auditor role of `HOOKLEDGER_SQL_URL` ([`crate::sql::pg`]), 503 without one.

use aide::axum::routing::post_with;
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{blocking, ApiResult, Refusals};
use crate::api::error::ApiError;
use crate::api::extract::Json;
use crate::api::openapi::SortedJson;
use crate::api::scope::Scope;
use crate::api::AppState;
use crate::sql::{self, Answer, Limits, SqlError};
use crate::store::any::AnyStore;

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new().api_route(
        "/sql",
        post_with(query, |op| {
            op.summary("Run one read-only SQL query over the ledger")
                .description(
                    "One SELECT over the ledger's tables and audit views; anything that writes, \
                     reads files or the network, or touches a secret is refused with 400. At most \
                     `limit` rows (default and maximum 10,000; `truncated` says when the answer \
                     was cut), 10 s and 128 MiB of intermediates. `Accept: text/csv` answers CSV.",
                )
                .response::<200, SortedJson<Answer>>()
                .refuses(&[400, 403, 422, 503])
        }),
    )
}

/// The longest query text accepted, in bytes.
const MAX_QUERY: usize = 100_000;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlQuery {
    /// One SELECT statement.
    #[schemars(length(min = 1, max = 100000))]
    query: String,
    /// Rows at most: 1 to 10,000 (the default).
    #[schemars(range(min = 1, max = 10000))]
    limit: Option<usize>,
}

async fn query(
    State(state): State<AppState>,
    scope: Scope,
    headers: HeaderMap,
    body: Result<Json<SqlQuery>, ApiError>,
) -> ApiResult<Response> {
    scope.operator()?;
    let Json(req) = body?;
    if req.query.is_empty() || req.query.len() > MAX_QUERY {
        return Err(ApiError::invalid(
            "query",
            format!("must be 1 to {MAX_QUERY} bytes"),
        ));
    }
    let max = Limits::default().rows;
    let rows = match req.limit {
        None => max,
        Some(n) if (1..=max).contains(&n) => n,
        Some(_) => return Err(ApiError::invalid("limit", format!("must be 1 to {max}"))),
    };
    let reader = state.engine.ledger().reader()?;
    let limits = Limits {
        rows,
        ..Limits::default()
    };
    let on_pg = matches!(reader, AnyStore::Pg(_));
    let answer = match (on_pg, state.sql_url.clone()) {
        (false, _) => {
            blocking(move || Ok(sql::run(reader.connection(), &req.query, limits))).await?
        }
        (true, Some(url)) => {
            drop(reader);
            blocking(move || Ok(sql::pg::run(&url, &req.query, limits))).await?
        }
        (true, None) => return Err(unavailable()),
    }
    .map_err(refused)?;
    let csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    Ok(if csv {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            sql::render::csv(&answer),
        )
            .into_response()
    } else {
        SortedJson(answer).into_response()
    })
}

/// A PostgreSQL ledger whose server was not given an auditor role.
fn unavailable() -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "sql_unavailable",
        message: format!(
            "SQL on a PostgreSQL ledger runs as a read-only auditor role: start the server with {} \
             (schema/pg/auditor.sql makes the role)",
            sql::pg::SQL_URL
        ),
        field: None,
    }
}

fn refused(e: SqlError) -> ApiError {
    let code = match &e {
        SqlError::Refused(_) => "sql_refused",
        SqlError::TimedOut(_) => "sql_timed_out",
        SqlError::Failed(_) => "sql_failed",
    };
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code,
        message: e.to_string(),
        field: Some("query".into()),
    }
}
