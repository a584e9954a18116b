//! Extractors whose rejections are [`ApiError`]s, so that every refusal has the one JSON
//! shape, and which describe themselves in the OpenAPI document: the parameters or body they
//! read (from `T`'s schema) and the refusals they answer before the handler runs (400, and for a
//! body 413 and 415), with the error body. Handlers import [`Path`], [`Query`] and [`Json`] from
//! here instead of from axum.

use aide::generate::GenContext;
use aide::openapi::{Operation, Response, StatusCode as DocStatus};
use aide::OperationInput;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
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
/// does), 413 `too_large` or 415 `unsupported_media_type`. Every body is a JSON object: serde
/// would also read a struct from an array of its fields in order (`[null, null]`), which no
/// document describes, so anything but an object is refused first.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "unsupported_media_type",
                message: "Expected request with `Content-Type: application/json`".into(),
                field: Some("body".into()),
            });
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::from(JsonRejection::from(e)))?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad_json",
                message: "the body must be a JSON object".into(),
                field: Some("body".into()),
            });
        }
        axum::Json::<T>::from_bytes(&bytes)
            .map(|axum::Json(value)| Json(value))
            .map_err(ApiError::from)
    }
}

/// `application/json` or any `+json` type, as axum's own `Json` accepts.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| {
            m.type_() == "application"
                && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
        })
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
