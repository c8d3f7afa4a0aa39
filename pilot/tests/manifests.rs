//! pilot's manifests (`manifests/pilot`, `manifests/crds`): validated against the real
//! Kubernetes schemas with PyPI `kubernetes-validate`, and cross-checked with the code: Service
//! and PDB selectors ↔ pod labels, ports ↔ flags, flags parsed by the real binary, the
//! ClusterRole ↔ what the reflectors watch (and nothing writable but tokenreviews), CRDs ↔ the
//! kinds and version pilot watches.

use std::path::{Path, PathBuf};
use std::process::Command;

use outrigger_pilot::cluster::{ISTIO_GROUP, ISTIO_KINDS, ISTIO_VERSION};
use serde::Deserialize;
use serde_json::Value;

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests")
        .join(name)
}

fn read_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// `kustomize build` for `resources` only (all these kustomizations use).
fn build(dir: &Path) -> Vec<Value> {
    let [k] = read_docs(&dir.join("kustomization.yaml"))
        .try_into()
        .expect("one kustomization");
    for key in k.as_object().expect("map").keys() {
        assert!(
            ["apiVersion", "kind", "resources"].contains(&key.as_str()),
            "{}: kustomization field {key:?} is not supported by this test's builder",
            dir.display()
        );
    }
    k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .flat_map(|r| read_docs(&dir.join(r.as_str().expect("path"))))
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn validate(name: &str, docs: &[Value]) {
    outrigger_testkit::kubernetes_validate::validate_documents(name, docs);
}

#[test]
#[ignore = "needs kubernetes-validate (PyPI): sudo ./scripts/test.sh runs it"]
fn pilot_and_crd_manifests_validate() {
    validate("pilot", &build(&dir("pilot")));
    validate("crds", &build(&dir("crds")));
}

#[test]
fn pilot_manifests_are_wired_to_the_code() {
    let docs = build(&dir("pilot"));
    for doc in &docs {
        if doc["kind"] != "ClusterRole" && doc["kind"] != "ClusterRoleBinding" {
            assert_eq!(
                doc["metadata"]["namespace"], "outrigger-system",
                "{}",
                doc["metadata"]["name"]
            );
        }
    }
    let deployment = find(&docs, "Deployment", "outrigger-pilot");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    let service = find(&docs, "Service", "outrigger-pilot");
    let pdb = find(&docs, "PodDisruptionBudget", "outrigger-pilot");
    for selector in [
        &service["spec"]["selector"],
        &pdb["spec"]["selector"]["matchLabels"],
    ] {
        for (k, v) in selector.as_object().expect("selector") {
            assert_eq!(&labels[k], v, "selector {k}");
        }
    }
    assert_eq!(pod["spec"]["serviceAccountName"], "outrigger-pilot");
    let container = &pod["spec"]["containers"][0];
    let ports = container["ports"].as_array().expect("ports");
    let port_of = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no container port {name}"))["containerPort"]
            .as_u64()
            .expect("number")
    };
    for port in service["spec"]["ports"].as_array().expect("service ports") {
        let target = port["targetPort"].as_str().expect("named targetPort");
        assert_eq!(
            port["port"].as_u64(),
            Some(port_of(target)),
            "{target}: Service port = container port"
        );
    }
    assert_eq!(
        (
            port_of("grpc-xds"),
            port_of("https-xds"),
            port_of("http-monitoring")
        ),
        (15010, 15012, 15014)
    );
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string").to_owned())
        .collect();
    for (flag, port) in [
        ("--xds-address", "grpc-xds"),
        ("--xds-tls-address", "https-xds"),
        ("--monitoring-address", "http-monitoring"),
    ] {
        assert!(
            args.contains(&format!("{flag}=0.0.0.0:{}", port_of(port))),
            "{flag}"
        );
    }
    assert!(args.contains(&"--token-audience=istio-ca".to_owned()));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["port"], "http-monitoring",
            "{probe}"
        );
    }
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    let mount = &container["volumeMounts"][0]["mountPath"];
    assert!(args.contains(&format!(
        "--tls-cert-file={}/tls.crt",
        mount.as_str().expect("path")
    )));
    let certificate = find(&docs, "Certificate", "outrigger-pilot");
    assert_eq!(
        certificate["spec"]["secretName"],
        pod["spec"]["volumes"][0]["secret"]["secretName"]
    );

    // The flags parse with the real binary (clap reads them all before --version answers).
    let output = Command::new(env!("CARGO_BIN_EXE_outrigger-pilot"))
        .args(&args)
        .arg("--version")
        .output()
        .expect("run outrigger-pilot");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Read-only on what the reflectors watch; create only on tokenreviews.
    let role = find(&docs, "ClusterRole", "outrigger-pilot");
    let rules = role["rules"].as_array().expect("rules");
    let allowed = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r["apiGroups"]
                .as_array()
                .expect("groups")
                .iter()
                .any(|g| g == group)
                && r["resources"]
                    .as_array()
                    .expect("resources")
                    .iter()
                    .any(|x| x == resource)
                && r["verbs"]
                    .as_array()
                    .expect("verbs")
                    .iter()
                    .any(|v| v == verb)
        })
    };
    let mut watched = vec![
        ("", "services"),
        ("", "pods"),
        ("", "namespaces"),
        ("discovery.k8s.io", "endpointslices"),
    ];
    watched.extend(ISTIO_KINDS.iter().map(|(_, plural)| (ISTIO_GROUP, *plural)));
    for (group, resource) in watched {
        for verb in ["list", "watch"] {
            assert!(allowed(group, resource, verb), "{verb} {group}/{resource}");
        }
    }
    assert!(allowed("authentication.k8s.io", "tokenreviews", "create"));
    for rule in rules {
        for verb in rule["verbs"].as_array().expect("verbs") {
            let is_review = rule["resources"] == serde_json::json!(["tokenreviews"]);
            assert!(
                ["get", "list", "watch"].contains(&verb.as_str().expect("verb")) || is_review,
                "{rule}"
            );
        }
    }
    let binding = find(&docs, "ClusterRoleBinding", "outrigger-pilot");
    assert_eq!(binding["roleRef"]["name"], "outrigger-pilot");
    assert_eq!(binding["subjects"][0]["name"], "outrigger-pilot");
}

#[test]
fn crds_serve_every_kind_pilot_watches() {
    let docs = build(&dir("crds"));
    assert_eq!(docs.len(), ISTIO_KINDS.len());
    for (kind, plural) in ISTIO_KINDS {
        let crd = find(
            &docs,
            "CustomResourceDefinition",
            &format!("{plural}.{ISTIO_GROUP}"),
        );
        assert_eq!(crd["spec"]["group"], ISTIO_GROUP);
        assert_eq!(crd["spec"]["names"]["kind"], kind);
        assert_eq!(crd["spec"]["names"]["plural"], plural);
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let versions = crd["spec"]["versions"].as_array().expect("versions");
        let names: Vec<&str> = versions
            .iter()
            .map(|v| v["name"].as_str().expect("name"))
            .collect();
        for version in ["v1", "v1beta1", "v1alpha3"] {
            assert!(names.contains(&version), "{kind} serves {version}");
        }
        let storage: Vec<&Value> = versions.iter().filter(|v| v["storage"] == true).collect();
        assert_eq!(storage.len(), 1);
        assert_eq!(
            storage[0]["name"], ISTIO_VERSION,
            "{kind}: pilot watches the stored version"
        );
    }
}

/// The root certificate the injected proxies verify pilot with reaches every namespace under
/// the names the injector mounts, from the CA that signs pilot's serving certificate.
#[test]
fn the_trust_bundle_publishes_the_ca_that_signs_pilot_where_the_proxy_reads_it() {
    use outrigger_api::names::discovery;
    let trust = build(&dir("trust"));
    let bundle = find(&trust, "Bundle", discovery::ROOT_CERT_CONFIGMAP);
    assert_eq!(bundle["apiVersion"], "trust.cert-manager.io/v1alpha1");
    assert_eq!(
        bundle["spec"]["target"]["configMap"]["key"],
        discovery::ROOT_CERT_KEY
    );
    let [source] = bundle["spec"]["sources"]
        .as_array()
        .expect("sources")
        .as_slice()
    else {
        panic!("one source: {}", bundle["spec"]["sources"]);
    };
    let pilot = build(&dir("pilot"));
    let certificate = find(&pilot, "Certificate", "outrigger-pilot");
    let issuer_name = certificate["spec"]["issuerRef"]["name"]
        .as_str()
        .expect("issuer");
    let cert_manager = read_docs(&dir("webhook/overlays/cert-manager/certificate.yaml"));
    let issuer = find(&cert_manager, "Issuer", issuer_name);
    assert_eq!(
        source["secret"]["name"], issuer["spec"]["ca"]["secretName"],
        "the bundle copies the CA of the Issuer that signs pilot ({issuer_name})"
    );
    assert_eq!(source["secret"]["key"], "tls.crt");
}
