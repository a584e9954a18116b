//! Extractors whose rejections are [`ApiError`]s, so that every refusal has the one JSON
//! shape. Handlers import [`Path`] from here instead of from axum.

use axum::extract::rejection::PathRejection;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// `axum::extract::Path`, refusing with a 400 that names the parameter (a segment that is
/// not UTF-8 once percent-decoded, say) instead of axum's plain-text answer.
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
