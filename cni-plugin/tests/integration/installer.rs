//! The installer binary on temporary directories: installs, reports readiness, repairs the
//! chain, and cleans up on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const INSTALLER: &str = env!("CARGO_BIN_EXE_outrigger-install-cni");
const PLUGIN: &str = env!("CARGO_BIN_EXE_outrigger-cni");

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Status code of GET `path`, or None while nothing listens.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("file readable")).expect("file is JSON")
}

fn ends_with_us(list: &Value) -> bool {
    list["plugins"]
        .as_array()
        .and_then(|p| p.last())
        .is_some_and(|p| p["type"] == "outrigger-cni")
}

#[test]
fn installs_keeps_the_chain_and_uninstalls_on_sigterm() {
    let root = tempfile::tempdir().expect("temp dir");
    let (bin, conf, sa) = (
        root.path().join("bin"),
        root.path().join("net.d"),
        root.path().join("sa"),
    );
    for dir in [&bin, &conf, &sa] {
        std::fs::create_dir_all(dir).expect("dir");
    }
    std::fs::write(sa.join("token"), "token-a").expect("token");
    std::fs::write(sa.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").expect("ca");
    let port = free_port();
    let child = Command::new(INSTALLER)
        .args(["--cni-bin-dir", bin.to_str().expect("utf-8")])
        .args(["--cni-conf-dir", conf.to_str().expect("utf-8")])
        .args(["--plugin-binary", PLUGIN])
        .args(["--token-path", sa.join("token").to_str().expect("utf-8")])
        .args(["--ca-path", sa.join("ca.crt").to_str().expect("utf-8")])
        .args([
            "--api-server",
            "https://10.96.0.1:443",
            "--repair",
            "off",
            "--resync-seconds",
            "1",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("installer starts");
    let mut running = Running(child);

    wait_for("binary and kubeconfig installed", || {
        bin.join("outrigger-cni").is_file() && conf.join("outrigger-cni-kubeconfig").is_file()
    });
    wait_for("readiness endpoint", || http_get(port, "/readyz").is_some());
    assert_eq!(
        http_get(port, "/readyz").expect("answer").0,
        503,
        "ready without a network configuration"
    );

    let bridge = conf.join("10-bridge.conf");
    std::fs::write(
        &bridge,
        r#"{"cniVersion":"1.0.0","name":"bridge","type":"bridge","bridge":"cni0"}"#,
    )
    .expect("conf");
    let list = conf.join("10-bridge.conflist");
    wait_for("bridge .conf converted and chained", || {
        list.is_file() && ends_with_us(&read_json(&list))
    });
    assert!(!bridge.exists());
    wait_for("ready", || {
        http_get(port, "/readyz").is_some_and(|(c, _)| c == 200)
    });

    // Another network plugin rewrites the file without us: the entry comes back.
    std::fs::write(
        &list,
        r#"{"cniVersion":"1.0.0","name":"bridge","plugins":[{"type":"bridge","bridge":"cni0"}]}"#,
    )
    .expect("rewrite");
    wait_for("entry re-inserted", || ends_with_us(&read_json(&list)));
    // The counter is bumped right after the write the test just saw.
    wait_for("two insertions counted", || {
        http_get(port, "/metrics")
            .is_some_and(|(_, text)| text.contains("outrigger_cni_chain_insertions_total 2"))
    });

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM sent");
    let status = running.0.wait().expect("installer exits");
    assert!(status.success(), "installer exit status {status}");
    assert!(!ends_with_us(&read_json(&list)), "our entry is still there");
    assert_eq!(
        read_json(&list)["plugins"]
            .as_array()
            .expect("plugins")
            .len(),
        1
    );
    assert!(!bin.join("outrigger-cni").exists());
    assert!(!conf.join("outrigger-cni-kubeconfig").exists());
}

/// Runs the installer with only `args` and no cluster env: it sets up logging, then stops at
/// the missing API server address. (success, stdout, stderr)
fn installer_without_cluster(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(INSTALLER)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("installer runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_log_filter_is_reported_and_logs_stay_off_stdout() {
    for (args, env) in [
        (vec!["--log-level", "info,[=bad"], vec![]),
        (vec![], vec![("RUST_LOG", "info,[=bad")]),
    ] {
        let (ok, stdout, stderr) = installer_without_cluster(&args, &env);
        assert!(!ok, "no API server address: must fail");
        assert!(stdout.is_empty(), "logs on stdout: {stdout}");
        assert!(
            stderr.contains("ignoring an invalid log filter") && stderr.contains("[=bad"),
            "{stderr}"
        );
        assert!(stderr.contains("KUBERNETES_SERVICE_HOST"), "{stderr}");
    }
}

#[test]
fn log_format_json_and_the_old_log_json_switch_give_json_lines() {
    for (args, env) in [
        (vec!["--log-format", "json"], vec![]),
        (vec!["--log-json"], vec![]),
        (vec![], vec![("LOG_FORMAT", "json")]),
    ] {
        let (ok, stdout, stderr) = installer_without_cluster(&args, &env);
        assert!(!ok && stdout.is_empty(), "{args:?}: {stdout}");
        let line = stderr.lines().last().unwrap_or_default();
        let json: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{args:?}: not a JSON line: {line:?}: {e}"));
        assert_eq!(json["level"], "ERROR", "{line}");
    }
    let (ok, _, stderr) = installer_without_cluster(&["--log-format", "yaml"], &[]);
    assert!(!ok && stderr.contains("text or json"), "{stderr}");
}
