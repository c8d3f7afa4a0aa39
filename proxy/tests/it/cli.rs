//! The real binary: flags, env errors, `wait`, `run` + `/quitquitquit`, SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_outrigger-proxy");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

struct Ports {
    outbound: u16,
    inbound: u16,
    status: u16,
    health: u16,
    stats: u16,
}

fn spawn_proxy(extra: &[&str]) -> (std::process::Child, Ports) {
    let ports = Ports {
        outbound: free_port(),
        inbound: free_port(),
        status: free_port(),
        health: free_port(),
        stats: free_port(),
    };
    let child = Command::new(BIN)
        .arg("run")
        .args(["--outbound-port", &ports.outbound.to_string()])
        .args(["--inbound-port", &ports.inbound.to_string()])
        .args(["--status-port", &ports.status.to_string()])
        .args(["--health-port", &ports.health.to_string()])
        .args(["--stats-port", &ports.stats.to_string()])
        .args(["--admin-port", &free_port().to_string()])
        .args(["--ipv6", "false"])
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn outrigger-proxy");
    (child, ports)
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

fn wait_ready(health: u16) -> std::process::Output {
    Command::new(BIN)
        .args([
            "wait",
            "--timeout",
            "10s",
            "--health-port",
            &health.to_string(),
        ])
        .output()
        .expect("run wait")
}

fn post(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
}

#[test]
fn help_lists_the_subcommands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["run", "wait", "drain"] {
        assert!(text.contains(sub), "{text}");
    }
}

#[test]
fn a_bad_env_value_exits_1_naming_it() {
    let out = Command::new(BIN)
        .arg("run")
        .env("OUTRIGGER_PROXY_DRAIN_DURATION", "forever")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("OUTRIGGER_PROXY_DRAIN_DURATION=\"forever\""),
        "{err}"
    );
    assert!(err.contains("expected a number"), "{err}");
}

#[test]
fn a_bad_flag_exits_2() {
    let out = Command::new(BIN)
        .args(["run", "--connect-timeout", "ten"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--connect-timeout"));
}

#[test]
fn wait_times_out_when_nothing_listens() {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args([
            "wait",
            "--timeout",
            "500ms",
            "--health-port",
            &free_port().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not ready after"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn run_wait_then_quitquitquit_exits_0() {
    let (mut child, ports) = spawn_proxy(&[]);
    let waited = wait_ready(ports.health);
    assert!(
        waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", ports.stats)).is_ok());
    assert!(post(ports.status, "/quitquitquit").starts_with("HTTP/1.1 200"));
    let status = wait_exit(&mut child, Duration::from_secs(15)).expect("exits after quitquitquit");
    assert_eq!(status.code(), Some(0));
    assert!(std::net::TcpStream::connect(("127.0.0.1", ports.outbound)).is_err());
    let _ = ports.inbound;
}

#[test]
fn drain_subcommand_makes_the_proxy_not_ready_and_sigterm_exits_0() {
    let (mut child, ports) =
        spawn_proxy(&["--drain-duration", "200ms", "--termination-grace", "2s"]);
    assert!(wait_ready(ports.health).status.success());
    let drained = Command::new(BIN)
        .args(["drain", "--status-port", &ports.status.to_string()])
        .output()
        .unwrap();
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    let again = Command::new(BIN)
        .args([
            "wait",
            "--timeout",
            "300ms",
            "--health-port",
            &ports.health.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "not ready once draining");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn config_file_and_the_injectors_discovery_address_are_refused_together() {
    let out = Command::new(BIN)
        .args(["run", "--config-file", "/etc/outrigger/proxy.json"])
        .env(
            "PROXY_CONFIG",
            r#"{"discoveryAddress":"outrigger-pilot.outrigger-system.svc:15012"}"#,
        )
        .env("POD_NAME", "web-0")
        .env("POD_NAMESPACE", "shop")
        .env("INSTANCE_IP", "10.1.2.3")
        .output()
        .expect("run the proxy");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--config-file /etc/outrigger/proxy.json and discovery (PROXY_CONFIG discoveryAddress \"outrigger-pilot.outrigger-system.svc:15012\") are exclusive"),
        "{err}"
    );
}

#[test]
fn a_bad_config_file_stops_the_start_with_its_path_and_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("proxy.json");
    std::fs::write(
        &path,
        r#"{"apiVersion": "outrigger.dev/v1alpha1", "kind": "Pod"}"#,
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["run", "--config-file", path.to_str().expect("utf-8")])
        .args(["--outbound-port", &free_port().to_string()])
        .args(["--inbound-port", &free_port().to_string()])
        .args(["--status-port", &free_port().to_string()])
        .args(["--health-port", &free_port().to_string()])
        .args(["--stats-port", &free_port().to_string()])
        .args(["--admin-port", &free_port().to_string()])
        .args(["--ipv6", "false"])
        .output()
        .expect("run the proxy");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}: ", path.display())) && stderr.contains("version"),
        "{stderr}"
    );
}

/// Starts the real proxy with `extra` flags and `env`, waits until ready, sends SIGTERM and
/// returns the exit status, the time from the signal to the exit, and what it logged.
fn sigterm_to_exit(
    extra: &[&str],
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, Duration, String) {
    use std::io::Read as _;
    let ports = Ports {
        outbound: free_port(),
        inbound: free_port(),
        status: free_port(),
        health: free_port(),
        stats: free_port(),
    };
    let mut child = Command::new(BIN)
        .arg("run")
        .args(["--outbound-port", &ports.outbound.to_string()])
        .args(["--inbound-port", &ports.inbound.to_string()])
        .args(["--status-port", &ports.status.to_string()])
        .args(["--health-port", &ports.health.to_string()])
        .args(["--stats-port", &ports.stats.to_string()])
        .args(["--admin-port", &free_port().to_string()])
        .args(["--ipv6", "false"])
        .args(extra)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn outrigger-proxy");
    assert!(wait_ready(ports.health).status.success());
    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid fits in i32")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("send SIGTERM");
    let status = wait_exit(&mut child, Duration::from_secs(60)).expect("exits after SIGTERM");
    let took = signalled.elapsed();
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut log)
        .expect("read stderr");
    (status, took, log)
}

#[test]
fn sigterm_with_a_drain_longer_than_the_grace_exits_before_the_grace() {
    // What the injector used to pass (mesh drainDuration 45s) against a 2s grace, with the
    // early end on zero connections off: the grace still wins.
    let (status, took, log) = sigterm_to_exit(
        &["--drain-duration", "45s", "--termination-grace", "2s"],
        &[("EXIT_ON_ZERO_ACTIVE_CONNECTIONS", "false")],
    );
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(took < Duration::from_secs(2), "{took:?}\n{log}");
    assert!(
        log.contains("no longer accepting connections")
            && log.contains("termination grace reached"),
        "{log}"
    );
}

#[test]
fn sigterm_with_no_connection_ends_the_drain_after_the_minimum() {
    let (status, took, log) = sigterm_to_exit(
        &["--drain-duration", "30s", "--termination-grace", "30s"],
        &[("MINIMUM_DRAIN_DURATION", "300ms")],
    );
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}\n{log}");
    assert!(
        log.contains("no longer accepting connections") && log.contains("no active connections"),
        "{log}"
    );
}
