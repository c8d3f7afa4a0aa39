//! The inputs of a resolution: Kubernetes objects and Istio resources, read from multi-document
//! YAML (files, directories, `-` for stdin). Kinds we do not read are skipped with a note.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::LoadError;
use crate::istio::{DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService};
use crate::names::ISTIO_NETWORKING_VERSIONS;
use crate::pod::PodInfo;
use outrigger_api::names::networking;

/// Everything `resolve` and `analyze` read. Order of the vectors does not matter: consumers sort.
/// The Kubernetes objects are shared (`Arc`): pilot builds a snapshot per rebuild from its
/// reflector stores, which hold `Arc`s, so a snapshot and the patches cut from it copy pointers,
/// not 10,000 pods (bench/pilot-load).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub endpoints: Vec<Endpoints>,
    /// Pods as the model reads them ([`PodInfo`]), not whole k8s `Pod`s.
    pub pods: Vec<Arc<PodInfo>>,
    pub namespaces: Vec<Arc<Namespace>>,
    pub virtual_services: Vec<VirtualService>,
    pub destination_rules: Vec<DestinationRule>,
    pub service_entries: Vec<ServiceEntry>,
    pub gateways: Vec<Gateway>,
    pub sidecars: Vec<Sidecar>,
    /// Documents skipped (kinds we do not read), one line each.
    pub notes: Vec<String>,
    /// `Kind namespace/name` → where it was read, to refuse a second definition.
    seen: BTreeMap<String, String>,
}

impl Snapshot {
    /// Reads every path: a file, a directory (its `.yaml`, `.yml` and `.json` files, sorted,
    /// recursively) or `-` for stdin.
    pub fn load(paths: &[PathBuf]) -> Result<Self, LoadError> {
        let mut snapshot = Self::default();
        for path in paths {
            snapshot.load_path(path)?;
        }
        Ok(snapshot)
    }

    fn load_path(&mut self, path: &Path) -> Result<(), LoadError> {
        let read_error = |source| LoadError::Read {
            path: path.display().to_string(),
            source,
        };
        if path == Path::new("-") {
            let text = std::io::read_to_string(std::io::stdin()).map_err(read_error)?;
            return self.add_yaml("<stdin>", &text);
        }
        if path.is_dir() {
            let mut entries = Vec::new();
            for entry in std::fs::read_dir(path).map_err(read_error)? {
                entries.push(entry.map_err(read_error)?.path());
            }
            entries.sort();
            for entry in entries {
                let is_yaml = entry
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
                if entry.is_dir() || is_yaml {
                    self.load_path(&entry)?;
                }
            }
            return Ok(());
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        self.add_yaml(&path.display().to_string(), &text)
    }

    /// Adds every document of a multi-document YAML text; `source_name` appears in errors.
    pub fn add_yaml(&mut self, source_name: &str, text: &str) -> Result<(), LoadError> {
        for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let number = index + 1;
            let value =
                serde_json::Value::deserialize(document).map_err(|err| LoadError::Yaml {
                    source_name: source_name.to_owned(),
                    document: number,
                    message: err.to_string(),
                })?;
            self.add_value(source_name, number, value)?;
        }
        Ok(())
    }

    /// Adds one parsed document (a `List` is unpacked into its items).
    pub fn add_value(
        &mut self,
        source_name: &str,
        document: usize,
        value: serde_json::Value,
    ) -> Result<(), LoadError> {
        if value.is_null() {
            return Ok(());
        }
        let api_version = value.get("apiVersion").and_then(|v| v.as_str());
        let kind = value.get("kind").and_then(|v| v.as_str());
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            return Err(LoadError::Field {
                source_name: source_name.to_owned(),
                document,
                resource: "unknown resource".to_owned(),
                field: "apiVersion/kind".to_owned(),
                message: "every document needs a string apiVersion and kind".to_owned(),
            });
        };
        let (api_version, kind) = (api_version.to_owned(), kind.to_owned());
        if kind.ends_with("List") {
            let items = match value {
                serde_json::Value::Object(mut map) => map.remove("items"),
                _ => None,
            };
            let serde_json::Value::Array(items) = items.unwrap_or_default() else {
                return Err(self.field_error(
                    source_name,
                    document,
                    &kind,
                    "",
                    "items",
                    "a list needs an items array",
                ));
            };
            for item in items {
                self.add_value(source_name, document, item)?;
            }
            return Ok(());
        }
        let (group, _version) = api_version
            .rsplit_once('/')
            .unwrap_or(("", api_version.as_str()));
        let istio = group == networking::GROUP;
        if istio && !ISTIO_NETWORKING_VERSIONS.contains(&_version) {
            return Err(self.field_error(
                source_name,
                document,
                &kind,
                &describe(&value),
                "apiVersion",
                &format!("unsupported version {api_version:?} (use networking.istio.io/v1, v1beta1 or v1alpha3)"),
            ));
        }
        let where_ = format!("{source_name} document {document}");
        match (group, kind.as_str()) {
            ("", "Service") => push_shared(self, &where_, source_name, document, value, |s| {
                &mut s.services
            }),
            ("", "Pod") => push_as(
                self,
                &where_,
                source_name,
                document,
                value,
                |pod: Pod| Arc::new(PodInfo::from_pod(&pod)),
                |s| &mut s.pods,
            ),
            ("", "Namespace") => push_shared(self, &where_, source_name, document, value, |s| {
                &mut s.namespaces
            }),
            ("", "Endpoints") => push(self, &where_, source_name, document, value, |s| {
                &mut s.endpoints
            }),
            ("discovery.k8s.io", "EndpointSlice") => {
                push_shared(self, &where_, source_name, document, value, |s| {
                    &mut s.endpoint_slices
                })
            }
            (networking::GROUP, "VirtualService") => {
                push(self, &where_, source_name, document, value, |s| {
                    &mut s.virtual_services
                })
            }
            (networking::GROUP, "DestinationRule") => {
                push(self, &where_, source_name, document, value, |s| {
                    &mut s.destination_rules
                })
            }
            (networking::GROUP, "ServiceEntry") => {
                push(self, &where_, source_name, document, value, |s| {
                    &mut s.service_entries
                })
            }
            (networking::GROUP, "Gateway") => {
                push(self, &where_, source_name, document, value, |s| {
                    &mut s.gateways
                })
            }
            (networking::GROUP, "Sidecar") => {
                push(self, &where_, source_name, document, value, |s| {
                    &mut s.sidecars
                })
            }
            _ => {
                self.notes.push(format!(
                    "{where_}: skipped {kind} {} ({api_version} is not an input of the traffic model)",
                    describe(&value)
                ));
                Ok(())
            }
        }
    }

    fn field_error(
        &self,
        source_name: &str,
        document: usize,
        kind: &str,
        name: &str,
        field: &str,
        message: &str,
    ) -> LoadError {
        LoadError::Field {
            source_name: source_name.to_owned(),
            document,
            resource: format!("{kind} {name}").trim_end().to_owned(),
            field: field.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// `namespace/name` of a raw document (`default` namespace when none).
fn describe(value: &serde_json::Value) -> String {
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("");
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str())
        .unwrap_or("default");
    format!("{namespace}/{name}")
}

/// Deserializes one document into its typed vector, naming the field on failure.
fn push<T: DeserializeOwned>(
    snapshot: &mut Snapshot,
    where_: &str,
    source_name: &str,
    document: usize,
    value: serde_json::Value,
    target: impl FnOnce(&mut Snapshot) -> &mut Vec<T>,
) -> Result<(), LoadError> {
    push_as(
        snapshot,
        where_,
        source_name,
        document,
        value,
        |t| t,
        target,
    )
}

/// [`push`] for the shared Kubernetes kinds.
fn push_shared<T: DeserializeOwned>(
    snapshot: &mut Snapshot,
    where_: &str,
    source_name: &str,
    document: usize,
    value: serde_json::Value,
    target: impl FnOnce(&mut Snapshot) -> &mut Vec<Arc<T>>,
) -> Result<(), LoadError> {
    push_as(
        snapshot,
        where_,
        source_name,
        document,
        value,
        Arc::new,
        target,
    )
}

fn push_as<T: DeserializeOwned, C>(
    snapshot: &mut Snapshot,
    where_: &str,
    source_name: &str,
    document: usize,
    value: serde_json::Value,
    wrap: impl FnOnce(T) -> C,
    target: impl FnOnce(&mut Snapshot) -> &mut Vec<C>,
) -> Result<(), LoadError> {
    let kind = value
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_owned();
    let resource = format!("{kind} {}", describe(&value));
    let typed: T = serde_path_to_error::deserialize(value).map_err(|err| LoadError::Field {
        source_name: source_name.to_owned(),
        document,
        resource: resource.clone(),
        field: err.path().to_string(),
        message: err.into_inner().to_string(),
    })?;
    if let Some(first) = snapshot.seen.get(&resource) {
        return Err(LoadError::Duplicate {
            source_name: source_name.to_owned(),
            document,
            resource,
            first: first.clone(),
        });
    }
    snapshot.seen.insert(resource, where_.to_owned());
    target(snapshot).push(wrap(typed));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_and_skips_unknown_kinds() {
        let mut snapshot = Snapshot::default();
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a, namespace: n}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
        snapshot.add_yaml("t.yaml", text).expect("valid yaml");
        assert_eq!(snapshot.services.len(), 1);
        assert_eq!(snapshot.notes.len(), 1);
        assert!(snapshot.notes[0].contains("skipped Deployment default/d"));
    }

    #[test]
    fn names_the_field_of_a_bad_document() {
        let mut snapshot = Snapshot::default();
        let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: n}\nspec:\n  http:\n  - timeout: [1]\n";
        let err = snapshot.add_yaml("t.yaml", text).expect_err("bad timeout");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "t.yaml document 1 (VirtualService n/r): spec.http[0].timeout: invalid type"
            ),
            "{text}"
        );
    }

    #[test]
    fn refuses_a_second_definition() {
        let mut snapshot = Snapshot::default();
        let doc = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: n}\n";
        snapshot.add_yaml("a.yaml", doc).expect("first");
        let err = snapshot.add_yaml("b.yaml", doc).expect_err("second");
        assert!(
            err.to_string().contains("first in a.yaml document 1"),
            "{err}"
        );
    }
}
