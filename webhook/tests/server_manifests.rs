//! The webhook manifests (`manifests/webhook`): every overlay is built the way kustomize builds
//! it (resources + JSON 6902 patches, the only features they use) and each object is validated
//! against the real Kubernetes schemas with PyPI `kubernetes-validate`; cross-references
//! (Service ↔ ports, webhook ↔ Service, RBAC ↔ webhook name, volumes ↔ Secret/ConfigMap) are
//! checked, and the ConfigMap is kept equal to the embedded configuration.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/webhook")
}

fn read_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// `kustomize build` for the subset the manifests use; anything else is refused loudly.
fn build(dir: &Path) -> Vec<Value> {
    let kustomization = read_docs(&dir.join("kustomization.yaml"));
    let [k] = kustomization.as_slice() else {
        panic!("{}: one kustomization document expected", dir.display());
    };
    for key in k.as_object().expect("kustomization is a map").keys() {
        assert!(
            ["apiVersion", "kind", "resources", "patches"].contains(&key.as_str()),
            "{}: kustomization field {key:?} is not supported by this test's builder",
            dir.display()
        );
    }
    let mut docs = Vec::new();
    for resource in k["resources"].as_array().expect("resources list") {
        let path = dir.join(resource.as_str().expect("resource path"));
        if path.is_dir() {
            docs.extend(build(&path));
        } else {
            docs.extend(read_docs(&path));
        }
    }
    for patch in k["patches"].as_array().into_iter().flatten() {
        let file = dir.join(patch["path"].as_str().expect("patch path"));
        let ops: json_patch::Patch = serde_json::from_value(Value::Array(
            read_docs(&file)
                .remove(0)
                .as_array()
                .expect("JSON 6902 list")
                .clone(),
        ))
        .unwrap_or_else(|e| panic!("{}: not a JSON 6902 patch: {e}", file.display()));
        let target = &patch["target"];
        let matches: Vec<&mut Value> = docs
            .iter_mut()
            .filter(|d| d["kind"] == target["kind"] && d["metadata"]["name"] == target["name"])
            .collect();
        assert_eq!(
            matches.len(),
            1,
            "{}: target {target} must match one object",
            file.display()
        );
        for doc in matches {
            json_patch::patch(doc, &ops).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }
    docs
}

/// Validate core objects with kubernetes-validate (strict); returns the objects it cannot know.
fn validate(name: &str, docs: &[Value]) -> Vec<Value> {
    outrigger_testkit::kubernetes_validate::validate_documents(name, docs)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn container(docs: &[Value]) -> &Value {
    &find(docs, "Deployment", "outrigger-injector")["spec"]["template"]["spec"]["containers"][0]
}

fn args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

/// Cross-references every overlay must satisfy.
fn check_wiring(docs: &[Value]) {
    let deployment = find(docs, "Deployment", "outrigger-injector");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let service = find(docs, "Service", "outrigger-injector");
    for (k, v) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&pod_labels[k], v, "Service selector {k}");
    }
    let pdb = find(docs, "PodDisruptionBudget", "outrigger-injector");
    for (k, v) in pdb["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector")
    {
        assert_eq!(&pod_labels[k], v, "PDB selector {k}");
    }
    let ports = container(docs)["ports"].as_array().expect("ports");
    for port in service["spec"]["ports"].as_array().expect("service ports") {
        assert!(
            ports.iter().any(|p| p["name"] == port["targetPort"]),
            "Service targetPort {} has no container port",
            port["targetPort"]
        );
    }
    let https = ports
        .iter()
        .find(|p| p["name"] == "https-webhook")
        .expect("https port");
    let addr = format!("--addr=0.0.0.0:{}", https["containerPort"]);
    assert!(
        args(docs).contains(&addr),
        "server listens on the container port: {addr}"
    );

    let mwc = find(docs, "MutatingWebhookConfiguration", "outrigger-injector");
    let webhooks = mwc["webhooks"].as_array().expect("webhooks");
    let names: Vec<&str> = webhooks
        .iter()
        .map(|w| w["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "rev.namespace.sidecar-injector.istio.io",
            "rev.object.sidecar-injector.istio.io",
            "namespace.sidecar-injector.istio.io",
            "object.sidecar-injector.istio.io"
        ]
    );
    for w in webhooks {
        let svc = &w["clientConfig"]["service"];
        assert_eq!(svc["name"], service["metadata"]["name"]);
        assert_eq!(svc["namespace"], service["metadata"]["namespace"]);
        assert_eq!(svc["port"], 443);
        assert_eq!(svc["path"], "/inject");
        assert_eq!(w["sideEffects"], "None");
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["timeoutSeconds"], 10);
        assert_eq!(w["reinvocationPolicy"], "Never");
        assert_eq!(
            w["admissionReviewVersions"],
            serde_json::json!(["v1", "v1beta1"])
        );
        let own_ns_excluded = w["namespaceSelector"]["matchExpressions"]
            .as_array()
            .expect("namespace expressions")
            .iter()
            .any(|e| {
                e["key"] == "kubernetes.io/metadata.name"
                    && e["operator"] == "NotIn"
                    && e["values"] == serde_json::json!(["outrigger-system"])
            });
        assert!(
            own_ns_excluded,
            "{} must exclude outrigger-system",
            w["name"]
        );
    }

    let security = &container(docs)["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    let config_volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "config")
        .expect("config volume");
    find(
        docs,
        "ConfigMap",
        config_volume["configMap"]["name"].as_str().expect("name"),
    );
}

#[test]
#[ignore = "needs kubernetes-validate (PyPI): sudo ./scripts/test.sh installs and runs it"]
fn default_install_uses_cert_manager_and_validates() {
    let docs = build(&manifests());
    let custom = validate("default", &docs);
    check_wiring(&docs);
    assert_eq!(
        find(&docs, "Deployment", "outrigger-injector")["spec"]["replicas"],
        2
    );
    assert!(
        args(&docs)
            .iter()
            .any(|a| a == "--tls-cert=/etc/outrigger/certs/tls.crt")
    );

    // cert-manager keeps the caBundle: the injector itself gets no API permissions at all.
    assert!(
        !docs.iter().any(
            |d| ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
                .contains(&d["kind"].as_str().unwrap_or_default())
        ),
        "the cert-manager install grants the injector nothing (no Secret access either)"
    );

    // cert-manager objects: kubernetes-validate has no schema for them, so check their wiring.
    let mwc = find(&docs, "MutatingWebhookConfiguration", "outrigger-injector");
    let from = mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        .as_str()
        .expect("cainjector annotation");
    let (ns, cert_name) = from.split_once('/').expect("namespace/name");
    assert_eq!(ns, "outrigger-system");
    let serving = find(&custom, "Certificate", cert_name);
    let secret = serving["spec"]["secretName"].as_str().expect("secretName");
    let volumes =
        &find(&docs, "Deployment", "outrigger-injector")["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["secret"]["secretName"] == secret),
        "the Deployment mounts the Secret cert-manager writes ({secret})"
    );
    let dns: Vec<&str> = serving["spec"]["dnsNames"]
        .as_array()
        .expect("dnsNames")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        dns.contains(&"outrigger-injector.outrigger-system.svc"),
        "{dns:?}"
    );
    for cert in custom.iter().filter(|d| d["kind"] == "Certificate") {
        let issuer = cert["spec"]["issuerRef"]["name"]
            .as_str()
            .expect("issuerRef");
        find(&custom, "Issuer", issuer);
    }
}

#[test]
#[ignore = "needs kubernetes-validate (PyPI): sudo ./scripts/test.sh installs and runs it"]
fn self_managed_overlay_validates_and_keeps_the_ca_bundle() {
    let docs = build(&manifests().join("overlays/self-managed"));
    let role = find(&docs, "ClusterRole", "outrigger-injector");
    assert_eq!(
        role["rules"][0]["resourceNames"],
        serde_json::json!(["outrigger-injector"])
    );
    assert_eq!(
        role["rules"][0]["verbs"],
        serde_json::json!(["get", "list", "watch", "patch"])
    );
    let binding = find(&docs, "ClusterRoleBinding", "outrigger-injector");
    assert_eq!(
        binding["subjects"][0]["name"],
        find(&docs, "Deployment", "outrigger-injector")["spec"]["template"]["spec"]["serviceAccountName"]
    );
    let custom = validate("self-managed", &docs);
    assert!(
        custom.is_empty(),
        "no cert-manager objects in self-managed mode"
    );
    check_wiring(&docs);
    let args = args(&docs);
    assert!(
        args.iter()
            .any(|a| a == "--webhook-config=outrigger-injector"),
        "{args:?}"
    );
    assert!(
        args.iter().any(|a| a.starts_with("--self-signed-dir=")),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--tls-cert")),
        "{args:?}"
    );
    assert!(
        args.iter()
            .any(|a| a == "--ca-secret=outrigger-injector-ca"),
        "{args:?}"
    );
    // Safe for several replicas now (one CA shared through the Secret): the base's two.
    assert_eq!(
        find(&docs, "Deployment", "outrigger-injector")["spec"]["replicas"],
        2
    );
    let ca_role = find(&docs, "Role", "outrigger-injector-ca");
    assert_eq!(
        ca_role["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["outrigger-injector-ca"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}
        ])
    );
    find(&docs, "RoleBinding", "outrigger-injector-ca");
    let mwc = find(&docs, "MutatingWebhookConfiguration", "outrigger-injector");
    assert!(
        mwc["metadata"]["annotations"].is_null(),
        "no cainjector annotation"
    );
}

#[test]
#[ignore = "needs kubernetes-validate (PyPI): sudo ./scripts/test.sh installs and runs it"]
fn the_validator_rejects_a_broken_object() {
    let mut docs = build(&manifests().join("base"));
    let deployment = docs
        .iter_mut()
        .find(|d| d["kind"] == "Deployment")
        .expect("deployment");
    deployment["spec"]["replicas"] = Value::from("two");
    let result = std::panic::catch_unwind(|| validate("broken", &docs));
    assert!(
        result.is_err(),
        "kubernetes-validate must refuse replicas: \"two\""
    );
}

#[test]
fn configmap_matches_the_embedded_configuration() {
    let docs = read_docs(&manifests().join("base/configmap.yaml"));
    let data = &find(&docs, "ConfigMap", "outrigger-injector-config")["data"];
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../inject/config");
    for file in ["config.yaml", "values.yaml", "mesh.yaml"] {
        let embedded = std::fs::read_to_string(config.join(file)).expect("embedded config file");
        assert_eq!(
            data[file].as_str(),
            Some(embedded.as_str()),
            "manifests/webhook/base/configmap.yaml {file} differs from inject/config/{file}"
        );
    }
    // And the server accepts it.
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["config.yaml", "values.yaml", "mesh.yaml"] {
        std::fs::write(dir.path().join(file), data[file].as_str().expect("text")).expect("write");
    }
    outrigger_inject::config_source::load_config_dir(dir.path()).expect("ConfigMap loads");
}

/// The container's arguments are accepted by the real binary's parser.
#[test]
fn deployment_arguments_parse() {
    for overlay in ["", "overlays/self-managed"] {
        let docs = build(&manifests().join(overlay));
        let output = Command::new(env!("CARGO_BIN_EXE_outrigger-injector"))
            .args(args(&docs))
            .arg("--check-args")
            .output()
            .expect("binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{overlay}: {stderr}");
    }
}

/// SIGTERM: the shutdown delay (serving, not ready) and the drain grace both fit inside the
/// pod's termination grace, so the kubelet never kills a draining injector.
#[test]
fn shutdown_delay_and_grace_fit_in_the_termination_grace() {
    for overlay in ["", "overlays/self-managed"] {
        let docs = build(&manifests().join(overlay));
        let flag = |name: &str| -> u64 {
            let prefix = format!("--{name}=");
            args(&docs)
                .iter()
                .find_map(|a| a.strip_prefix(&prefix).map(str::to_owned))
                .unwrap_or_else(|| panic!("{overlay}: --{name} is set"))
                .parse()
                .expect("seconds")
        };
        let delay = flag("shutdown-delay-seconds");
        let grace = flag("grace-period-seconds");
        let deployment = find(&docs, "Deployment", "outrigger-injector");
        let termination = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        assert!(delay > 0, "{overlay}: a shutdown delay is set");
        assert!(
            delay + grace < termination,
            "{overlay}: {delay}s + {grace}s must fit in {termination}s"
        );
    }
}
