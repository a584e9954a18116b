//! The document against the router it was built with: the same (method, path) pairs, and every
//! operation complete (summary, parameters, security, refusals with the error body).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aide::openapi::{OpenApi, Parameter, ReferenceOr, StatusCode};

use crate::api::{build, AppState, DEFAULT_MAX_PAYLOAD};
use crate::clock::SystemClock;
use crate::delivery::engine::{Engine, EngineConfig};
use crate::delivery::guard::EgressPolicy;
use crate::delivery::sender::{Sender, SenderConfig};
use crate::ledger::Ledger;

const METHODS: [&str; 9] = [
    "get", "head", "delete", "options", "patch", "post", "put", "trace", "connect",
];

/// The router and its document, over a ledger in a temp dir.
fn built() -> (axum::Router, OpenApi, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(&dir.path().join("doc.duckdb"), Arc::new(SystemClock)).expect("open");
    let egress = Arc::new(EgressPolicy::parse_allowlist("").expect("allowlist"));
    let sender = Sender::new(SenderConfig {
        attempt_timeout: Duration::from_secs(1),
        egress: egress.clone(),
        ..SenderConfig::default()
    })
    .expect("sender");
    let engine = Engine::new(
        Arc::new(ledger),
        sender,
        Arc::new(SystemClock),
        EngineConfig::default(),
    );
    let state = AppState {
        engine,
        egress,
        token: Arc::new("doc-token".into()),
        sql_url: None,
    };
    let (router, api) = build(state, DEFAULT_MAX_PAYLOAD);
    (router, api, dir)
}

/// The (method, path) pairs the router serves, read from its route table. axum has no API
/// for that table, so this reads its `Debug` form (`RouteId(n): "/path"` for the paths and
/// `RouteId(n): MethodRouter(MethodRouter { get: .., post: None, .. })` for the methods);
/// if that form changes, the assertions on what was read fail rather than pass empty.
fn served(router: &axum::Router) -> BTreeSet<(String, String)> {
    let debug = format!("{router:?}");
    let table = debug
        .split_once("path_router: PathRouter")
        .and_then(|(_, rest)| rest.split_once("fallback_router:"))
        .map(|(table, _)| table)
        .expect("the router's Debug form names path_router and fallback_router");
    let mut paths = std::collections::BTreeMap::new();
    let mut methods = std::collections::BTreeMap::new();
    for entry in table.split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once("): ").expect("RouteId(n): ...");
        let id: u32 = id.parse().expect("a route id");
        if let Some(path) = rest.strip_prefix('"') {
            paths.insert(
                id,
                path.split('"').next().expect("a quoted path").to_owned(),
            );
        } else if rest.starts_with("MethodRouter(") {
            let served: Vec<String> = METHODS
                .iter()
                .filter(|m| {
                    let field = format!(" {m}: ");
                    let value = rest.split_once(&field).map(|(_, v)| v).unwrap_or("None");
                    !value.starts_with("None")
                })
                .map(|m| m.to_string())
                .collect();
            methods.insert(id, served);
        } else {
            panic!("route {id} is not a method router (a nested service?): {rest:.80}");
        }
    }
    assert!(!paths.is_empty(), "no paths read from {table:.300}");
    assert_eq!(
        paths.keys().collect::<Vec<_>>(),
        methods.keys().collect::<Vec<_>>(),
        "every route id has a path and methods"
    );
    paths
        .iter()
        .flat_map(|(id, path)| methods[id].iter().map(move |m| (m.clone(), path.clone())))
        .collect()
}

fn documented(api: &OpenApi) -> BTreeSet<(String, String)> {
    api.paths
        .iter()
        .flat_map(|p| p.iter())
        .flat_map(|(path, item)| {
            let ReferenceOr::Item(item) = item else {
                panic!("{path} is a reference");
            };
            item.iter()
                .map(|(method, _)| (method.to_owned(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_document_names_every_route_the_router_serves_and_no_other() {
    let (router, api, _dir) = built();
    let served = served(&router);
    let documented = documented(&api);
    assert!(served.len() >= 20, "read too few routes: {served:?}");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in the OpenAPI document (add them with api_route): {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in the document but not served: {unserved:?}"
    );
}

#[test]
fn every_operation_is_complete() {
    let (_router, api, _dir) = built();
    let doc = serde_json::to_value(&api).expect("serialises");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    for (path, item) in api.paths.iter().flat_map(|p| p.iter()) {
        let ReferenceOr::Item(item) = item else {
            unreachable!()
        };
        for (method, op) in item.iter() {
            let at = format!("{method} {path}");
            assert!(op.summary.is_some(), "{at}: no summary");
            let v1 = path.starts_with("/v1/");
            let bearer = op.security.iter().any(|s| s.contains_key("bearer"));
            assert_eq!(
                bearer, v1,
                "{at}: the bearer requirement is for /v1 routes only"
            );
            let responses = op.responses.as_ref().expect("responses");
            let codes: BTreeSet<u16> = responses
                .responses
                .keys()
                .map(|c| match c {
                    StatusCode::Code(c) => *c,
                    StatusCode::Range(r) => panic!("{at}: a status range {r}"),
                })
                .collect();
            assert!(
                codes.iter().any(|c| (200..300).contains(c)),
                "{at}: {codes:?}"
            );
            if v1 {
                assert!(codes.contains(&401), "{at}: no 401");
            }
            for (code, response) in &responses.responses {
                let ReferenceOr::Item(response) = response else {
                    unreachable!()
                };
                if matches!(code, StatusCode::Code(c) if *c >= 400) {
                    let schema = serde_json::to_value(
                        &response.content["application/json"]
                            .schema
                            .as_ref()
                            .unwrap()
                            .json_schema,
                    )
                    .unwrap();
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/ErrorBody",
                        "{at} {code:?}: the error body"
                    );
                }
            }
            let mut in_template: BTreeSet<String> = path
                .split('{')
                .skip(1)
                .map(|s| s.split('}').next().unwrap().to_owned())
                .collect();
            for p in &op.parameters {
                let ReferenceOr::Item(Parameter::Path { parameter_data, .. }) = p else {
                    continue;
                };
                assert!(parameter_data.required, "{at}: path parameter not required");
                assert!(
                    in_template.remove(&parameter_data.name),
                    "{at}: parameter {} is not in the path",
                    parameter_data.name
                );
            }
            assert!(in_template.is_empty(), "{at}: undocumented {in_template:?}");
        }
    }
}
