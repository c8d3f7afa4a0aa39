//! Manifests checked against the real Kubernetes schemas with PyPI's `kubernetes-validate
//! --strict` (scripts/test.sh installs it; the tests that call this are ignored without it).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The validator's command.
pub const VALIDATOR: &str = "kubernetes-validate";

/// Runs the validator on `files`; panics with its whole report when it fails, warns or reports
/// an error. Returns the report (stdout then stderr) for further checks.
pub fn validate_files(name: &str, files: &[&Path]) -> String {
    let output = Command::new(VALIDATOR)
        .arg("--strict")
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {VALIDATOR} ({e}); install it with `pip install kubernetes-validate` (scripts/test.sh does)")
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{name}: {VALIDATOR} failed:\n{report}"
    );
    assert!(
        !report.contains("WARN") && !report.contains("ERROR"),
        "{name}: {VALIDATOR} reported:\n{report}"
    );
    report
}

/// Validates rendered documents: all but cert-manager's (whose schemas the validator does not
/// ship) are written to one file and checked with [`validate_files`]. Returns the cert-manager
/// documents, which the caller checks by hand.
pub fn validate_documents(name: &str, docs: &[Value]) -> Vec<Value> {
    let (cert_manager, core): (Vec<Value>, Vec<Value>) = docs.iter().cloned().partition(|d| {
        d["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("cert-manager.io/"))
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("{name}.yaml"));
    let text: Vec<String> = core
        .iter()
        .map(|d| serde_yaml_ng::to_string(d).expect("a JSON value is YAML"))
        .collect();
    std::fs::write(&file, text.join("---\n")).expect("write rendered manifests");
    validate_files(name, &[&file]);
    cert_manager
}
