//! The OpenAPI 3.1 document (`GET /openapi.json`), generated from the route handlers by
//! [aide](https://docs.rs/aide): every documented route is added with `api_route`, which
//! registers the handler with axum and its operation with the document in the same call, so the
//! served routes and the documented ones come from one source. Parameters and bodies come from
//! the handlers' extractors ([`super::extract`]), success bodies from their return types, and
//! schemas from `schemars` derives on the very types serde reads and writes.
//!
//! Why aide rather than utoipa: utoipa describes an operation in an attribute beside the
//! handler (`#[utoipa::path(responses(...))]`), a second description that can drift from the
//! handler's signature; aide reads the signature itself (its `OperationInput`/`OperationOutput`
//! traits on extractors and responses), and its router is the axum router. aide 0.16 is the line
//! for axum 0.8 and schemars 1 (still an alpha, so pinned exactly in Cargo.toml).
//!
//! The invariant this module keeps: the document names every route the router serves (a test
//! compares the router's own route table with the document), every `/v1` operation carries the
//! bearer security requirement and its 401, and every refusal status an operation can answer is
//! listed with the one error body, [`ErrorBody`].

use aide::generate::{in_context, GenContext};
use aide::openapi::{
    MediaType, OpenApi, Operation, PathItem, ReferenceOr, Response, SchemaObject, SecurityScheme,
    StatusCode as DocStatus,
};
use aide::transform::{TransformOpenApi, TransformOperation};
use aide::OperationOutput;
use axum::body::Bytes;
use axum::response::{IntoResponse, Response as HttpResponse};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Serialize;

use super::error::{ApiError, ErrorBody};

/// The name of the bearer scheme in `components.securitySchemes`.
pub const BEARER: &str = "bearer";

/// A JSON answer serialised through `serde_json::Value`, so that object keys come out sorted at
/// every level, exactly as the `json!()` bodies these types replaced did: typed answers, the
/// same bytes. Documented as `T`'s schema with status 200.
#[derive(Debug)]
pub struct SortedJson<T>(pub T);

impl<T: Serialize> IntoResponse for SortedJson<T> {
    fn into_response(self) -> HttpResponse {
        match serde_json::to_value(&self.0) {
            Ok(value) => axum::Json(value).into_response(),
            Err(e) => ApiError::from(crate::LedgerError::Invalid(e.to_string())).into_response(),
        }
    }
}

impl<T: JsonSchema> OperationOutput for SortedJson<T> {
    type Inner = T;

    fn operation_response(ctx: &mut GenContext, operation: &mut Operation) -> Option<Response> {
        axum::Json::<T>::operation_response(ctx, operation)
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<DocStatus>, Response)> {
        axum::Json::<T>::inferred_responses(ctx, operation)
    }
}

/// Handlers list their refusals with [`Refusals::refuses`]; an `ApiError` in a return type adds
/// nothing by itself (which statuses a handler answers is not in its type).
impl OperationOutput for ApiError {
    type Inner = ErrorBody;
}

/// What each refusal status means, for the document. A status not listed here cannot be
/// documented (and [`Refusals::refuses`] panics on it: a test builds the document).
const REFUSALS: [(u16, &str); 11] = [
    (
        400,
        "The body, query or a path parameter could not be read (`bad_json`, `bad_query`, \
         `bad_path`); `field` names it.",
    ),
    (401, "Missing or wrong bearer token (`unauthorized`)."),
    (
        403,
        "A token scoped to one app on a route that needs the operator token (`forbidden`).",
    ),
    (
        404,
        "No such object (`not_found`), or one of an app the token may not see.",
    ),
    (
        409,
        "Conflicts with the ledger's state (`conflict`): an event id published before with \
         another body, a delivery still live, an inactive webhook.",
    ),
    (
        410,
        "The event's body was expunged (`body_expunged`): it can never be sent again.",
    ),
    (413, "The body is over the payload limit (`too_large`)."),
    (
        415,
        "The body is not `content-type: application/json` (`unsupported_media_type`).",
    ),
    (
        422,
        "A field is well-formed JSON but not a valid value (`invalid`); `field` names it.",
    ),
    (
        405,
        "The route does not take this method (`method_not_allowed`).",
    ),
    (
        503,
        "The database cannot be written or the writer is gone (`storage_unavailable`, \
         `unavailable`); retry later.",
    ),
];

/// The documented response of refusal `status`, with the error body's schema.
pub fn refusal(ctx: &mut GenContext, status: u16) -> Response {
    let description = REFUSALS
        .iter()
        .find(|(code, _)| *code == status)
        .map(|(_, d)| *d)
        .unwrap_or_else(|| panic!("refusal {status} has no description in REFUSALS"));
    Response {
        description: description.to_owned(),
        content: IndexMap::from_iter([(
            "application/json".to_owned(),
            MediaType {
                schema: Some(SchemaObject {
                    json_schema: ctx.schema.subschema_for::<ErrorBody>(),
                    example: None,
                    external_docs: None,
                }),
                ..Default::default()
            },
        )]),
        ..Default::default()
    }
}

/// Adds refusal `status` to `operation` (once).
pub fn add_refusal(ctx: &mut GenContext, operation: &mut Operation, status: u16) {
    let responses = operation.responses.get_or_insert_with(Default::default);
    responses
        .responses
        .entry(DocStatus::Code(status))
        .or_insert_with(|| ReferenceOr::Item(refusal(ctx, status)));
}

/// The refusals a handler answers itself (its extractors add theirs: 400, 413, 415).
pub trait Refusals {
    fn refuses(self, statuses: &[u16]) -> Self;
}

impl Refusals for TransformOperation<'_> {
    fn refuses(mut self, statuses: &[u16]) -> Self {
        in_context(|ctx| {
            for &status in statuses {
                add_refusal(ctx, self.inner_mut(), status);
            }
        });
        self
    }
}

/// The document's frame and the rules every operation shares: the bearer scheme, and on every
/// `/v1` operation the security requirement, 401 and 503.
pub fn finish(api: TransformOpenApi<'_>) -> TransformOpenApi<'_> {
    let mut api = api
        .title("hookledger")
        .version(env!("CARGO_PKG_VERSION"))
        .description(
            "An event-sourced webhook delivery ledger. Every `/v1` route needs \
             `Authorization: Bearer <token>`; every refusal is `{\"error\": {\"code\", \
             \"message\", \"field\"}}`.",
        )
        .security_scheme(
            BEARER,
            SecurityScheme::Http {
                scheme: "bearer".into(),
                bearer_format: None,
                description: Some("The API token (`HOOKLEDGER_API_TOKEN`).".into()),
                extensions: IndexMap::default(),
            },
        );
    let doc = api.inner_mut();
    doc.openapi = "3.1.0".into();
    in_context(|ctx| {
        for (path, item) in doc.paths.iter_mut().flat_map(|p| p.paths.iter_mut()) {
            let ReferenceOr::Item(item) = item else {
                continue;
            };
            if !path.starts_with("/v1/") {
                continue;
            }
            for operation in operations_mut(item) {
                operation.security = vec![IndexMap::from_iter([(BEARER.to_owned(), vec![])])];
                add_refusal(ctx, operation, 401);
                add_refusal(ctx, operation, 503);
            }
        }
    });
    api
}

/// Every operation of a path item.
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// The serialised document, served as it is by `GET /openapi.json`.
#[derive(Clone, Debug)]
pub struct Document(pub Bytes);

impl Document {
    pub fn of(api: &OpenApi) -> Self {
        Self(Bytes::from(
            serde_json::to_vec(api).expect("an OpenApi value serialises"),
        ))
    }
}

impl IntoResponse for Document {
    fn into_response(self) -> HttpResponse {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.0,
        )
            .into_response()
    }
}

impl OperationOutput for Document {
    type Inner = serde_json::Map<String, serde_json::Value>;

    fn operation_response(ctx: &mut GenContext, operation: &mut Operation) -> Option<Response> {
        let mut response = axum::Json::<Self::Inner>::operation_response(ctx, operation)?;
        response.description = "This document (OpenAPI 3.1).".into();
        Some(response)
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<DocStatus>, Response)> {
        Self::operation_response(ctx, operation)
            .map(|r| vec![(Some(DocStatus::Code(200)), r)])
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[path = "openapi_tests.rs"]
mod tests;
