//! LIST: the objects of a kind matching the selectors, in key order, with the list's
//! `resourceVersion`, paged by `limit`/`continue` (the token: first page's version, last key).

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Value, json};

use super::http::{Filter, Target, json_response, served, status_response};
use super::store::{Inner, Store};
use super::{lock, meta_str};

fn list_kind(store: &Store, target: &Target) -> String {
    store
        .info_for_plural(&target.group, &target.plural)
        .map_or_else(|| "List".to_owned(), |info| format!("{}List", info.kind))
}

pub(super) fn list(
    inner: &Inner,
    target: &Target,
    filter: &Filter,
    query: &HashMap<String, String>,
) -> Response {
    let store = lock(&inner.store);
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    // `continue` is "<resourceVersion of the first page>/<last key served>", base64.
    let (list_rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some((rv, after)) = decoded.as_deref().and_then(|d| d.split_once('/')) else {
                return status_response(400, "BadRequest", "invalid continue token");
            };
            let rv: u64 = rv.parse().unwrap_or(0);
            if rv < store.compacted {
                return status_response(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result.",
                );
            }
            (rv, Some(after.to_owned()))
        }
        None => (store.rv, None),
    };
    let mut items = Vec::new();
    let mut next = None;
    for ((group, plural, namespace, name), object) in &store.objects {
        if *group != target.group || *plural != target.plural {
            continue;
        }
        let position = format!("{namespace}\u{1}{name}");
        if after
            .as_ref()
            .is_some_and(|a| position.as_str() <= a.as_str())
        {
            continue;
        }
        if !filter.matches(object) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            let last = items
                .last()
                .map(|o: &Value| {
                    format!("{}\u{1}{}", meta_str(o, "namespace"), meta_str(o, "name"))
                })
                .unwrap_or_default();
            next =
                Some(base64::engine::general_purpose::STANDARD.encode(format!("{list_rv}/{last}")));
            break;
        }
        items.push(served(object, &target.group, &target.version));
    }
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    let api_version = served(&json!({}), &target.group, &target.version)["apiVersion"].clone();
    json_response(
        StatusCode::OK,
        &json!({"apiVersion": api_version, "kind": list_kind(&store, target), "metadata": metadata, "items": items}),
    )
}
