//! Extractors whose rejections are [`ApiError`]s, so that every refusal has the one JSON
//! shape, and which describe themselves in the OpenAPI document: the parameters or body they
//! read (from `T`'s schema) and the refusals they answer before the handler runs (400, and for a
//! body 413 and 415), with the error body. Handlers import [`Path`], [`Query`] and [`Json`] from
//! here instead of from axum.

use aide::generate::GenContext;
use aide::openapi::{Operation, Response, StatusCode as DocStatus};
use aide::OperationInput;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::openapi::refusal;

fn refusals(ctx: &mut GenContext, statuses: &[u16]) -> Vec<(Option<DocStatus>, Response)> {
    statuses
        .iter()
        .map(|&s| (Some(DocStatus::Code(s)), refusal(ctx, s)))
        .collect()
}

/// `axum::extract::Path`, refusing with a 400 that names the parameter (a segment that is
/// not UTF-8 once percent-decoded, say) instead of axum's plain-text answer. `T` is a struct
/// whose fields are named as the route's `{parameters}`.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|e: PathRejection| ApiError::from(e))
    }
}

impl<T: JsonSchema> OperationInput for Path<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::extract::Path::<T>::operation_input(ctx, operation);
    }

    fn inferred_early_responses(
        ctx: &mut GenContext,
        _operation: &mut Operation,
    ) -> Vec<(Option<DocStatus>, Response)> {
        refusals(ctx, &[400])
    }
}

/// `axum::extract::Query`, refusing with a 400 `bad_query` naming the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(ApiError::from)
    }
}

impl<T: JsonSchema> OperationInput for Query<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::extract::Query::<T>::operation_input(ctx, operation);
    }

    fn inferred_early_responses(
        ctx: &mut GenContext,
        _operation: &mut Operation,
    ) -> Vec<(Option<DocStatus>, Response)> {
        refusals(ctx, &[400])
    }
}

/// `axum::Json` as a request body, refusing with 400 `bad_json` (naming the field when serde
/// does), 413 `too_large` or 415 `unsupported_media_type`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(value)| Json(value))
            .map_err(ApiError::from)
    }
}

impl<T: JsonSchema> OperationInput for Json<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::Json::<T>::operation_input(ctx, operation);
    }

    fn inferred_early_responses(
        ctx: &mut GenContext,
        _operation: &mut Operation,
    ) -> Vec<(Option<DocStatus>, Response)> {
        refusals(ctx, &[400, 413, 415])
    }
}
