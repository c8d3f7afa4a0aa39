//! A pod as the traffic model reads it: the few fields resolution and analysis use, taken once
//! from a Kubernetes `Pod`. A control plane keeps one per pod of the cluster (pilot holds
//! 10,000), so it is a few hundred bytes where a k8s `Pod`, even stripped, is several KB.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::names::ENDPOINT_LABELS;

/// What resolution reads of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// `default` when the object names none (offline YAML).
    pub namespace: String,
    pub name: String,
    /// Every label: Service selectors, DestinationRule subsets and `sourceLabels` match on
    /// them. Shared, since each endpoint candidate of the pod refers to them.
    pub labels: Arc<BTreeMap<String, String>>,
    /// The labels an endpoint of this pod carries ([`ENDPOINT_LABELS`]: what metrics and
    /// subsets by version need), shared by all its endpoints in every cluster.
    pub endpoint_labels: Arc<BTreeMap<String, String>>,
    /// Istio's workload name: the Deployment of a ReplicaSet-owned pod, else the controller
    /// (or first owner), else the pod itself.
    pub workload: String,
    /// `spec.serviceAccountName`, `default` when unset.
    pub service_account: String,
    /// `status.podIP`.
    pub ip: Option<String>,
    /// The `Ready` condition is `True`, or the pod reports no such condition.
    pub ready: bool,
    /// Each container port name with the first `containerPort` of that name (a named
    /// `targetPort` means it), in the order the containers list them.
    pub named_ports: Vec<(String, i32)>,
}

impl PodInfo {
    /// Reads what the model needs of `pod` (a pod without a name, which no API server
    /// stores, gets an empty one: it can still be selected in offline YAML, never named).
    pub fn from_pod(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let name = meta.name.clone().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        let workload = workload_name(pod, &name, &labels);
        let spec = pod.spec.as_ref();
        let mut named_ports: Vec<(String, i32)> = Vec::new();
        let ports = spec
            .into_iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten());
        for port in ports {
            if let Some(port_name) = &port.name
                && !named_ports.iter().any(|(n, _)| n == port_name)
            {
                named_ports.push((port_name.clone(), port.container_port));
            }
        }
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_none_or(|c| c.status == "True");
        Self {
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            name,
            endpoint_labels: Arc::new(
                labels
                    .iter()
                    .filter(|(k, _)| ENDPOINT_LABELS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            labels: Arc::new(labels),
            workload,
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".to_owned()),
            ip: status.and_then(|s| s.pod_ip.clone()),
            ready,
            named_ports,
        }
    }

    /// The container port a named `targetPort` means in this pod.
    pub fn named_port(&self, name: &str) -> Option<i32> {
        self.named_ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, port)| *port)
    }
}

/// Istio's workload name of a pod.
fn workload_name(pod: &Pod, name: &str, labels: &BTreeMap<String, String>) -> String {
    let owner = pod.metadata.owner_references.as_ref().and_then(|owners| {
        owners
            .iter()
            .find(|o| o.controller == Some(true))
            .or(owners.first())
    });
    let Some(owner) = owner else {
        return name.to_owned();
    };
    if owner.kind == "ReplicaSet"
        && let Some(hash) = labels.get("pod-template-hash")
        && let Some(deployment) = owner.name.strip_suffix(&format!("-{hash}"))
    {
        return deployment.to_owned();
    }
    owner.name.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("a Pod")
    }

    #[test]
    fn reads_what_resolution_needs_of_a_pod() {
        let info = PodInfo::from_pod(&pod(serde_json::json!({
            "metadata": {
                "name": "reviews-v2-7d4f9-abcde", "namespace": "shop",
                "labels": {"app": "reviews", "version": "v2", "pod-template-hash": "7d4f9"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "1"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v2-7d4f9",
                     "uid": "2", "controller": true}]},
            "spec": {"serviceAccountName": "bookinfo-reviews", "containers": [
                {"name": "app", "ports": [{"name": "http", "containerPort": 9080},
                                          {"containerPort": 9443}]},
                {"name": "istio-proxy", "ports": [{"name": "http", "containerPort": 15090},
                                                  {"name": "http-envoy-prom", "containerPort": 15090}]}]},
            "status": {"podIP": "10.1.2.3", "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"}]}
        })));
        assert_eq!(info.namespace, "shop");
        assert_eq!(info.name, "reviews-v2-7d4f9-abcde");
        assert_eq!(info.labels.get("version").map(String::as_str), Some("v2"));
        assert_eq!(
            info.endpoint_labels.keys().collect::<Vec<_>>(),
            ["app", "version"],
            "the pod-template-hash is no endpoint label"
        );
        assert_eq!(info.workload, "reviews-v2", "the controller's Deployment");
        assert_eq!(info.service_account, "bookinfo-reviews");
        assert_eq!(info.ip.as_deref(), Some("10.1.2.3"));
        assert!(!info.ready, "Ready is False");
        assert_eq!(
            info.named_port("http"),
            Some(9080),
            "the first port of a name"
        );
        assert_eq!(info.named_port("http-envoy-prom"), Some(15090));
        assert_eq!(info.named_port("grpc"), None);
        assert_eq!(info.named_ports.len(), 2, "an unnamed port is not kept");
    }

    #[test]
    fn a_bare_pod_gets_the_defaults() {
        let info = PodInfo::from_pod(&pod(serde_json::json!({"metadata": {"name": "p"}})));
        assert_eq!(info.namespace, "default");
        assert_eq!(info.workload, "p", "no owner: the pod itself");
        assert_eq!(info.service_account, "default");
        assert!(info.ready, "no Ready condition reported");
        assert_eq!(info.ip, None);
        assert_eq!(
            PodInfo::from_pod(&pod(serde_json::json!({"metadata": {}}))).name,
            ""
        );

        let owned = PodInfo::from_pod(&pod(serde_json::json!({"metadata": {
            "name": "job-x", "labels": {"pod-template-hash": "zz"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "nightly", "uid": "1"}]}})));
        assert_eq!(
            owned.workload, "nightly",
            "a non-ReplicaSet owner is the workload"
        );
    }
}
