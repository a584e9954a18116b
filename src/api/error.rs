//! API errors: one JSON shape, `{"error": {"code", "message", "field"}}`, with the status
//! chosen in one place. [`ErrorBody`] is that shape as a type: the response is serialised from
//! it and the OpenAPI document's error schema is derived from it, so the two cannot differ.

use axum::extract::path::ErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

use crate::error::LedgerError;

/// Every refusal's body.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What was refused and why.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code: `bad_json`, `bad_query`, `bad_path`, `invalid`,
    /// `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`, `conflict`, `too_large`,
    /// `unsupported_media_type`, `storage_unavailable`, `unavailable`.
    pub code: String,
    /// For people; not stable.
    pub message: String,
    /// The request field at fault (a body field, query or path parameter), when one is.
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            field: None,
        }
    }

    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "missing or wrong bearer token".into(),
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
            },
        };
        (self.status, super::openapi::SortedJson(body)).into_response()
    }
}

/// The field a deserialisation error names: the path axum puts before the message
/// (`url: invalid type ...`), or the name in `missing field `url``, `unknown field `x`` or
/// `duplicate field `url``.
fn named_field(message: &str) -> Option<String> {
    let detail = ["target type: ", "query string: "]
        .iter()
        .find_map(|marker| message.split_once(marker).map(|(_, rest)| rest))
        .unwrap_or(message);
    for prefix in ["missing field `", "unknown field `", "duplicate field `"] {
        if let Some(rest) = detail.strip_prefix(prefix) {
            return rest.split('`').next().map(str::to_owned);
        }
    }
    let (path, _) = detail.split_once(": ")?;
    (!path.is_empty() && !path.contains(' ')).then(|| path.to_owned())
}

/// Masks anything shaped like a signing secret (`whsec_` and its base64): serde's messages
/// quote the offending value, and a secret sent in the wrong field must not come back in an
/// error (or reach a log through one).
fn redact_secrets(message: &str) -> String {
    const PREFIX: &str = "whsec_";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(PREFIX) {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        out.push_str("whsec_***");
        let key = &from[PREFIX.len()..];
        let end = key
            .find(|c: char| !(c.is_ascii_alphanumeric() || "+/=".contains(c)))
            .unwrap_or(key.len());
        rest = &key[end..];
    }
    out.push_str(rest);
    out
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let message = redact_secrets(&r.body_text());
        let status = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "bad_json",
        };
        Self {
            status,
            code,
            field: Some(named_field(&message).unwrap_or_else(|| "body".into())),
            message,
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        let message = redact_secrets(&r.body_text());
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_query",
            field: named_field(&message).or_else(|| Some("query".into())),
            message,
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        let message = r.body_text();
        let field = match &r {
            PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
                ErrorKind::InvalidUtf8InPathParam { key }
                | ErrorKind::ParseErrorAtKey { key, .. }
                | ErrorKind::DeserializeError { key, .. } => key.clone(),
                _ => "path".into(),
            },
            _ => "path".into(),
        };
        if r.status().is_server_error() {
            // A handler whose Path type does not fit its route: a bug, not the caller's.
            tracing::error!(error = %message, "path extraction failed");
            return Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "internal",
                message,
                field: None,
            };
        }
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_path",
            message,
            field: Some(field),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        let (status, code) = match &e {
            LedgerError::EventExists { .. } => (StatusCode::CONFLICT, "conflict"),
            LedgerError::UnknownDelivery(_) => (StatusCode::NOT_FOUND, "not_found"),
            LedgerError::UnknownEvent(_) => (StatusCode::NOT_FOUND, "not_found"),
            LedgerError::BodyExpunged(_) => (StatusCode::GONE, "body_expunged"),
            // A registry change refused by the writer's check (a race another request won).
            LedgerError::InvalidTransition { .. }
            | LedgerError::Invalid(_)
            | LedgerError::InvalidChange { .. } => (StatusCode::CONFLICT, "conflict"),
            LedgerError::StorageUnavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
            }
            LedgerError::CommitFailed(_)
            | LedgerError::WriterGone
            | LedgerError::NotLeased { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "request failed");
        }
        Self {
            status,
            code,
            message: e.to_string(),
            field: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{named_field, redact_secrets};

    #[test]
    fn secrets_quoted_in_messages_are_masked() {
        let message = "active: invalid type: string \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \
                       expected a boolean; also whsec_ab+/= and whsec_";
        assert_eq!(
            redact_secrets(message),
            "active: invalid type: string \"whsec_***\", expected a boolean; also whsec_*** \
             and whsec_***"
        );
        assert_eq!(redact_secrets("no secret here"), "no secret here");
    }

    #[test]
    fn the_field_is_read_from_axum_and_serde_messages() {
        let cases = [
            ("Failed to deserialize the JSON body into the target type: url: invalid type: integer `7`, expected a string at line 1 column 8", Some("url")),
            ("Failed to deserialize the JSON body into the target type: bogus: unknown field `bogus`, expected one of `url`", Some("bogus")),
            ("Failed to deserialize the JSON body into the target type: missing field `url` at line 1 column 2", Some("url")),
            ("Failed to deserialize the JSON body into the target type: duplicate field `url` at line 1 column 148", Some("url")),
            ("Failed to deserialize query string: after_seq: invalid digit found in string", Some("after_seq")),
            ("Failed to deserialize query string: unknown field `colour`, expected one of `at`", Some("colour")),
            ("Failed to parse the request body as JSON: expected value at line 1 column 1", None),
        ];
        for (message, field) in cases {
            assert_eq!(named_field(message).as_deref(), field, "{message}");
        }
    }
}
