//! The cluster, watched once: kube-runtime reflectors on Services, EndpointSlices, Pods (kept as
//! the model's compact `PodInfo`), Namespaces and Istio's networking kinds, a change signal per event,
//! readiness once every reflector has listed, and the stores turned into a mesh `Snapshot`.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use outrigger_mesh::{PodInfo, Snapshot};
use tokio::sync::mpsc;

/// What changed. Every change triggers a debounced rebuild; a batch of only `Slice`, `Pod` and
/// `VirtualService` changes patches the previous generation (the endpoints of the Services
/// they name, the destinations of the hosts the VirtualServices name), anything else (and every
/// reflector's first list or re-list) is a full rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// An EndpointSlice of Service `namespace/service` (`None`: a slice without the
    /// `kubernetes.io/service-name` label, which no Service reads).
    Slice {
        namespace: String,
        service: Option<String>,
    },
    /// Pod `namespace/name` (its labels and readiness reach the endpoints that name it).
    Pod {
        namespace: String,
        name: String,
    },
    /// VirtualService `namespace/name` (created, edited or deleted).
    VirtualService {
        namespace: String,
        name: String,
    },
    Config,
}

impl Change {
    fn of_slice(slice: &EndpointSlice) -> Self {
        Self::Slice {
            namespace: namespace_of(&slice.metadata),
            service: slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(outrigger_api::names::label::SERVICE_NAME))
                .cloned(),
        }
    }

    fn of_pod(pod: &ReflectedPod) -> Self {
        Self::Pod {
            namespace: pod.0.namespace.clone(),
            name: pod.0.name.clone(),
        }
    }

    fn of_virtual_service(vs: &ReflectedConfig) -> Self {
        Self::VirtualService {
            namespace: vs.namespace.clone().unwrap_or_else(|| "default".to_owned()),
            name: vs.name.clone(),
        }
    }

    fn of_config<K>(_: &K) -> Self {
        Self::Config
    }

    pub fn is_config(&self) -> bool {
        *self == Self::Config
    }
}

/// What a batch without a `Config` change patches; `None` when it needs a full rebuild.
pub fn patch_of(stores: &Stores, batch: &[Change]) -> Option<crate::index::Patch> {
    if batch.iter().any(Change::is_config) {
        return None;
    }
    let virtual_services = batch
        .iter()
        .filter_map(|c| match c {
            Change::VirtualService { namespace, name } => Some((namespace.clone(), name.clone())),
            _ => None,
        })
        .collect();
    Some(crate::index::Patch {
        endpoints_of: stores.services_of(batch),
        virtual_services,
    })
}

/// The namespace of an object as the model reads it (`default` when absent).
fn namespace_of(meta: &kube::api::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned())
}

/// The Istio networking kinds pilot reads, watched at `networking.istio.io/v1` (Istio 1.22+;
/// our CRDs serve v1, v1beta1 and v1alpha3 with one schema).
pub const ISTIO_KINDS: [(&str, &str); 5] = [
    ("VirtualService", "virtualservices"),
    ("DestinationRule", "destinationrules"),
    ("ServiceEntry", "serviceentries"),
    ("Gateway", "gateways"),
    ("Sidecar", "sidecars"),
];
pub const ISTIO_GROUP: &str = "networking.istio.io";
pub const ISTIO_VERSION: &str = "v1";

/// The reflector stores, readable at any time.
#[derive(Clone)]
pub struct Stores {
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub pods: Store<ReflectedPod>,
    pub namespaces: Store<Namespace>,
    pub istio: Vec<(&'static str, Store<ReflectedConfig>)>,
    synced: Arc<Vec<(&'static str, AtomicBool)>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("unsynced", &self.unsynced())
            .finish()
    }
}

const REFLECTORS: [&str; 9] = [
    "Service",
    "EndpointSlice",
    "Pod",
    "Namespace",
    "VirtualService",
    "DestinationRule",
    "ServiceEntry",
    "Gateway",
    "Sidecar",
];

impl Stores {
    /// Whether every reflector has finished its first list.
    pub fn synced(&self) -> bool {
        self.synced.iter().all(|(_, s)| s.load(Ordering::Acquire))
    }

    /// The reflectors that have not listed yet (for the readiness answer and logs).
    pub fn unsynced(&self) -> Vec<&'static str> {
        self.synced
            .iter()
            .filter(|(_, s)| !s.load(Ordering::Acquire))
            .map(|(name, _)| *name)
            .collect()
    }

    /// The stores as the mesh model's input, plus one line per Istio resource that could not be
    /// read (left out, as Istio's webhook would have refused it).
    pub fn snapshot(&self) -> (Snapshot, Vec<String>) {
        let mut snapshot = Snapshot::default();
        // The stores' own `Arc`s: a snapshot shares the objects instead of copying them.
        snapshot.services = self.services.state();
        snapshot.endpoint_slices = self.endpoint_slices.state();
        snapshot.pods = self.pods.state().iter().map(|p| p.0.clone()).collect();
        snapshot.namespaces = self.namespaces.state();
        let mut errors = Vec::new();
        for (kind, store) in &self.istio {
            for object in store.state() {
                let mut value = match object.value() {
                    Ok(value) => value,
                    Err(error) => {
                        errors.push(format!(
                            "{kind} {}/{}: {error}",
                            object.namespace.as_deref().unwrap_or(""),
                            object.name
                        ));
                        continue;
                    }
                };
                // List items may come without their type; the model dispatches on it.
                value["apiVersion"] = serde_json::json!(format!("{ISTIO_GROUP}/{ISTIO_VERSION}"));
                value["kind"] = serde_json::json!(kind);
                if let Err(error) = snapshot.add_value("cluster", 1, value) {
                    errors.push(error.to_string());
                }
            }
        }
        (snapshot, errors)
    }

    /// The Services whose endpoints a batch of `Slice` and `Pod` changes touches: a slice's
    /// Service, and the Services of every slice in the store that names a changed pod.
    pub fn services_of(&self, changes: &[Change]) -> crate::index::ServiceRefs {
        let mut services = crate::index::ServiceRefs::new();
        let mut pods = std::collections::BTreeSet::new();
        for change in changes {
            match change {
                Change::Slice {
                    namespace,
                    service: Some(service),
                } => {
                    services.insert((namespace.clone(), service.clone()));
                }
                Change::Pod { namespace, name } => {
                    pods.insert((namespace.as_str(), name.as_str()));
                }
                Change::Slice { service: None, .. }
                | Change::VirtualService { .. }
                | Change::Config => {}
            }
        }
        if pods.is_empty() {
            return services;
        }
        for slice in self.endpoint_slices.state() {
            let namespace = namespace_of(&slice.metadata);
            let names_a_pod = slice
                .endpoints
                .iter()
                .flatten()
                .filter_map(|e| e.target_ref.as_ref())
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .any(|r| pods.contains(&(namespace.as_str(), r.name.as_deref().unwrap_or(""))));
            if names_a_pod
                && let Change::Slice {
                    namespace,
                    service: Some(service),
                } = Change::of_slice(&slice)
            {
                services.insert((namespace, service));
            }
        }
        services
    }
}

/// The annotation `kubectl apply` writes: a full copy of the object as applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reader of a reflected object looks at: `managedFields` (often larger than
/// the object) and kubectl's last-applied copy.
pub fn strip_meta(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// A Service as resolution reads it: no annotation but `networking.istio.io/exportTo`.
pub fn strip_service(service: &mut Service) {
    strip_meta(&mut service.metadata);
    if let Some(annotations) = &mut service.metadata.annotations {
        annotations.retain(|k, _| k == outrigger_mesh::names::EXPORT_TO_ANNOTATION);
        if annotations.is_empty() {
            service.metadata.annotations = None;
        }
    }
}

/// A pod in pilot's store: the model's [`PodInfo`] (a few hundred bytes; a k8s `Pod`, even
/// stripped, is several KB, and the store holds every pod of the cluster), shared with every
/// snapshot built from the store.
#[derive(Debug, Clone)]
pub struct ReflectedPod(pub Arc<PodInfo>);

impl ReflectedPod {
    pub fn from_pod(pod: &Pod) -> Self {
        Self(Arc::new(PodInfo::from_pod(pod)))
    }
}

impl Lookup for ReflectedPod {
    type DynamicType = ();

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(self.0.name.as_str().into())
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        Some(self.0.namespace.as_str().into())
    }

    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

/// An Istio object in pilot's store: its name, namespace and the object as JSON text (without
/// `managedFields` and kubectl's last-applied copy). A `DynamicObject` keeps its JSON as a
/// `serde_json::Value` tree, every JSON object in it a 640-byte B-tree node: bench/pilot-load's
/// 500 VirtualServices and 500 DestinationRules held about 13,000 of them (~8 MiB) where their
/// text is under 1 MiB. Each snapshot parses the text (the model reads Istio objects from JSON
/// values, and the snapshot used to copy the tree for that anyway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReflectedConfig {
    pub namespace: Option<String>,
    pub name: String,
    pub json: String,
}

impl ReflectedConfig {
    pub fn from_object(object: &DynamicObject) -> Self {
        Self {
            namespace: object.metadata.namespace.clone(),
            name: object.metadata.name.clone().unwrap_or_default(),
            // A `DynamicObject` is JSON already: writing it cannot fail.
            json: serde_json::to_string(object).unwrap_or_default(),
        }
    }

    /// The object as the JSON value it was.
    pub fn value(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_str(&self.json)
    }
}

impl Lookup for ReflectedConfig {
    type DynamicType = ApiResource;

    fn kind(resource: &ApiResource) -> Cow<'_, str> {
        resource.kind.as_str().into()
    }

    fn group(resource: &ApiResource) -> Cow<'_, str> {
        resource.group.as_str().into()
    }

    fn version(resource: &ApiResource) -> Cow<'_, str> {
        resource.version.as_str().into()
    }

    fn plural(resource: &ApiResource) -> Cow<'_, str> {
        resource.plural.as_str().into()
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(self.name.as_str().into())
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        self.namespace.as_deref().map(Cow::from)
    }

    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

/// A watcher event with its object converted by `convert` (the watched object is dropped once
/// converted).
fn map_event<K, T>(event: watcher::Event<K>, convert: impl Fn(&K) -> T) -> watcher::Event<T> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(convert(&o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(convert(&o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(convert(&o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// A watcher event of Istio objects as [`ReflectedConfig`]s (the tree is dropped once written).
fn reflected_config(event: watcher::Event<DynamicObject>) -> watcher::Event<ReflectedConfig> {
    map_event(event, ReflectedConfig::from_object)
}

/// A watcher event of Pods as one of [`ReflectedPod`]s: the k8s `Pod` is dropped as soon as
/// it is read.
fn reflected(event: watcher::Event<Pod>) -> watcher::Event<ReflectedPod> {
    map_event(event, ReflectedPod::from_pod)
}

/// Starts every reflector on the current runtime; each event sends a [`Change`].
pub fn start(client: kube::Client, changes: mpsc::UnboundedSender<Change>) -> Stores {
    let synced: Arc<Vec<(&'static str, AtomicBool)>> = Arc::new(
        REFLECTORS
            .iter()
            .map(|name| (*name, AtomicBool::new(false)))
            .collect(),
    );
    let config = watcher::Config::default();

    let (services, writer) = reflector::store::<Service>();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<Service>::all(client.clone()), config.clone()).modify(strip_service),
    );
    spawn_reflector("Service", Change::of_config, stream, &synced, &changes);

    let (endpoint_slices, writer) = reflector::store::<EndpointSlice>();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<EndpointSlice>::all(client.clone()), config.clone())
            .modify(|s| strip_meta(&mut s.metadata)),
    );
    spawn_reflector("EndpointSlice", Change::of_slice, stream, &synced, &changes);

    let (pods, writer) = reflector::store::<ReflectedPod>();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<Pod>::all(client.clone()), config.clone()).map(|event| event.map(reflected)),
    );
    spawn_reflector("Pod", Change::of_pod, stream, &synced, &changes);

    let (namespaces, writer) = reflector::store::<Namespace>();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<Namespace>::all(client.clone()), config.clone())
            .modify(|n| strip_meta(&mut n.metadata)),
    );
    spawn_reflector("Namespace", Change::of_config, stream, &synced, &changes);

    let mut istio = Vec::new();
    for (kind, plural) in ISTIO_KINDS {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(ISTIO_GROUP, ISTIO_VERSION, kind),
            plural,
        );
        let writer = reflector::store::Writer::<ReflectedConfig>::new(resource.clone());
        let store = writer.as_reader();
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        let stream = reflector::reflector(
            writer,
            watcher(api, config.clone())
                .modify(|o| strip_meta(&mut o.metadata))
                .map(|event| event.map(reflected_config)),
        );
        let change = if kind == "VirtualService" {
            Change::of_virtual_service
        } else {
            Change::of_config
        };
        spawn_reflector(kind, change, stream, &synced, &changes);
        istio.push((kind, store));
    }
    Stores {
        services,
        endpoint_slices,
        pods,
        namespaces,
        istio,
        synced,
    }
}

fn spawn_reflector<K, S>(
    name: &'static str,
    change: fn(&K) -> Change,
    stream: S,
    synced: &Arc<Vec<(&'static str, AtomicBool)>>,
    changes: &mpsc::UnboundedSender<Change>,
) where
    K: Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let synced = synced.clone();
    let changes = changes.clone();
    tokio::spawn(async move {
        // kube-runtime's default backoff: a failed list or watch is retried, never fatal.
        let stream = stream.default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    if let Some((_, flag)) = synced.iter().find(|(n, _)| *n == name)
                        && !flag.swap(true, Ordering::AcqRel)
                    {
                        tracing::info!(reflector = name, "synced");
                    }
                    // A (re-)list may have changed anything: a full rebuild.
                    let _ = changes.send(Change::Config);
                }
                Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => {
                    let _ = changes.send(change(&object));
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Err(error) => {
                    tracing::warn!(reflector = name, error = %outrigger_runtime::error_chain(&error), "watch failed; retrying");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflected_objects_lose_what_no_reader_reads() {
        let mut service: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "catalog", "namespace": "shop",
                "annotations": {
                    LAST_APPLIED: "{\"apiVersion\":\"v1\"}",
                    outrigger_mesh::names::EXPORT_TO_ANNOTATION: ".",
                    "deployment.kubernetes.io/revision": "3"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 8080}]}
        }))
        .expect("a Service");
        strip_service(&mut service);
        assert_eq!(service.metadata.managed_fields, None);
        let annotations = service.metadata.annotations.clone().expect("exportTo kept");
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            vec![outrigger_mesh::names::EXPORT_TO_ANNOTATION]
        );
        assert!(service.spec.is_some(), "the spec is untouched");

        let mut slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "catalog-abc", "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "catalog"},
                "annotations": {LAST_APPLIED: "{}"},
                "managedFields": [{"manager": "kube-controller-manager"}]},
            "addressType": "IPv4", "endpoints": []
        }))
        .expect("an EndpointSlice");
        strip_meta(&mut slice.metadata);
        assert_eq!(slice.metadata.managed_fields, None);
        assert_eq!(slice.metadata.annotations, None, "emptied annotations go");
        assert!(slice.metadata.labels.is_some(), "labels are kept");
    }

    #[test]
    fn a_reflected_istio_object_is_its_json_under_its_own_name() {
        let json = serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "catalog", "namespace": "shop"},
            "spec": {"hosts": ["catalog"], "http": [{"route": [{"destination": {"host": "catalog", "subset": "v1"}}]}]}
        });
        let object: DynamicObject = serde_json::from_value(json.clone()).expect("an object");
        let watcher::Event::Apply(stored) = reflected_config(watcher::Event::Apply(object.clone()))
        else {
            panic!("an Apply stays an Apply");
        };
        assert_eq!(stored.value().expect("JSON"), json, "the same object");
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(ISTIO_GROUP, ISTIO_VERSION, "VirtualService"),
            "virtualservices",
        );
        assert_eq!(
            stored.to_object_ref(resource.clone()).erase(),
            object.to_object_ref(resource).erase(),
            "keyed as the object it came from"
        );
        assert_eq!(
            Change::of_virtual_service(&stored),
            Change::VirtualService {
                namespace: "shop".into(),
                name: "catalog".into()
            }
        );
    }

    #[test]
    fn a_reflected_pod_is_the_models_pod_under_its_own_name() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "catalog-1", "namespace": "shop", "labels": {"app": "catalog"},
                "annotations": {"sidecar.istio.io/status": "{}"}},
            "spec": {"serviceAccountName": "catalog", "containers": [
                {"name": "app", "image": "catalog:1",
                 "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.244.1.11"}
        }))
        .expect("a Pod");
        let watcher::Event::Apply(stored) = reflected(watcher::Event::Apply(pod.clone())) else {
            panic!("an Apply stays an Apply");
        };
        assert_eq!(*stored.0, PodInfo::from_pod(&pod));
        let object = stored.to_object_ref(());
        assert_eq!(
            (object.name.as_str(), object.namespace.as_deref()),
            ("catalog-1", Some("shop")),
            "the store keys it as the Pod it came from"
        );
        assert_eq!(
            Change::of_pod(&stored),
            Change::Pod {
                namespace: "shop".into(),
                name: "catalog-1".into()
            }
        );
        assert!(matches!(
            reflected(watcher::Event::InitDone),
            watcher::Event::InitDone
        ));
    }
}
