//! WATCH fan-out: the replay (every object, or the log after the asked `resourceVersion`, or
//! 410 Gone before the compaction), then every broadcast event as a watch line with the API
//! server's selector semantics, BOOKMARKs, and the watch's end on `timeoutSeconds` or a close.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::SinkExt as _;
use serde_json::{Value, json};

use super::http::{Filter, Target, served};
use super::lock;
use super::status::status;
use super::store::{Broadcast, Event, EventType, Inner};

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

pub(super) fn watch(
    inner: &Arc<Inner>,
    target: Target,
    filter: Filter,
    query: &HashMap<String, String>,
) -> Response {
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let requested = query
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
        .map(|rv| rv.parse::<u64>().unwrap_or(0));
    let interval = *lock(&inner.bookmark_interval);

    // Under the store lock: what to replay, and the subscription, so nothing falls between.
    let (initial, start_rv, mut receiver, kind_name) = {
        let store = lock(&inner.store);
        let receiver = inner.events.subscribe();
        let kind_name = store
            .info_for_plural(&target.group, &target.plural)
            .map_or_else(String::new, |info| info.kind);
        let mut initial = Vec::new();
        match requested {
            Some(rv) if rv < store.compacted => {
                let gone = status(
                    410,
                    "Expired",
                    &format!("too old resource version: {rv} ({})", store.compacted),
                );
                initial.push(watch_line("ERROR", &gone));
                return streaming(initial, None);
            }
            Some(rv) => {
                for event in store.log.iter().filter(|e| e.rv > rv) {
                    if let Some(line) = event_line(event, &target, &filter) {
                        initial.push(line);
                    }
                }
            }
            None => {
                for ((group, plural, _, _), object) in &store.objects {
                    if *group == target.group && *plural == target.plural && filter.matches(object)
                    {
                        initial.push(watch_line(
                            "ADDED",
                            &served(object, &target.group, &target.version),
                        ));
                    }
                }
            }
        }
        (initial, store.rv, receiver, kind_name)
    };

    let (mut sender, body_rx) =
        futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    tokio::spawn(async move {
        for line in initial {
            if sender.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let mut last_rv = start_rv;
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(86_400)));
        tokio::pin!(deadline);
        let api_version = served(&json!({}), &target.group, &target.version)["apiVersion"].clone();
        let bookmark = |rv: u64| {
            watch_line(
                "BOOKMARK",
                &json!({"kind": kind_name, "apiVersion": api_version,
                        "metadata": {"resourceVersion": rv.to_string()}}),
            )
        };
        loop {
            let line = tokio::select! {
                _ = &mut deadline => return,
                _ = ticker.tick(), if bookmarks => Some(bookmark(last_rv)),
                message = receiver.recv() => match message {
                    Ok(Broadcast::Event(event)) => {
                        if event.rv <= last_rv {
                            continue;
                        }
                        last_rv = event.rv;
                        event_line(&event, &target, &filter)
                    }
                    Ok(Broadcast::Bookmark) => bookmarks.then(|| bookmark(last_rv)),
                    // Closed, or this watch fell behind: end it, the client watches again.
                    Ok(Broadcast::Close) | Err(_) => return,
                },
            };
            if let Some(line) = line
                && sender.send(Ok(line)).await.is_err()
            {
                return;
            }
        }
    });
    streaming(Vec::new(), Some(body_rx))
}

fn streaming(
    lines: Vec<Bytes>,
    rest: Option<futures::channel::mpsc::Receiver<Result<Bytes, std::io::Error>>>,
) -> Response {
    use futures::StreamExt as _;
    let head = futures::stream::iter(lines.into_iter().map(Ok::<_, std::io::Error>));
    let body = match rest {
        Some(rest) => Body::from_stream(head.chain(rest)),
        None => Body::from_stream(head),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The watch line of an event for one watch, with the API server's selector semantics: an
/// object that stops matching is DELETED for that watch, one that starts matching ADDED.
fn event_line(event: &Event, target: &Target, filter: &Filter) -> Option<Bytes> {
    if event.group != target.group || event.plural != target.plural {
        return None;
    }
    let now = filter.matches(&event.object);
    let before = event.old.as_ref().is_some_and(|old| filter.matches(old));
    let kind = match event.kind {
        EventType::Added if now => "ADDED",
        EventType::Deleted if now => "DELETED",
        EventType::Modified if now && before => "MODIFIED",
        EventType::Modified if now => "ADDED",
        EventType::Modified if before => "DELETED",
        _ => return None,
    };
    Some(watch_line(
        kind,
        &served(&event.object, &target.group, &target.version),
    ))
}
