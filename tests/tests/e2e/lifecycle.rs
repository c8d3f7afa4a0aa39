//! `/quitquitquit` ends the proxy, but only when asked from inside the pod; SIGTERM drains: not ready at once, open connections keep
//! working, new ones are accepted until the drain duration, then refused, and open connections
//! are closed at the termination grace; the exit code is 0.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use outrigger_e2e::topology::{INIT_ARGS, Topology};

use crate::{APP, stdout, two_pods};

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn quitquitquit_ends_the_proxy_with_exit_0() {
    let topology = Topology::new(&["a"], Path::new(APP)).expect("topology");
    topology.capture("a", INIT_ARGS).expect("capture rules");
    let mut proxy = topology.start_proxy("a", &[], &[]).expect("proxy");
    let status_port = topology.pod("a").addr(15020);
    for path in ["/quitquitquit", "/drain"] {
        let (status, body) = topology
            .from_node(&status_port, "POST", path)
            .expect("lifecycle request from the node");
        assert_eq!(status, 403, "{path} from another address: {body}");
    }
    let (status, _) = topology
        .from_node(&topology.pod("a").addr(15021), "GET", "/healthz/ready")
        .expect("readiness");
    assert_eq!(status, 200, "still serving after the refused requests");
    let metrics = topology.metrics("a").expect("metrics");
    assert!(
        metrics.contains(r#"outrigger_proxy_admin_requests_refused_total{path="/quitquitquit"} 1"#),
        "{metrics}"
    );
    let (status, _) = topology
        .from_pod("a", "127.0.0.1:15020", "POST", "/quitquitquit")
        .expect("quitquitquit from the pod's loopback");
    assert_eq!(status, 200);
    let exit = proxy
        .process
        .wait_timeout(Duration::from_secs(15))
        .expect("the proxy exits");
    assert_eq!(exit.code(), Some(0), "{}", proxy.log_text());
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn sigterm_drains_with_a_long_lived_connection_open() {
    let (topology, mut proxy_a, _proxy_b) = two_pods(
        &[],
        &["--drain-duration", "3s", "--termination-grace", "6s"],
    );
    let server = topology.pod("b").addr(9001);
    let _echo = topology
        .start_server("b", &["echo-server", &server, "stream"])
        .expect("stream echo in b");
    let mut held = topology
        .start_interactive("a", &["hold", &server])
        .expect("long-lived client in a");
    let mut input = held.child.stdin.take().expect("piped stdin");
    let mut output = BufReader::new(held.child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    output.read_line(&mut line).expect("read from the client");
    assert_eq!(line.trim(), "connected");
    let mut exchange = |text: &str| -> String {
        writeln!(input, "{text}").expect("write to the client");
        line.clear();
        output.read_line(&mut line).expect("read from the client");
        line.trim().to_owned()
    };
    assert_eq!(exchange("one"), "one", "echo through both proxies");

    let started = Instant::now();
    proxy_a.process.signal(Signal::SIGTERM).expect("SIGTERM");
    let health = topology.pod("a").addr(15021);
    let mut not_ready = false;
    while started.elapsed() < Duration::from_secs(2) {
        if let Ok((503, _)) = topology.from_node(&health, "GET", "/healthz/ready") {
            not_ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(not_ready, "not ready right after SIGTERM");

    // During the drain duration: new connections still go through.
    let during = topology
        .run_app("a", &["echo-client", &server, "1000"])
        .expect("client during the drain");
    assert_eq!(stdout(&during), "ok 1000\n", "{}", proxy_a.log_text());
    assert_eq!(exchange("two"), "two", "the open connection keeps working");

    // After the drain duration: no longer accepting, the open connection still works.
    std::thread::sleep(Duration::from_millis(3500).saturating_sub(started.elapsed()));
    let after = topology
        .run_app("a", &["echo-client", &server, "1000"])
        .expect("client after the drain");
    assert!(
        !after.status.success(),
        "refused after the drain duration: {}",
        stdout(&after)
    );
    assert_eq!(exchange("three"), "three", "still open before the grace");
    assert!(
        !proxy_a.process.has_exited(),
        "the proxy waits for the open connection"
    );

    // Just before the termination grace (a tenth of it, at most 1 s, so the kubelet's SIGKILL
    // never comes) the proxy closes the connection and exits 0.
    let exit = proxy_a
        .process
        .wait_timeout(Duration::from_secs(10))
        .expect("the proxy exits after the grace");
    let elapsed = started.elapsed();
    assert_eq!(exit.code(), Some(0), "{}", proxy_a.log_text());
    assert!(
        elapsed >= Duration::from_millis(5400) && elapsed < Duration::from_secs(6),
        "exited at {elapsed:?}, not in the last tenth before the 6 s grace"
    );
    drop(input);
    line.clear();
    output.read_line(&mut line).expect("read the close");
    assert_eq!(line.trim(), "EOF", "connection closed by the proxy");
}
