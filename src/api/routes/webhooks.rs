//! `/v1/webhooks...` (and under `/v1/apps/{app}`): register, list, read, change, delete, rotate
//! a secret, recover a window and send a test. A webhook is registered into the request's app
//! and is found only by requests that may see that app (another app's answers 404). The signing secret appears in two answers only (register and rotate); the
//! webhook views never carry it.
//!
//! `max_in_flight` (1 to 65536; absent or `null`: the process default,
//! `HOOKLEDGER_MAX_IN_FLIGHT_PER_WEBHOOK`) bounds the webhook's attempts on the wire at once, to
//! protect its receiver; a PATCH takes effect before it answers, without a restart.

use aide::axum::routing::{get_with, post_with};
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::events::{check_event_types, event_types_schema, optional_event_types_schema};
use super::{parse_id, timestamp, ApiResult, Refusals};
use crate::api::error::ApiError;
use crate::api::extract::{Json, Path, Query};
use crate::api::openapi::SortedJson;
use crate::api::scope::Scope;
use crate::api::AppState;
use crate::delivery::guard::SystemLookup;
use crate::delivery::signing::Secret;
use crate::ids::WebhookId;
use crate::ledger::record::{RecordBody, Timestamp};
use crate::ledger::writer::{Commit, Receipt};
use crate::registry::{
    Change, OptionsChange, Ordering, PayloadFormat, Registry, Webhook, MAX_IN_FLIGHT_CAP,
};

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/webhooks",
            post_with(create_webhook, |op| {
                op.summary("Register a webhook")
                    .description("The answer carries its signing secret, shown only here.")
                    .response::<201, SortedJson<WebhookCreated>>()
                    .refuses(&[403, 422])
            })
            .get_with(list_webhooks, |op| {
                op.summary("List the webhooks")
                    .description("`app` narrows the list to one app (404 if it does not exist).")
                    .refuses(&[404])
            }),
        )
        .api_route(
            "/webhooks/{id}",
            get_with(get_webhook, |op| {
                op.summary("A webhook").refuses(&[404, 422])
            })
            .patch_with(patch_webhook, |op| {
                op.summary("Change a webhook")
                    .description("`active: false` parks its pending deliveries.")
                    .refuses(&[403, 404, 422])
            })
            .delete_with(delete_webhook, |op| {
                op.summary("Deactivate a webhook and park its pending deliveries")
                    .refuses(&[404, 422])
            }),
        )
        .api_route(
            "/webhooks/{id}/rotate-secret",
            post_with(rotate_secret, |op| {
                op.summary("A new signing secret")
                    .description("The previous secret keeps signing beside it for 24 h.")
                    .refuses(&[404, 422])
            }),
        )
        .api_route(
            "/webhooks/{id}/recover",
            post_with(recover, |op| {
                op.summary("Requeue its dead and parked deliveries that finished in a window")
                    .description(
                        "409 when one of them changed state meanwhile; retry. 410 when every one \
                         found is of an event whose body was expunged.",
                    )
                    .refuses(&[404, 409, 410, 422])
            }),
        )
        .api_route(
            "/webhooks/{id}/test",
            post_with(test_webhook, |op| {
                op.summary("Send one signed `webhook.test` event to it")
                    .description("Answers once the attempt is recorded; 409 if inactive.")
                    .refuses(&[404, 409, 422])
            }),
        )
}

/// `{id}`: a webhook's id.
#[derive(Deserialize, JsonSchema)]
pub struct WebhookPath {
    #[schemars(with = "uuid::Uuid")]
    id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// http(s) with a host; internal addresses are refused unless allowlisted.
    #[schemars(url)]
    url: String,
    /// Patterns matching an event type and its dotted children; empty matches everything.
    #[serde(default)]
    #[schemars(schema_with = "event_types_schema")]
    event_types: Vec<String>,
    description: Option<String>,
    /// `whsec_` and the base64 of a key; generated when absent.
    secret: Option<String>,
    /// `standard` (the default): the Standard Webhooks body `{"type", "timestamp", "data"}`;
    /// `raw`: the bare payload.
    payload_format: Option<PayloadFormat>,
    /// At most this many attempts per second (none: no limit); waiting deliveries stay
    /// pending.
    #[schemars(range(min = 1))]
    rate_limit: Option<u32>,
    /// At most this many attempts to it on the wire at once, to protect the receiver (none:
    /// the process default, `HOOKLEDGER_MAX_IN_FLIGHT_PER_WEBHOOK`, 16 unless set).
    #[schemars(range(min = 1, max = 65536))]
    max_in_flight: Option<u32>,
    /// `parallel` (the default) or `fifo`: one delivery at a time, in publish order.
    ordering: Option<Ordering>,
    /// `true`: receives hookledger's own events (`webhook.*`, `delivery.*`) instead of
    /// published ones. Operator token only; default app only.
    operational: Option<bool>,
}

/// `operational: true` may be set by the operator token only (403 naming the field), and only
/// on a webhook of the default app (422), where hookledger's own events are published.
/// `false` is what every app's webhook is, so any token may say it.
fn check_operational(scope: &Scope, app: &crate::ids::AppUid, set: bool) -> ApiResult<()> {
    if !set {
        return Ok(());
    }
    scope.operator().map_err(|mut e| {
        e.message = "`operational: true` needs the operator token, not an app's token".into();
        e.field = Some("operational".into());
        e
    })?;
    if !app.is_default() {
        return Err(ApiError::invalid(
            "operational",
            "operational webhooks belong to the default app",
        ));
    }
    Ok(())
}

/// `rate_limit`, at least 1.
fn rate_limit(n: u32) -> ApiResult<std::num::NonZeroU32> {
    std::num::NonZeroU32::new(n)
        .ok_or_else(|| ApiError::invalid("rate_limit", "must be at least 1 request per second"))
}

/// `max_in_flight`, from 1 to [`MAX_IN_FLIGHT_CAP`].
fn max_in_flight(n: u32) -> ApiResult<std::num::NonZeroU32> {
    std::num::NonZeroU32::new(n)
        .filter(|n| n.get() <= MAX_IN_FLIGHT_CAP)
        .ok_or_else(|| {
            ApiError::invalid(
                "max_in_flight",
                format!("must be a whole number of attempts from 1 to {MAX_IN_FLIGHT_CAP}"),
            )
        })
}

/// A webhook URL: http(s) with a host, not internal unless allowlisted, whether written as
/// an address or a name that resolves to one now.
async fn check_url(state: &AppState, url: &str) -> ApiResult<()> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ApiError::invalid("url", format!("not a URL: {e}")))?;
    state
        .egress
        .check_registration(&parsed, &SystemLookup)
        .await
        .map_err(|e| ApiError::invalid("url", e.to_string()))
}

/// A webhook as the API shows it: never its secret.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Webhook")]
pub struct WebhookView {
    id: WebhookId,
    /// The app it belongs to.
    app: String,
    payload_format: PayloadFormat,
    url: String,
    event_types: Vec<String>,
    description: Option<String>,
    active: bool,
    /// Attempts per second at most (`null`: no limit).
    rate_limit: Option<u32>,
    /// Attempts on the wire at once at most (`null`: the process default).
    max_in_flight: Option<u32>,
    ordering: Ordering,
    /// Receives hookledger's own events instead of published ones.
    operational: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl WebhookView {
    fn of(registry: &Registry, w: &Webhook) -> Self {
        let options = registry.options_of(&w.id);
        Self {
            rate_limit: options.rate_limit.map(|r| r.get()),
            max_in_flight: options.max_in_flight.map(|n| n.get()),
            ordering: options.ordering,
            operational: options.operational,
            id: w.id,
            app: registry.app_of(&w.id).to_string(),
            payload_format: registry.format_of(&w.id),
            url: w.url.clone(),
            event_types: w.event_types.clone(),
            description: w.description.clone(),
            active: w.active,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A registered webhook and its signing secret (the only answer besides a rotation that
/// shows one).
#[derive(Serialize, JsonSchema)]
pub struct WebhookCreated {
    #[serde(flatten)]
    webhook: WebhookView,
    secret: String,
}

async fn create_webhook(
    State(state): State<AppState>,
    scope: Scope,
    Json(req): Json<NewWebhook>,
) -> ApiResult<(StatusCode, SortedJson<WebhookCreated>)> {
    check_url(&state, &req.url).await?;
    check_event_types(&req.event_types)?;
    let secret = match &req.secret {
        Some(s) => Secret::parse(s).map_err(|e| ApiError::invalid("secret", e.to_string()))?,
        None => Secret::generate(),
    };
    if let Some(set) = req.operational {
        check_operational(&scope, &scope.app(), set)?;
    }
    let options = crate::registry::WebhookOptions {
        rate_limit: req.rate_limit.map(rate_limit).transpose()?,
        max_in_flight: req.max_in_flight.map(max_in_flight).transpose()?,
        ordering: req.ordering.unwrap_or_default(),
        operational: req.operational.unwrap_or(false),
    };
    let id = WebhookId::new();
    let change = Change::Created {
        url: req.url,
        event_types: req.event_types,
        description: req.description,
        secret: secret.clone(),
        app: scope.app(),
        payload_format: req.payload_format.unwrap_or_default(),
    };
    let mut changes = vec![change];
    changes.extend(OptionsChange::of(options).map(Change::Configured));
    commit_changes(&state, &scope, id, changes, false).await?;
    let created = WebhookCreated {
        webhook: registered(&state, &scope, id)?,
        secret: secret.expose(),
    };
    Ok((StatusCode::CREATED, SortedJson(created)))
}

/// Appends one registry change (and parks the webhook's pending deliveries when asked).
async fn commit_change(
    state: &AppState,
    scope: &Scope,
    id: WebhookId,
    change: Change,
    park: bool,
) -> ApiResult<Receipt> {
    commit_changes(state, scope, id, vec![change], park).await
}

/// Appends registry changes of one webhook in one commit (and parks its pending deliveries
/// when asked), each made by the request's actor ([`Scope::actor`]).
async fn commit_changes(
    state: &AppState,
    scope: &Scope,
    id: WebhookId,
    changes: Vec<Change>,
    park: bool,
) -> ApiResult<Receipt> {
    let changes = changes
        .into_iter()
        .map(|c| (id, state.engine.seal_change(c).by(scope.actor())))
        .collect();
    let commit = Commit {
        changes,
        park: park.then(|| (id, "webhook deactivated".to_owned())),
        ..Commit::default()
    };
    Ok(state.engine.ledger().commit(commit).await?)
}

/// Webhook `id` as the API shows it, if the request may see it (another app's is 404, as a
/// missing one).
fn registered(state: &AppState, scope: &Scope, id: WebhookId) -> ApiResult<WebhookView> {
    let registry = state.engine.ledger().shared().read_registry();
    registry
        .get(&id)
        .filter(|_| scope.sees(registry.app_of(&id)))
        .map(|w| WebhookView::of(&registry, w))
        .ok_or_else(|| ApiError::not_found(format!("no webhook {id}")))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookListQuery {
    /// Only this app's webhooks (for the operator token on `/v1/webhooks`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:~-]{1,256}$"))]
    app: Option<String>,
}

/// The registered webhooks the request may see, by id.
#[derive(Serialize, JsonSchema)]
pub struct WebhookList {
    data: Vec<WebhookView>,
}

async fn list_webhooks(
    State(state): State<AppState>,
    scope: Scope,
    query: Result<Query<WebhookListQuery>, ApiError>,
) -> ApiResult<SortedJson<WebhookList>> {
    let Query(q) = query?;
    let app = scope.filter(&state, q.app.as_deref())?;
    let registry = state.engine.ledger().shared().read_registry();
    let data = match &app {
        Some(app) => registry
            .of_app(app)
            .map(|w| WebhookView::of(&registry, w))
            .collect(),
        None => registry
            .all()
            .map(|w| WebhookView::of(&registry, w))
            .collect(),
    };
    Ok(SortedJson(WebhookList { data }))
}

async fn get_webhook(
    State(state): State<AppState>,
    scope: Scope,
    Path(path): Path<WebhookPath>,
) -> ApiResult<SortedJson<WebhookView>> {
    let id = parse_id("id", &path.id)?;
    Ok(SortedJson(registered(&state, &scope, id)?))
}

/// A deleted (deactivated) webhook and how many pending deliveries were parked.
#[derive(Serialize, JsonSchema)]
pub struct WebhookDeleted {
    id: WebhookId,
    active: bool,
    parked: usize,
}

/// Deactivates the webhook and parks its pending deliveries, in one commit.
async fn delete_webhook(
    State(state): State<AppState>,
    scope: Scope,
    Path(path): Path<WebhookPath>,
) -> ApiResult<SortedJson<WebhookDeleted>> {
    let id: WebhookId = parse_id("id", &path.id)?;
    registered(&state, &scope, id)?;
    let change = Change::Deactivated {
        reason: "deleted through the API".into(),
    };
    let receipt = commit_change(&state, &scope, id, change, true).await?;
    Ok(SortedJson(WebhookDeleted {
        id,
        active: false,
        parked: receipt.parked.len(),
    }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    #[schemars(url)]
    url: Option<String>,
    // `default` (what serde does for a missing Option anyway) tells schemars it is optional.
    #[serde(default)]
    #[schemars(schema_with = "optional_event_types_schema")]
    event_types: Option<Vec<String>>,
    description: Option<String>,
    active: Option<bool>,
    payload_format: Option<PayloadFormat>,
    /// A new limit (attempts per second, at least 1), or `null` to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schemars(range(min = 1))]
    rate_limit: Option<Option<u32>>,
    /// A new in-flight limit (1 to 65536), or `null` for the process default. Takes effect
    /// before the answer; requests already on the wire above a lowered limit finish.
    #[serde(default, deserialize_with = "present")]
    #[schemars(range(min = 1, max = 65536))]
    max_in_flight: Option<Option<u32>>,
    /// `parallel` or `fifo`.
    ordering: Option<Ordering>,
    /// Whether it receives hookledger's own events (operator token only).
    operational: Option<bool>,
}

/// A field that is present (even as `null`) is `Some`; an absent one is `None` (`default`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Changes url, event_types, description or active. Deactivating parks pending deliveries.
async fn patch_webhook(
    State(state): State<AppState>,
    scope: Scope,
    Path(path): Path<WebhookPath>,
    body: Result<Json<WebhookPatch>, ApiError>,
) -> ApiResult<SortedJson<WebhookView>> {
    let id: WebhookId = parse_id("id", &path.id)?;
    let Json(patch) = body?;
    registered(&state, &scope, id)?;
    if let Some(url) = &patch.url {
        check_url(&state, url).await?;
    }
    if let Some(types) = &patch.event_types {
        check_event_types(types)?;
    }
    if let Some(set) = patch.operational {
        let app = state
            .engine
            .ledger()
            .shared()
            .read_registry()
            .app_of(&id)
            .clone();
        check_operational(&scope, &app, set)?;
    }
    let options = OptionsChange {
        rate_limit: match patch.rate_limit {
            Some(Some(n)) => Some(Some(rate_limit(n)?)),
            Some(None) => Some(None),
            None => None,
        },
        max_in_flight: match patch.max_in_flight {
            Some(Some(n)) => Some(Some(max_in_flight(n)?)),
            Some(None) => Some(None),
            None => None,
        },
        ordering: patch.ordering,
        operational: patch.operational,
    };
    let park = patch.active == Some(false);
    let change = Change::Updated {
        url: patch.url,
        event_types: patch.event_types,
        description: patch.description,
        active: patch.active,
        payload_format: patch.payload_format,
    };
    let mut changes = vec![change];
    if !options.is_empty() {
        changes.push(Change::Configured(options));
    }
    commit_changes(&state, &scope, id, changes, park).await?;
    if options.max_in_flight.is_some() {
        // The webhook's slots take the new size now, not at the next re-drive pass, and the
        // pass looks at what a raised limit lets go.
        state.engine.apply_limits();
        state.engine.wake();
    }
    Ok(SortedJson(registered(&state, &scope, id)?))
}

/// The new secret; the previous one signs beside it until `previous_secret_until`.
#[derive(Serialize, JsonSchema)]
pub struct SecretRotated {
    id: WebhookId,
    secret: String,
    previous_secret_until: Timestamp,
}

/// A new secret; the previous one keeps signing beside it for a day.
async fn rotate_secret(
    State(state): State<AppState>,
    scope: Scope,
    Path(path): Path<WebhookPath>,
) -> ApiResult<SortedJson<SecretRotated>> {
    let id: WebhookId = parse_id("id", &path.id)?;
    registered(&state, &scope, id)?;
    let secret = Secret::generate();
    let previous_until =
        chrono::Utc::now() + chrono::Duration::hours(crate::registry::ROTATION_OVERLAP_HOURS);
    let change = Change::SecretRotated {
        secret: secret.clone(),
        previous_until,
    };
    commit_change(&state, &scope, id, change, false).await?;
    Ok(SortedJson(SecretRotated {
        id,
        secret: secret.expose(),
        previous_secret_until: previous_until,
    }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverWindow {
    #[schemars(with = "Timestamp")]
    since: String,
    #[schemars(with = "Option<Timestamp>")]
    until: Option<String>,
}

/// How many deliveries were requeued.
#[derive(Serialize, JsonSchema)]
pub struct Recovered {
    requeued: usize,
}

/// Requeues the webhook's dead and parked deliveries that finished in the window.
async fn recover(
    State(state): State<AppState>,
    scope: Scope,
    Path(path): Path<WebhookPath>,
    body: Result<Json<RecoverWindow>, ApiError>,
) -> ApiResult<SortedJson<Recovered>> {
    let id: WebhookId = parse_id("id", &path.id)?;
    let Json(window) = body?;
    registered(&state, &scope, id)?;
    let since = timestamp("since", &window.since)?;
    let until = match &window.until {
        Some(u) => timestamp("until", u)?,
        None => chrono::Utc::now(),
    };
    if until < since {
        return Err(ApiError::invalid("until", "must not be before `since`"));
    }
    let requeued = state
        .engine
        .recover(id, since, until, "recover requested through the API")
        .await?;
    Ok(SortedJson(Recovered { requeued }))
}

/// The test event and what the ledger recorded for its attempt.
#[derive(Serialize, JsonSchema)]
pub struct TestResult {
    webhook_id: WebhookId,
    /// The test event's id (a UUID).
    event_id: String,
    delivered: bool,
    records: Vec<RecordBody>,
}

/// Sends one signed test event to the webhook and answers with what the ledger recorded.
async fn test_webhook(
    State(state): State<AppState>,
    scope: Scope,
    Path(path): Path<WebhookPath>,
) -> ApiResult<SortedJson<TestResult>> {
    let id: WebhookId = parse_id("id", &path.id)?;
    registered(&state, &scope, id)?;
    let test = state.engine.test_delivery(id).await?;
    let delivered = test
        .records
        .iter()
        .any(|r| matches!(r, RecordBody::Delivered { .. }));
    Ok(SortedJson(TestResult {
        webhook_id: id,
        event_id: test.event_id,
        delivered,
        records: test.records,
    }))
}
