//! `/v1/apps...`: the applications that own webhooks (create, list, read, change, delete)
//! and their scoped tokens (issue, list, revoke). Every change is a registry change row,
//! chained like a webhook's.
//!
//! Creating, listing and deleting apps and managing tokens need the operator token; a scoped
//! token may read and change its own app only (another app answers 404, see
//! [`crate::api::scope`]). A token's value is in one answer only, the one that issues it; what
//! is stored and listed is its id and SHA-256 digest.

use aide::axum::routing::{delete_with, get_with, post_with};
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{parse_id, ApiResult, Refusals};
use crate::api::error::ApiError;
use crate::api::extract::{Json, Path};
use crate::api::openapi::SortedJson;
use crate::api::scope::{no_app, Scope};
use crate::api::AppState;
use crate::ids::{AppUid, WebhookId};
use crate::ledger::record::Timestamp;
use crate::ledger::writer::Commit;
use crate::registry::apps::{generate_token, App, Token};
use crate::registry::Change;

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/apps",
            post_with(create_app, |op| {
                op.summary("Create an app (operator token)")
                    .description("Its `uid` is the producer's, and is never reused once deleted.")
                    .response::<201, SortedJson<AppView>>()
                    .refuses(&[403, 409, 422])
            })
            .get_with(list_apps, |op| {
                op.summary("List the apps (operator token)").refuses(&[403])
            }),
        )
        .api_route(
            "/apps/{app}",
            get_with(get_app, |op| op.summary("An app").refuses(&[404]))
                .patch_with(patch_app, |op| {
                    op.summary("Change an app's name or metadata")
                        .refuses(&[404, 422])
                })
                .delete_with(delete_app, |op| {
                    op.summary("Delete an app (operator token)")
                        .description(
                            "409 while it has active webhooks, and for the `default` app; \
                             its tokens stop working.",
                        )
                        .refuses(&[403, 404, 409])
                }),
        )
        .api_route(
            "/apps/{app}/tokens",
            post_with(issue_token, |op| {
                op.summary("Issue a token that sees only this app (operator token)")
                    .description("The answer carries the token's value, shown only here.")
                    .response::<201, SortedJson<TokenIssued>>()
                    .refuses(&[403, 404])
            })
            .get_with(list_tokens, |op| {
                op.summary("The app's tokens, without their values (operator token)")
                    .refuses(&[403, 404])
            }),
        )
        .api_route(
            "/apps/{app}/tokens/{token_id}",
            delete_with(revoke_token, |op| {
                op.summary("Revoke a token (operator token)")
                    .description("409 when it is revoked already.")
                    .refuses(&[403, 404, 409, 422])
            }),
        )
}

/// `{app}`: an app's uid.
#[derive(Deserialize, JsonSchema)]
pub struct AppPath {
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:~-]{1,256}$"))]
    #[allow(dead_code)] // read by the `Scope` extractor
    app: String,
}

/// `{app}/tokens/{token_id}`.
#[derive(Deserialize, JsonSchema)]
pub struct TokenPath {
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:~-]{1,256}$"))]
    #[allow(dead_code)] // read by the `Scope` extractor
    app: String,
    #[schemars(with = "uuid::Uuid")]
    token_id: String,
}

/// The most bytes an app's metadata takes, as compact JSON.
const MAX_METADATA: usize = 16 * 1024;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApp {
    /// The producer's id for it: 1 to 256 characters of `[A-Za-z0-9._:~-]`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:~-]{1,256}$"))]
    uid: String,
    /// For people; the uid when absent.
    #[schemars(length(min = 1, max = 256))]
    name: Option<String>,
    /// A JSON object of up to 16 KiB; `{}` when absent.
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppPatch {
    #[schemars(length(min = 1, max = 256))]
    name: Option<String>,
    /// Replaces the metadata whole.
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An app as the API shows it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "App")]
pub struct AppView {
    uid: String,
    name: String,
    metadata: serde_json::Value,
    /// Null for the `default` app until it is first changed.
    created_at: Option<Timestamp>,
    updated_at: Option<Timestamp>,
}

impl From<&App> for AppView {
    fn from(a: &App) -> Self {
        Self {
            uid: a.uid.to_string(),
            name: a.name.clone(),
            metadata: a.metadata.clone(),
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

#[derive(Serialize, JsonSchema)]
pub struct AppList {
    /// The `default` app first, then by uid.
    data: Vec<AppView>,
}

fn check_name(name: &Option<String>) -> ApiResult<()> {
    match name {
        Some(n) if n.is_empty() || n.chars().count() > 256 => {
            Err(ApiError::invalid("name", "must be 1 to 256 characters"))
        }
        _ => Ok(()),
    }
}

fn metadata_text(m: &serde_json::Map<String, serde_json::Value>) -> ApiResult<String> {
    let text =
        serde_json::to_string(m).map_err(|e| ApiError::invalid("metadata", e.to_string()))?;
    if text.len() > MAX_METADATA {
        return Err(ApiError::invalid(
            "metadata",
            format!("is {} bytes as JSON, over {MAX_METADATA}", text.len()),
        ));
    }
    Ok(text)
}

/// Appends one app or token change (its row's webhook id is nil), made by the request's actor.
async fn commit_app_change(
    state: &AppState,
    scope: &Scope,
    change: Change,
) -> ApiResult<Timestamp> {
    let commit = Commit {
        changes: vec![(WebhookId(Uuid::nil()), change.by(scope.actor()))],
        ..Commit::default()
    };
    Ok(state.engine.ledger().commit(commit).await?.recorded_at)
}

fn conflict(message: String) -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        code: "conflict",
        message,
        field: None,
    }
}

/// The registry's own check of `change`, answered as a 409 before anything is committed.
fn precheck(state: &AppState, change: &Change) -> ApiResult<()> {
    let registry = state.engine.ledger().shared().read_registry();
    registry
        .check(WebhookId(Uuid::nil()), change)
        .map_err(conflict)
}

fn app_view(state: &AppState, app: &AppUid) -> ApiResult<AppView> {
    let registry = state.engine.ledger().shared().read_registry();
    let found = registry
        .apps()
        .live(app)
        .ok_or_else(|| no_app(app.as_str()))?;
    Ok(found.into())
}

async fn create_app(
    State(state): State<AppState>,
    scope: Scope,
    Json(req): Json<NewApp>,
) -> ApiResult<(StatusCode, SortedJson<AppView>)> {
    scope.operator()?;
    let app = AppUid::parse(&req.uid).ok_or_else(|| {
        ApiError::invalid("uid", "must be 1 to 256 characters of [A-Za-z0-9._:~-]")
    })?;
    check_name(&req.name)?;
    let metadata = metadata_text(&req.metadata.unwrap_or_default())?;
    let change = Change::AppCreated {
        name: req.name.unwrap_or_else(|| app.to_string()),
        app: app.clone(),
        metadata,
    };
    precheck(&state, &change)?;
    commit_app_change(&state, &scope, change).await?;
    Ok((StatusCode::CREATED, SortedJson(app_view(&state, &app)?)))
}

async fn list_apps(State(state): State<AppState>, scope: Scope) -> ApiResult<SortedJson<AppList>> {
    scope.operator()?;
    let registry = state.engine.ledger().shared().read_registry();
    let data = registry
        .apps()
        .all()
        .into_iter()
        .map(AppView::from)
        .collect();
    Ok(SortedJson(AppList { data }))
}

async fn get_app(
    State(state): State<AppState>,
    scope: Scope,
    Path(_): Path<AppPath>,
) -> ApiResult<SortedJson<AppView>> {
    Ok(SortedJson(app_view(&state, &scope.app())?))
}

async fn patch_app(
    State(state): State<AppState>,
    scope: Scope,
    Path(_): Path<AppPath>,
    body: Result<Json<AppPatch>, ApiError>,
) -> ApiResult<SortedJson<AppView>> {
    let Json(patch) = body?;
    check_name(&patch.name)?;
    let metadata = patch.metadata.as_ref().map(metadata_text).transpose()?;
    let app = scope.app();
    let change = Change::AppUpdated {
        app: app.clone(),
        name: patch.name,
        metadata,
    };
    precheck(&state, &change)?;
    commit_app_change(&state, &scope, change).await?;
    Ok(SortedJson(app_view(&state, &app)?))
}

/// A deleted app.
#[derive(Serialize, JsonSchema)]
pub struct AppDeleted {
    uid: String,
    deleted: bool,
}

async fn delete_app(
    State(state): State<AppState>,
    scope: Scope,
    Path(_): Path<AppPath>,
) -> ApiResult<SortedJson<AppDeleted>> {
    scope.operator()?;
    let app = scope.app();
    let change = Change::AppDeleted { app: app.clone() };
    precheck(&state, &change)?;
    commit_app_change(&state, &scope, change).await?;
    Ok(SortedJson(AppDeleted {
        uid: app.to_string(),
        deleted: true,
    }))
}

/// A scoped token as listed: never its value.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Token")]
pub struct TokenView {
    id: Uuid,
    app: String,
    created_at: Timestamp,
    /// Set once it is revoked; it authenticates nothing after that.
    revoked_at: Option<Timestamp>,
}

impl From<&Token> for TokenView {
    fn from(t: &Token) -> Self {
        Self {
            id: t.id,
            app: t.app.to_string(),
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// A new token and its value, shown only in this answer.
#[derive(Serialize, JsonSchema)]
pub struct TokenIssued {
    #[serde(flatten)]
    token: TokenView,
    /// `hlt_` and 64 hex digits: send it as `Authorization: Bearer <token>`.
    token_value: String,
}

#[derive(Serialize, JsonSchema)]
pub struct TokenList {
    /// By id (issue order), revoked ones included.
    data: Vec<TokenView>,
}

async fn issue_token(
    State(state): State<AppState>,
    scope: Scope,
    Path(_): Path<AppPath>,
) -> ApiResult<(StatusCode, SortedJson<TokenIssued>)> {
    scope.operator()?;
    let app = scope.app();
    let (value, digest) = generate_token();
    let id = Uuid::now_v7();
    let change = Change::TokenIssued {
        app,
        token: id,
        digest,
    };
    precheck(&state, &change)?;
    commit_app_change(&state, &scope, change).await?;
    let registry = state.engine.ledger().shared().read_registry();
    let token = registry
        .apps()
        .token(&id)
        .map(TokenView::from)
        .ok_or_else(|| ApiError::not_found(format!("no token {id}")))?;
    let issued = TokenIssued {
        token,
        token_value: value,
    };
    Ok((StatusCode::CREATED, SortedJson(issued)))
}

async fn list_tokens(
    State(state): State<AppState>,
    scope: Scope,
    Path(_): Path<AppPath>,
) -> ApiResult<SortedJson<TokenList>> {
    scope.operator()?;
    let app = scope.app();
    let registry = state.engine.ledger().shared().read_registry();
    let data = registry
        .apps()
        .tokens_of(&app)
        .map(TokenView::from)
        .collect();
    Ok(SortedJson(TokenList { data }))
}

async fn revoke_token(
    State(state): State<AppState>,
    scope: Scope,
    Path(path): Path<TokenPath>,
) -> ApiResult<SortedJson<TokenView>> {
    scope.operator()?;
    let app = scope.app();
    let id: Uuid = parse_id("token_id", &path.token_id)?;
    let known = {
        let registry = state.engine.ledger().shared().read_registry();
        registry.apps().token(&id).is_some_and(|t| t.app == app)
    };
    if !known {
        return Err(ApiError::not_found(format!("no token {id} in app {app}")));
    }
    let change = Change::TokenRevoked {
        app: app.clone(),
        token: id,
    };
    precheck(&state, &change)?;
    commit_app_change(&state, &scope, change).await?;
    let registry = state.engine.ledger().shared().read_registry();
    let token = registry.apps().token(&id).map(TokenView::from);
    token
        .map(SortedJson)
        .ok_or_else(|| ApiError::not_found(format!("no token {id}")))
}
