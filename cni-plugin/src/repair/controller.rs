//! Watches the pods of this node and repairs the broken ones, with an Event and a metric each.

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};

use super::{BrokenPod, RepairMode, broken_pod, guarded_delete, label_patch};
use crate::metrics::Metrics;
use crate::names;

/// Runs until the watch stream ends (it retries with backoff on its own).
pub async fn run(
    client: Client,
    node_name: &str,
    mode: RepairMode,
    metrics: Metrics,
    reporter_instance: Option<String>,
) {
    let pods: Api<Pod> = Api::all(client.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: names::CONTROLLER_NAME.into(),
            instance: reporter_instance,
        },
    );
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let stream = watcher(pods, config).default_backoff().applied_objects();
    tokio::pin!(stream);
    tracing::info!(
        node = node_name,
        mode = mode.as_str(),
        "repair loop watching pods"
    );
    loop {
        match stream.try_next().await {
            Ok(Some(pod)) => {
                if let Some(broken) = broken_pod(&pod, mode) {
                    repair(&client, &recorder, &pod, &broken, mode, &metrics).await;
                }
            }
            Ok(None) => break,
            Err(err) => tracing::warn!(error = %err, "pod watch error"),
        }
    }
}

async fn repair(
    client: &Client,
    recorder: &Recorder,
    pod: &Pod,
    broken: &BrokenPod,
    mode: RepairMode,
    metrics: &Metrics,
) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &broken.namespace);
    let result = match mode {
        RepairMode::Delete => api
            .delete(&broken.name, &guarded_delete(broken))
            .await
            .map(|_| ()),
        RepairMode::Label => api
            .patch(
                &broken.name,
                &PatchParams::default(),
                &Patch::Merge(label_patch(broken)),
            )
            .await
            .map(|_| ()),
    };
    metrics.count_repair(mode.as_str(), result.is_ok());
    match &result {
        Ok(()) => {
            tracing::info!(namespace = %broken.namespace, pod = %broken.name, action = mode.as_str(), "repaired pod that raced the CNI plugin")
        }
        Err(err) => {
            tracing::warn!(namespace = %broken.namespace, pod = %broken.name, error = %err, "repair failed")
        }
    }
    let event = Event {
        type_: EventType::Warning,
        reason: "CNIRaceRepair".into(),
        note: Some(match &result {
            Ok(()) => format!(
                "istio-validation found no traffic capture rules (exit 126); pod {}",
                past(mode)
            ),
            Err(err) => format!(
                "istio-validation found no traffic capture rules (exit 126); {} failed: {err}",
                mode.as_str()
            ),
        }),
        action: mode.as_str().into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, &pod.object_ref(&())).await {
        tracing::warn!(error = %err, "publishing the repair Event failed");
    }
}

fn past(mode: RepairMode) -> &'static str {
    match mode {
        RepairMode::Delete => "deleted so its owner recreates it",
        RepairMode::Label => "labelled cni.istio.io/uninitialized=true",
    }
}
