//! `--config-file`: what `outrigger-routes build` writes goes through the proxy's loader; a bad
//! file is refused with its path and keeps the configuration in force; a replaced file takes
//! effect.

use std::path::{Path, PathBuf};

use clap::Parser;
use outrigger_proxy::l7::request::RetryOn;
use outrigger_proxy::l7::source::{self, ConfigStore, LoadError, Reload};
use outrigger_proxy::metrics::Metrics;

/// The mesh crate's shop application (storefront, catalog v1/v2/v3, cart, payments).
pub const SHOP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../mesh/tests/fixtures/shop");
pub const STOREFRONT: &str = "shop/storefront-v1-7c9d8f6b5d-x2k4p";

/// Runs `outrigger-routes build` (the CLI's own `run`, what its binary calls) into `out`.
pub fn routes_build(inputs: &[&str], proxy: &str, out: &Path) {
    let mut args = vec!["outrigger-routes", "build"];
    for input in inputs {
        args.extend(["-f", input]);
    }
    let out_text = out.to_str().expect("utf-8 path");
    args.extend(["--for", proxy, "-o", out_text]);
    let cli = outrigger_mesh::cli::Cli::try_parse_from(args).expect("valid build arguments");
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = outrigger_mesh::cli::run(cli, &mut stdout, &mut stderr)
        .unwrap_or_else(|e| panic!("build failed: {}", outrigger_mesh::cli::describe(&e)));
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&stderr));
}

fn built(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    routes_build(&[SHOP], STOREFRONT, &path);
    path
}

#[test]
fn routes_build_output_loads_in_json_and_yaml() {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["storefront.json", "storefront.yaml"] {
        let path = built(dir.path(), name);
        let loaded = source::load(&path).expect("the proxy loads what build writes");
        let text = std::fs::read_to_string(&path).expect("readable");
        let original: outrigger_mesh::ProxyConfig = serde_yaml_ng::from_str(&text).expect("parse");
        // The endpoints live in the run-time clusters; the whole model is `config_json`.
        assert_eq!(
            loaded.config_json(),
            serde_json::to_value(&original).expect("serializes"),
            "{name}: nothing lost or changed"
        );
        assert_eq!(loaded.config.version.len(), 16);
        assert!(!loaded.config.destinations.is_empty());
        for name in loaded.config.clusters.keys() {
            assert!(
                loaded.clusters.get(name).is_some(),
                "{name} has run-time state"
            );
        }
        // Every route's retryOn was parsed at load, not per request.
        for destination in loaded.config.destinations.values() {
            for route in &destination.http.routes {
                let text = &route.retries.retry_on;
                let parsed = loaded.retry_on(text);
                assert!(
                    matches!(parsed, std::borrow::Cow::Borrowed(_)),
                    "{name}: retryOn {text:?} not parsed at load"
                );
                assert_eq!(*parsed, RetryOn::parse(text));
            }
        }
    }
}

/// The text with the port of the first endpoint address removed.
fn without_first_port(text: &str) -> String {
    let key = "\"address\": \"";
    let start = text.find(key).expect("an endpoint") + key.len();
    let end = start + text[start..].find('"').expect("closing quote");
    let colon = start + text[start..end].rfind(':').expect("a port");
    format!("{}{}", &text[..colon], &text[end..])
}

#[test]
fn bad_files_are_refused_with_path_and_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = built(dir.path(), "good.json");
    let text = std::fs::read_to_string(&good).expect("readable");
    let cases = [
        ("not-json.json", "{ nope".to_owned(), "not-json.json: .:"),
        (
            "version.json",
            text.replace("outrigger.dev/v1alpha1", "outrigger.dev/v9"),
            "apiVersion \"outrigger.dev/v9\" is not \"outrigger.dev/v1alpha1\"",
        ),
        (
            "lb.json",
            text.replacen("\"healthy\"", "\"fine\"", 1),
            ".endpoints[0].health: unknown variant `fine`",
        ),
        ("address.json", without_first_port(&text), "is not ip:port"),
    ];
    for (name, content, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        let err = source::load(&path).expect_err(name);
        let message = err.to_string();
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
        assert!(message.contains(expected), "{name}: {message}");
    }
    let missing = source::load(&dir.path().join("missing.json")).expect_err("missing");
    assert!(matches!(missing, LoadError::Read { .. }), "{missing:?}");
}

#[test]
fn a_bad_new_file_keeps_the_old_config_and_a_replaced_file_takes_effect() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = built(dir.path(), "config.json");
    let metrics = Metrics::new();
    let store = ConfigStore::open(&path, metrics.l7.clone()).expect("initial load");
    let first = store.current().config.version.clone();
    assert!(matches!(store.check(), Reload::Unchanged));

    // A broken file, as an editor would leave it half-written.
    std::fs::write(&path, "{\"apiVersion\": ").expect("write");
    let Reload::Refused(error) = store.check() else {
        panic!("a bad file must be refused");
    };
    assert!(error.to_string().starts_with(&path.display().to_string()));
    assert_eq!(
        store.current().config.version,
        first,
        "the last good one stays"
    );
    assert!(
        matches!(store.check(), Reload::Unchanged),
        "refused once, not every poll"
    );
    let text = metrics.encode();
    assert!(
        text.contains(r#"outrigger_proxy_config_loads_total{result="refused"} 1"#),
        "{text}"
    );

    // A new good file swapped in by rename (as a ConfigMap volume or `mv` does).
    let staged = dir.path().join("staged.json");
    routes_build(&[SHOP], "shop/cart-v1-8e1f9a2b7c-m9n0o", &staged);
    std::fs::rename(&staged, &path).expect("rename");
    let Reload::Reloaded { version } = store.check() else {
        panic!("a replaced file must take effect");
    };
    assert_ne!(version, first);
    assert_eq!(store.current().config.version, version);
    assert!(
        metrics
            .encode()
            .contains(r#"outrigger_proxy_config_loads_total{result="ok"} 2"#)
    );
}
