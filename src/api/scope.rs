//! Who is calling and which app a request acts on.
//!
//! A `/v1` request carries either the operator token (`HOOKLEDGER_API_TOKEN`), which sees and
//! changes everything, or a token scoped to one app (`hlt_...`, issued by
//! `POST /v1/apps/{app}/tokens`), which sees and changes only that app. The token layer
//! ([`super::require_token`]) resolves the token to a [`Caller`]; handlers take a [`Scope`],
//! which adds the `{app}` of the route (`/v1/apps/{app}/...`) when it has one.
//!
//! The invariants:
//! - a scoped token never reaches another app's object: every lookup goes through
//!   [`Scope::sees`], and an object of another app answers 404 exactly as a missing one does
//!   (existence is not leaked);
//! - a scoped token on an operator-only route (apps, tokens, SQL, verify, head, what-if) gets
//!   403 from [`Scope::operator`];
//! - the app a request writes into is [`Scope::app`]: the route's `{app}`, else the scoped
//!   token's app, else `default` (so the unscoped routes keep working as the default app);
//! - the actor of a registry change a request makes is [`Scope::actor`]: `operator`, or the
//!   scoped token's id (never its value), see [`crate::registry::actor`].

use aide::generate::GenContext;
use aide::openapi::Operation;
use aide::OperationInput;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::StatusCode;

use super::error::ApiError;
use super::AppState;
use crate::ids::AppUid;
use crate::registry::Actor;

/// Who presented which token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The operator token: every app.
    Operator,
    /// A token scoped to this app, and the token's id.
    App(AppUid, uuid::Uuid),
}

/// The caller and the route's `{app}`, if it has one (checked to exist and to be the caller's).
#[derive(Clone, Debug)]
pub struct Scope {
    caller: Caller,
    path_app: Option<AppUid>,
}

impl Scope {
    /// The app this request writes into: the route's, the scoped token's, or `default`.
    pub fn app(&self) -> AppUid {
        match (&self.path_app, &self.caller) {
            (Some(app), _) | (None, Caller::App(app, _)) => app.clone(),
            (None, Caller::Operator) => AppUid::default_app(),
        }
    }

    /// The app reads are restricted to (`None`: every app, for the operator on an unscoped
    /// route). `query` is a `?app=` parameter: it may narrow the operator's view to one app, and
    /// a scoped token may name only its own app (another, or one that does not exist, is 404).
    pub fn filter(
        &self,
        state: &AppState,
        query: Option<&str>,
    ) -> Result<Option<AppUid>, ApiError> {
        let fixed = match (&self.path_app, &self.caller) {
            (Some(app), _) | (None, Caller::App(app, _)) => Some(app.clone()),
            (None, Caller::Operator) => None,
        };
        let Some(asked) = query else {
            return Ok(fixed);
        };
        let asked = AppUid::parse(asked).ok_or_else(|| no_app(asked))?;
        match fixed {
            Some(app) if app != asked => Err(no_app(asked.as_str())),
            _ if !exists(state, &asked) => Err(no_app(asked.as_str())),
            _ => Ok(Some(asked)),
        }
    }

    /// Whether an object of `app` is visible to this request.
    pub fn sees(&self, app: &AppUid) -> bool {
        match (&self.path_app, &self.caller) {
            (Some(own), _) | (None, Caller::App(own, _)) => own == app,
            (None, Caller::Operator) => true,
        }
    }

    /// Who this request's registry changes are made by.
    pub fn actor(&self) -> Actor {
        match self.caller {
            Caller::Operator => Actor::Operator,
            Caller::App(_, token) => Actor::Token(token),
        }
    }

    /// 403 unless the caller holds the operator token.
    pub fn operator(&self) -> Result<(), ApiError> {
        match self.caller {
            Caller::Operator => Ok(()),
            Caller::App(..) => Err(ApiError {
                status: StatusCode::FORBIDDEN,
                code: "forbidden",
                message: "this route needs the operator token, not an app's token".into(),
                field: None,
            }),
        }
    }
}

fn exists(state: &AppState, app: &AppUid) -> bool {
    let registry = state.engine.ledger().shared().read_registry();
    registry.apps().live(app).is_some()
}

/// A path segment that is not UTF-8 once decoded: 400 naming its parameter, as
/// [`super::extract::Path`] answers it.
fn bad_path(rejection: axum::extract::rejection::RawPathParamsRejection) -> ApiError {
    let message = rejection.body_text();
    let field = message.split('`').nth(1).unwrap_or("path").to_owned();
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "bad_path",
        message,
        field: Some(field),
    }
}

/// The one answer for an app that does not exist and for one the caller may not see.
pub fn no_app(app: &str) -> ApiError {
    ApiError::not_found(format!("no app {app}"))
}

impl FromRequestParts<AppState> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The token layer puts the caller on every `/v1` request before a handler runs.
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(bad_path)?;
        let path_app = match params.iter().find(|(name, _)| *name == "app") {
            None => None,
            Some((_, raw)) => {
                let app = AppUid::parse(raw).ok_or_else(|| no_app(raw))?;
                let visible = match &caller {
                    Caller::Operator => true,
                    Caller::App(own, _) => own == &app,
                };
                if !visible || !exists(state, &app) {
                    return Err(no_app(raw));
                }
                Some(app)
            }
        };
        Ok(Self { caller, path_app })
    }
}

/// The `{app}` parameter is documented on the operations of the app routes (see
/// `routes::app_scoped`), so the extractor itself adds nothing to an operation.
impl OperationInput for Scope {
    fn operation_input(_ctx: &mut GenContext, _operation: &mut Operation) {}
}
