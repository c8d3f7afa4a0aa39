//! Small readers over a typed Pod: the proxy container, its env, labels and annotations.

use k8s_openapi::api::core::v1::{Container, Pod};

use outrigger_api::names::container;

/// The `istio-proxy` container, in `containers` or (native sidecar) in `initContainers`.
pub fn proxy_container(pod: &Pod) -> Option<&Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container::PROXY)
}

pub fn has_init_container(pod: &Pod, name: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.init_containers.as_ref())
        .is_some_and(|inits| inits.iter().any(|c| c.name == name))
}

/// A literal env value of a container (`valueFrom` entries are not resolvable from the node).
pub fn env_value<'a>(container: &'a Container, key: &str) -> Option<&'a str> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == key)
        .and_then(|e| e.value.as_deref())
}

pub fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

pub fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}
