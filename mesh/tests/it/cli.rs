//! The real binary: outputs, exit codes and the messages of bad input.

use crate::support::{STOREFRONT, routes, stderr, stdout};

const SHOP: &str = "tests/fixtures/shop";

#[test]
fn build_writes_json_or_yaml_by_extension() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (file, yaml) in [
        ("config.json", false),
        ("config.yaml", true),
        ("config.yml", true),
    ] {
        let path = dir.path().join(file);
        let out = routes(&[
            "build",
            "-f",
            SHOP,
            "--for",
            STOREFRONT,
            "-o",
            path.to_str().expect("utf-8 path"),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = std::fs::read_to_string(&path).expect("output written");
        let config: outrigger_mesh::ProxyConfig = if yaml {
            serde_yaml_ng::from_str(&text).expect("YAML ProxyConfig")
        } else {
            assert!(text.starts_with('{'));
            serde_json::from_str(&text).expect("JSON ProxyConfig")
        };
        assert_eq!(config.kind, "ProxyConfig");
        assert_eq!(config.api_version, "outrigger.dev/v1alpha1");
        config.compile().expect("every route table compiles");
    }
}

#[test]
fn build_reads_stdin_and_notes_skipped_kinds() {
    use std::io::Write as _;
    let text: String = ["00-namespace.yaml", "10-pods.yaml", "20-services.yaml"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(crate::support::fixture("shop").join(f)).expect("fixture")
                + "\n---\n"
        })
        .collect();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_outrigger-routes"))
        .args(["build", "-f", "-", "--for", STOREFRONT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("<stdin> document 2: skipped Deployment shop/catalog-v1"),
        "{}",
        stderr(&out)
    );
    let config: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert!(config["destinations"]["catalog.shop.svc.cluster.local:8080"].is_object());
}

#[test]
fn explain_text_names_rules_and_reasons() {
    let out = routes(&[
        "explain",
        "-f",
        SHOP,
        "--from",
        STOREFRONT,
        "GET http://catalog:8080/api/v3/items",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "protocol:     http (port name \"http-api\" has the protocol prefix \"http\")"
        ),
        "{text}"
    );
    assert!(
        text.contains("skipped:      shop/catalog rule 0: match[0]: header \"end-user\" is absent"),
        "{text}"
    );
    assert!(
        text.contains("matched:      VirtualService shop/catalog rule 1 (v3-preview)"),
        "{text}"
    );
    assert!(
        text.contains("outbound|8080|v3|catalog.shop.svc.cluster.local"),
        "{text}"
    );
}

#[test]
fn analyze_exit_codes() {
    assert_eq!(routes(&["analyze", "-f", SHOP]).status.code(), Some(0));
    let out = routes(&["analyze", "-f", "tests/fixtures/broken"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stdout(&out).contains("IST0101"));
    let out = routes(&["analyze", "-f", "tests/fixtures/broken", "-o", "json"]);
    let findings: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON findings");
    assert!(findings.as_array().is_some_and(|f| !f.is_empty()));
    assert_eq!(
        routes(&["analyze", "-f", "tests/fixtures/missing"])
            .status
            .code(),
        Some(2)
    );
}

fn failing(args: &[&str], text: &str) -> String {
    let out = routes(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    assert!(out.stdout.is_empty());
    let message = stderr(&out);
    assert!(message.contains(text), "{args:?}: {message}");
    assert!(!message.contains("panicked"), "{message}");
    message
}

#[test]
fn bad_input_is_named_precisely() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8").to_owned()
    };
    let yaml = write(
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a\n",
    );
    failing(
        &["analyze", "-f", &yaml],
        "bad.yaml document 1: not valid YAML",
    );
    let field = write(
        "field.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: n}\nspec:\n  host: a\n  subsets:\n  - name: v1\n    labels: [x]\n",
    );
    failing(
        &["analyze", "-f", &field],
        "field.yaml document 2 (DestinationRule n/d): spec.subsets[0].labels: invalid type: sequence, expected a map",
    );
    let version = write(
        "version.yaml",
        "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: r}\n",
    );
    failing(
        &["analyze", "-f", &version],
        "unsupported version \"networking.istio.io/v2\"",
    );
    let kindless = write("kindless.yaml", "metadata: {name: x}\n");
    failing(
        &["analyze", "-f", &kindless],
        "kindless.yaml document 1 (unknown resource): apiVersion/kind",
    );
    failing(
        &[
            "build",
            "-f",
            "tests/fixtures/broken",
            "--for",
            "demo/web-0",
        ],
        "VirtualService demo/web: spec.http[0].match[0].uri.regex: invalid RE2 regex \"/items/(\": unclosed group",
    );
    let both = write(
        "both-mirrors.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: both, namespace: shop}\nspec:\n  hosts: [catalog]\n  http:\n  - route: [{destination: {host: catalog}}]\n    mirror: {host: catalog}\n    mirrors: [{destination: {host: catalog}, percentage: {value: 150}}]\n",
    );
    failing(
        &["build", "-f", SHOP, "-f", &both, "--for", STOREFRONT],
        "VirtualService shop/both: spec.http[0]: HTTP route cannot contain both mirror and mirrors",
    );
    failing(
        &["build", "-f", SHOP, "-f", &both, "--for", STOREFRONT],
        "spec.http[0].mirrors[0].percentage.value: percentage 150 must be between 0 and 100",
    );
    failing(
        &["build", "-f", SHOP, "--for", "shop/nope"],
        "no Pod shop/nope in the inputs",
    );
    failing(
        &["build", "-f", SHOP, "--for", "nope"],
        "expected NAMESPACE/POD",
    );
    failing(
        &["explain", "-f", SHOP, "--from", STOREFRONT, "catalog"],
        "expected 'METHOD URL'",
    );
    failing(
        &[
            "explain",
            "-f",
            SHOP,
            "--from",
            STOREFRONT,
            "-H",
            "x",
            "GET http://catalog/",
        ],
        "header \"x\": expected 'name: value'",
    );
    failing(&["build", "--for", STOREFRONT], "--filename");
    failing(&["frobnicate"], "unrecognized subcommand");
}
