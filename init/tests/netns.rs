//! Root tests: the real binary and library in network namespaces this test creates (unique
//! names, deleted by a Drop guard). They fail loudly when not run as root.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use socket2::SockRef;
use support::{Netns, Pair};

/// The injector's sidecar command line, pinned to IPv4.
fn sidecar() -> Vec<&'static str> {
    [outrigger_init::SIDECAR_ARGS, &["--ipv6=false"]].concat()
}

/// A configuration touching every table and the built-in chains: TPROXY, DNS, excluded NIC,
/// virtual interface, drop-invalid, IPv6.
const EVERYTHING: &[&str] = &[
    "-m",
    "TPROXY",
    "-b",
    "*",
    "-d",
    "15020",
    "-i",
    "*",
    "-x",
    "10.96.0.0/12",
    "-o",
    "25",
    "-q",
    "3306",
    "-c",
    "eth9",
    "-k",
    "tap0",
    "--redirect-dns",
    "--capture-all-dns",
    "--drop-invalid",
    "--ipv6=true",
];

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit {}: {}",
        out.status,
        stderr(out)
    );
}

/// Our view of a save dump: every rule and every non-built-in chain, with its table.
fn rules_and_chains(save: &str) -> Vec<String> {
    let mut table = String::new();
    let mut out = Vec::new();
    for line in save.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = name.to_owned();
        } else if line.starts_with("-A ")
            || (line.starts_with(':')
                && !["PREROUTING", "INPUT", "OUTPUT", "FORWARD", "POSTROUTING"]
                    .iter()
                    .any(|b| line[1..].starts_with(b)))
        {
            out.push(format!("{table} {line}"));
        }
    }
    out
}

/// Both families' rules and chains as the given save tools print them.
fn snapshot_with(ns: &Netns, save4: &str, save6: &str) -> (Vec<String>, Vec<String>) {
    (
        rules_and_chains(&ns.save(save4)),
        rules_and_chains(&ns.save(save6)),
    )
}

fn snapshot(ns: &Netns) -> (Vec<String>, Vec<String>) {
    snapshot_with(ns, "iptables-save", "ip6tables-save")
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn applies_the_default_rules() {
    let ns = Netns::new("apply");
    assert_ok(&ns.outrigger(&sidecar(), &[]), "apply");
    let save = ns.save("iptables-save");
    for expected in [
        ":ISTIO_INBOUND - [0:0]",
        ":ISTIO_REDIRECT - [0:0]",
        ":ISTIO_IN_REDIRECT - [0:0]",
        ":ISTIO_OUTPUT - [0:0]",
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A OUTPUT -j ISTIO_OUTPUT",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
    ] {
        assert!(
            save.lines().any(|l| l == expected),
            "missing {expected:?} in\n{save}"
        );
    }
    assert_eq!(
        save.lines()
            .filter(|l| l.starts_with("-A ISTIO_OUTPUT "))
            .count(),
        9,
        "{save}"
    );
    assert_eq!(
        save.lines()
            .filter(|l| l.starts_with("-A ISTIO_INBOUND "))
            .count(),
        5,
        "{save}"
    );
    assert!(
        !ns.save("ip6tables-save").contains("ISTIO"),
        "IPv6 is off: no ip6tables rules"
    );
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn rerun_is_a_no_op_for_every_table() {
    let resolv = format!(
        "--resolv-conf={}/tests/golden/resolv.conf",
        env!("CARGO_MANIFEST_DIR")
    );
    let dns_groups: &[&str] = &[
        "-b",
        "80,443",
        "-i",
        "10.0.0.0/8",
        "-u",
        "1337,1338",
        "--redirect-dns",
        "--ipv6=true",
        &resolv,
    ];
    let groups_env: &[(&str, &str)] = &[("ISTIO_OUTBOUND_OWNER_GROUPS", "202,root")];
    for (label, args, env) in [
        ("default", &sidecar()[..], &[][..]),
        ("everything", EVERYTHING, &[]),
        ("dns-groups", dns_groups, groups_env),
    ] {
        let ns = Netns::new("rerun");
        assert_ok(&ns.outrigger(args, env), label);
        let (v4, v6) = (ns.save("iptables-save"), ns.save("ip6tables-save"));
        let again = ns.outrigger(args, env);
        assert_ok(&again, label);
        assert!(
            stderr(&again).contains("already installed"),
            "{label}: {}",
            stderr(&again)
        );
        assert_eq!(
            ns.save("iptables-save"),
            v4,
            "{label}: IPv4 rules changed on re-run"
        );
        assert_eq!(
            ns.save("ip6tables-save"),
            v6,
            "{label}: IPv6 rules changed on re-run"
        );
    }
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn cleanup_only_removes_ours_and_nothing_else() {
    let ns = Netns::new("cleanup");
    ns.exec_ok(
        "iptables",
        &[
            "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "9999", "-j", "RETURN",
        ],
    );
    ns.exec_ok("iptables", &["-t", "nat", "-N", "FOREIGN"]);
    ns.exec_ok(
        "iptables",
        &["-t", "nat", "-A", "PREROUTING", "-j", "FOREIGN"],
    );
    ns.exec_ok(
        "ip6tables",
        &[
            "-t",
            "mangle",
            "-A",
            "PREROUTING",
            "-i",
            "foreign0",
            "-j",
            "RETURN",
        ],
    );
    let before = snapshot(&ns);
    assert_ok(&ns.outrigger(EVERYTHING, &[]), "apply");
    assert!(
        ns.save("iptables-save").contains("eth9")
            && ns.save("ip6tables-save").contains("ISTIO_TPROXY")
    );
    let mut cleanup = EVERYTHING.to_vec();
    cleanup.push("--cleanup-only");
    assert_ok(&ns.outrigger(&cleanup, &[]), "cleanup");
    let (after4, after6) = (ns.save("iptables-save"), ns.save("ip6tables-save"));
    for save in [&after4, &after6] {
        assert!(
            !save.contains("ISTIO_"),
            "an ISTIO_ chain or jump is left:\n{save}"
        );
        assert!(
            !save.contains("eth9") && !save.contains("tap0"),
            "a built-in-chain rule of ours is left:\n{save}"
        );
    }
    assert_eq!(snapshot(&ns), before, "foreign state changed");
}

/// Cleanup with IPv6 off still removes the IPv6 rules of an earlier run with IPv6 on, and the
/// TPROXY policy routing of both families.
#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn cleanup_with_ipv6_off_removes_ipv6_rules_and_routes_too() {
    let ns = Netns::new("cleanupv6");
    let apply = [
        "-m",
        "TPROXY",
        "-b",
        "*",
        "-i",
        "*",
        "--ipv6=true",
        "-r",
        "141",
    ];
    assert_ok(&ns.outrigger(&apply, &[]), "apply with IPv6");
    assert!(ns.save("ip6tables-save").contains("ISTIO_"));
    let cleanup = [
        "-m",
        "TPROXY",
        "-b",
        "*",
        "-i",
        "*",
        "--ipv6=false",
        "-r",
        "141",
        "--cleanup-only",
    ];
    assert_ok(&ns.outrigger(&cleanup, &[]), "cleanup with IPv6 off");
    for save in ["iptables-save", "ip6tables-save"] {
        let text = ns.save(save);
        assert!(!text.contains("ISTIO_"), "{save} still holds ours:\n{text}");
    }
    for family in ["-4", "-6"] {
        let rules = ns.exec_ok("ip", &[family, "rule", "show"]);
        assert!(!rules.contains("lookup 141"), "{family}: {rules}");
    }
    let routes = ns.exec("ip", &["-4", "route", "show", "table", "141"]);
    assert!(
        String::from_utf8_lossy(&routes.stdout).trim().is_empty(),
        "{routes:?}"
    );
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn stale_state_needs_reconcile() {
    let ns = Netns::new("reconcile");
    assert_ok(&ns.outrigger(&sidecar(), &[]), "apply");
    let fresh = ns.save("iptables-save");
    ns.exec_ok(
        "iptables",
        &[
            "-t",
            "nat",
            "-I",
            "ISTIO_OUTPUT",
            "1",
            "-p",
            "tcp",
            "--dport",
            "1",
            "-j",
            "RETURN",
        ],
    );
    let foreign = ns.save("iptables-save");
    let refused = ns.outrigger(&sidecar(), &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("--reconcile"),
        "the error must say --reconcile fixes it: {}",
        stderr(&refused)
    );
    assert_eq!(
        ns.save("iptables-save"),
        foreign,
        "a refused run must change nothing"
    );
    let mut args = sidecar();
    args.push("--reconcile");
    let reconciled = ns.outrigger(&args, &[]);
    assert_ok(&reconciled, "reconcile");
    assert_eq!(
        ns.save("iptables-save"),
        fresh,
        "reconcile must leave exactly the expected rules"
    );
    // A different configuration over existing rules is stale too.
    let other = ns.outrigger(&["-p", "15001", "-b", "80", "-i", "*", "--ipv6=false"], &[]);
    assert_eq!(other.status.code(), Some(1), "{}", stderr(&other));
}

/// Restores fail on a group that does not exist; the previous rules must be back afterwards.
#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn failing_restore_changes_nothing() {
    for backend in ["nft", "legacy"] {
        let ns = Netns::new("rollback");
        let (save, save6) = if backend == "nft" {
            ("iptables-nft-save", "ip6tables-nft-save")
        } else {
            ("iptables-legacy-save", "ip6tables-legacy-save")
        };
        let force = format!("--force-iptables-binary={backend}");
        let mut old = sidecar();
        old.push(&force);
        assert_ok(&ns.outrigger(&old, &[]), "the previous rules");
        let before = snapshot_with(&ns, save, save6);
        // TPROXY writes mangle before nat: with legacy, mangle commits before nat fails.
        let mut new = EVERYTHING.to_vec();
        new.extend([force.as_str(), "--reconcile"]);
        let out = ns.outrigger(
            &new,
            &[("ISTIO_OUTBOUND_OWNER_GROUPS", "no-such-group-xyz")],
        );
        assert_eq!(out.status.code(), Some(1), "{backend}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("previous rules were restored"),
            "{backend}: {}",
            stderr(&out)
        );
        assert_eq!(
            snapshot_with(&ns, save, save6),
            before,
            "{backend}: rules changed"
        );
    }
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn route_failure_rolls_back_the_rules() {
    let ns = Netns::new("routefail");
    // With IPv6 disabled, adding ::6/128 to lo fails after the rules are in.
    let disable = "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6";
    ns.exec_ok("sh", &["-c", disable]);
    let before = snapshot(&ns);
    let out = ns.outrigger(EVERYTHING, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("previous rules were restored"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&ns), before);
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn tproxy_routes_and_ipv6_passthrough_address() {
    let ns = Netns::new("tproxy");
    let args = [
        "-m",
        "TPROXY",
        "-b",
        "*",
        "-i",
        "*",
        "--ipv6=true",
        "-t",
        "1400",
        "-r",
        "140",
    ];
    assert_ok(&ns.outrigger(&args, &[]), "apply");
    assert_ok(&ns.outrigger(&args, &[]), "re-run");
    for family in ["-4", "-6"] {
        let rules = ns.exec_ok("ip", &[family, "rule", "show"]);
        assert_eq!(
            rules.matches("fwmark 0x578 lookup 140").count(),
            1,
            "{family}: {rules}"
        );
        let routes = ns.exec_ok("ip", &[family, "route", "show", "table", "140"]);
        assert!(
            routes.contains("local default dev lo"),
            "{family}: {routes}"
        );
    }
    assert!(
        ns.exec_ok("ip", &["-6", "addr", "show", "dev", "lo"])
            .contains("::6/128")
    );
    assert!(ns.save("ip6tables-save").contains("-j TPROXY"));
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn a_default_route_we_did_not_create_is_never_replaced() {
    let ns = Netns::new("foreignroute");
    ns.exec_ok(
        "ip",
        &[
            "-4",
            "route",
            "add",
            "unreachable",
            "default",
            "table",
            "150",
        ],
    );
    let args = [
        "-m",
        "TPROXY",
        "-b",
        "*",
        "-i",
        "*",
        "--ipv6=false",
        "-r",
        "150",
    ];
    let out = ns.outrigger(&args, &[]);
    assert!(!out.status.success(), "applied over a foreign route");
    let routes = ns.exec_ok("ip", &["-4", "route", "show", "table", "150"]);
    assert!(routes.contains("unreachable default"), "{routes}");
    assert!(!routes.contains("local default"), "{routes}");
    assert!(
        !ns.save("iptables-save").contains("ISTIO_"),
        "the failed run left rules behind"
    );
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn bad_input_applies_nothing() {
    let ns = Netns::new("badinput");
    let before = ns.save("iptables-save");
    let out = ns.outrigger(&["-b", "*", "-i", "*", "-x", "*"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("-x/--istio-service-exclude-cidr"));
    assert_eq!(ns.save("iptables-save"), before);
}

/// Accepts one connection within `timeout`; returns the peer and original destination.
fn accept_one(
    listener: &TcpListener,
    timeout: Duration,
) -> Option<(SocketAddr, SocketAddrV4, String)> {
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok((mut stream, peer)) = listener.accept() {
            let orig = SockRef::from(&stream)
                .original_dst_v4()
                .ok()
                .and_then(|a| a.as_socket_ipv4());
            let orig = orig.unwrap_or_else(|| match stream.local_addr() {
                Ok(SocketAddr::V4(local)) => local,
                other => panic!("unexpected local address {other:?}"),
            });
            stream.set_nonblocking(false).expect("blocking stream");
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("read timeout");
            let mut data = String::new();
            let _ = stream.read_to_string(&mut data);
            return Some((peer, orig, data));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Binds `port` in `ns` and accepts one connection on a thread; returns once bound.
fn listen_in(
    ns: &Netns,
    port: u16,
    timeout: Duration,
) -> std::thread::JoinHandle<Option<(SocketAddr, SocketAddrV4, String)>> {
    let (ready, bound) = mpsc::channel();
    let handle = ns.run_in(move || {
        let listener =
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind test listener");
        ready.send(()).expect("signal bound");
        accept_one(&listener, timeout)
    });
    bound
        .recv_timeout(Duration::from_secs(5))
        .expect("listener bound");
    handle
}

fn connect_from(ns: &Netns, target: SocketAddrV4) {
    ns.run_in(move || {
        let mut stream =
            TcpStream::connect_timeout(&target.into(), Duration::from_secs(3)).expect("connect");
        stream.write_all(b"hello").expect("write");
    })
    .join()
    .expect("client thread");
}

/// Connects from `from` to `target` while `at` listens on `port`; returns what `at` accepted:
/// peer, original destination and the bytes sent.
fn redirected(
    at: &Netns,
    port: u16,
    from: &Netns,
    target: SocketAddrV4,
) -> (SocketAddr, SocketAddrV4, String) {
    let listener = listen_in(at, port, Duration::from_secs(5));
    connect_from(from, target);
    listener
        .join()
        .expect("listener thread")
        .unwrap_or_else(|| panic!("no connection to {target} arrived at port {port}"))
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn inbound_traffic_arrives_at_15006_with_its_original_destination() {
    let pair = Pair::new();
    assert_ok(&pair.pod.outrigger(&sidecar(), &[]), "apply");
    let target = SocketAddrV4::new(pair.pod_ip, 8080);
    let (peer, orig, data) = redirected(&pair.pod, 15006, &pair.client, target);
    assert_eq!(orig, target);
    assert_eq!(peer.ip(), std::net::IpAddr::V4(pair.client_ip));
    assert_eq!(data, "hello");
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn outbound_traffic_arrives_at_15001_with_its_original_destination() {
    let pair = Pair::new();
    assert_ok(&pair.pod.outrigger(&sidecar(), &[]), "apply");
    let target = SocketAddrV4::new(pair.client_ip, 9090);
    let (_, orig, data) = redirected(&pair.pod, 15001, &pair.pod, target);
    assert_eq!(orig, target);
    assert_eq!(data, "hello");
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn the_proxy_uid_is_not_captured() {
    let pair = Pair::new();
    assert_ok(&pair.pod.outrigger(&sidecar(), &[]), "apply");
    let remote = listen_in(&pair.client, 9090, Duration::from_secs(5));
    let capture = listen_in(&pair.pod, 15001, Duration::from_secs(2));
    let script = format!(
        "exec 3<>/dev/tcp/{}/9090 && printf proxy >&3",
        pair.client_ip
    );
    let status = pair
        .pod
        .run_in(move || {
            Command::new("bash")
                .args(["-c", &script])
                .uid(1337)
                .gid(1337)
                .status()
        })
        .join()
        .expect("spawning thread")
        .expect("bash runs");
    assert!(status.success(), "the UID 1337 client failed: {status}");
    let (peer, orig, data) = remote
        .join()
        .expect("remote thread")
        .expect("the connection reached the remote server");
    assert_eq!(peer.ip(), std::net::IpAddr::V4(pair.pod_ip));
    assert_eq!(orig, SocketAddrV4::new(pair.client_ip, 9090));
    assert_eq!(data, "proxy");
    assert!(
        capture.join().expect("capture thread").is_none(),
        "UID 1337 traffic was captured"
    );
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn validation_passes_with_rules_and_exits_126_without() {
    let ns = Netns::new("validate");
    let without = ns.outrigger(
        &[
            "--run-validation",
            "--skip-rule-apply",
            "--probe-timeout=2s",
            "--ipv6=false",
        ],
        &[],
    );
    assert_eq!(without.status.code(), Some(126), "{}", stderr(&without));
    assert!(
        stderr(&without).contains("NOT captured"),
        "{}",
        stderr(&without)
    );
    assert_ok(&ns.outrigger(&sidecar(), &[]), "apply");
    let with = ns.outrigger(
        &[
            "--run-validation",
            "--skip-rule-apply",
            "--probe-timeout=5s",
            "--ipv6=false",
        ],
        &[],
    );
    assert_ok(&with, "validation with rules installed");
    // In init-container mode the rules are applied and validated in one run.
    let other = Netns::new("validate2");
    let mut args = sidecar();
    args.push("--run-validation");
    assert_ok(&other.outrigger(&args, &[]), "apply and validate");
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn ipv6_rules_are_applied_with_ip6tables() {
    let ns = Netns::new("ipv6");
    let mut args: Vec<&str> = sidecar()
        .into_iter()
        .filter(|a| !a.starts_with("--ipv6"))
        .collect();
    args.push("--ipv6=true");
    assert_ok(&ns.outrigger(&args, &[]), "apply");
    let v6 = ns.save("ip6tables-save");
    assert!(
        v6.lines()
            .any(|l| l == "-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN"),
        "{v6}"
    );
    assert!(
        v6.lines()
            .any(|l| l == "-A ISTIO_OUTPUT -d ::1/128 -j RETURN"),
        "{v6}"
    );
    assert!(
        ns.exec_ok("ip", &["-6", "addr", "show", "dev", "lo"])
            .contains("::6/128")
    );
}

/// The fast path commits mangle before nat fails: the committed block must be undone.
#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn failing_rule_in_a_fresh_namespace_leaves_it_empty() {
    let ns = Netns::new("freshfail");
    let before = snapshot(&ns);
    let out = ns.outrigger(
        EVERYTHING,
        &[("ISTIO_OUTBOUND_OWNER_GROUPS", "no-such-group-xyz")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(snapshot(&ns), before);
}

/// iptables-restore killed (or wrapped) after committing one table, with no line number in its
/// message: every table is put back as it was, the real failure is reported, and a plain retry
/// applies (no --reconcile needed).
#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn a_restore_killed_midway_leaves_nothing_and_says_why() {
    let ns = Netns::new("killed");
    let before = snapshot(&ns);
    let dir = tempfile::tempdir().expect("temp dir");
    let wrapper = dir.path().join("iptables-nft-restore");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\n\
         # Our apply payload: commit its first table only, then die without a line number.\n\
         input=$(cat)\n\
         case \"$*:$input\" in\n\
         *--noflush*'-N ISTIO_'*)\n\
           printf '%s\\n' \"$input\" | awk '{print} /^COMMIT$/ {exit}' | /usr/sbin/iptables-nft-restore \"$@\" || exit 3\n\
           echo 'Killed' >&2; exit 137;;\n\
         *) printf '%s\\n' \"$input\" | exec /usr/sbin/iptables-nft-restore \"$@\";;\n\
         esac\n",
    )
    .expect("write the wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod the wrapper");
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let args = [
        "-m",
        "TPROXY",
        "-b",
        "*",
        "-i",
        "*",
        "--ipv6=false",
        "--force-iptables-binary",
        "nft",
    ];
    let out = ns.outrigger(&args, &[("PATH", path.as_str())]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("Killed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("restored"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("--reconcile"), "{}", stderr(&out));
    assert_eq!(snapshot(&ns), before, "a table stayed committed");
    assert_ok(&ns.outrigger(&args, &[]), "a plain retry");
}

/// Changing the configuration over existing rules is stale state: refused, nothing changed
/// (the mangle block a TPROXY restore commits before nat fails is undone).
#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn changed_configuration_is_refused_without_reconcile() {
    let ns = Netns::new("changed");
    assert_ok(&ns.outrigger(&sidecar(), &[]), "apply REDIRECT");
    let before = ns.save("iptables-save");
    let tproxy = [
        "-m",
        "TPROXY",
        "-b",
        "*",
        "-i",
        "*",
        "--drop-invalid",
        "--ipv6=false",
    ];
    let out = ns.outrigger(&tproxy, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--reconcile"), "{}", stderr(&out));
    assert_eq!(
        rules_and_chains(&ns.save("iptables-save")),
        rules_and_chains(&before)
    );
    let mut reconcile = tproxy.to_vec();
    reconcile.push("--reconcile");
    assert_ok(&ns.outrigger(&reconcile, &[]), "reconcile to TPROXY");
    let after = ns.save("iptables-save");
    assert!(
        after.contains(":ISTIO_TPROXY") && after.contains(":ISTIO_DROP"),
        "{after}"
    );
    let again = ns.outrigger(&tproxy, &[]);
    assert_ok(&again, "re-run after reconcile");
    assert!(
        stderr(&again).contains("already installed"),
        "{}",
        stderr(&again)
    );
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn force_apply_replaces_current_and_stale_rules() {
    let ns = Netns::new("force");
    assert_ok(&ns.outrigger(&sidecar(), &[]), "apply");
    let fresh = ns.save("iptables-save");
    let mut force = sidecar();
    force.push("--force-apply");
    assert_ok(&ns.outrigger(&force, &[]), "force-apply over current rules");
    assert_eq!(ns.save("iptables-save"), fresh);
    ns.exec_ok(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "ISTIO_OUTPUT",
            "-p",
            "tcp",
            "--dport",
            "2",
            "-j",
            "RETURN",
        ],
    );
    assert_ok(&ns.outrigger(&force, &[]), "force-apply over stale rules");
    assert_eq!(ns.save("iptables-save"), fresh);
}

/// TPROXY keeps the original destination as the accepted socket's local address, and the
/// policy route delivers the packets locally.
#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn tproxy_inbound_traffic_arrives_with_its_destination_intact() {
    let pair = Pair::new();
    let args = [
        "-m",
        "TPROXY",
        "-b",
        "*",
        "-d",
        "15020",
        "-i",
        "*",
        "--ipv6=false",
    ];
    assert_ok(&pair.pod.outrigger(&args, &[]), "apply TPROXY");
    let (ready, bound) = mpsc::channel();
    let listener = pair.pod.run_in(move || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .set_ip_transparent_v4(true)
            .expect("IP_TRANSPARENT (needs CAP_NET_ADMIN)");
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        socket
            .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 15006)).into())
            .expect("bind 15006");
        socket.listen(16).expect("listen");
        ready.send(()).expect("signal bound");
        let listener: TcpListener = socket.into();
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok((stream, peer)) = listener.accept() {
                return Some((peer, stream.local_addr().expect("local address")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    });
    bound
        .recv_timeout(Duration::from_secs(5))
        .expect("listener bound");
    let target = SocketAddrV4::new(pair.pod_ip, 8080);
    connect_from(&pair.client, target);
    let (peer, local) = listener
        .join()
        .expect("listener thread")
        .expect("a connection arrived at 15006");
    assert_eq!(
        local,
        SocketAddr::V4(target),
        "TPROXY keeps the destination"
    );
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(pair.client_ip),
        "TPROXY keeps the source"
    );
}

/// With --redirect-dns, UDP and TCP queries to the resolv.conf server reach the agent on 15053.
#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn dns_to_the_resolv_conf_server_is_redirected_to_15053() {
    let pair = Pair::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {}\n", pair.client_ip)).expect("write resolv.conf");
    let resolv_flag = format!("--resolv-conf={}", resolv.display());
    let args = [
        "-b",
        "*",
        "-i",
        "*",
        "--redirect-dns",
        "--ipv6=false",
        resolv_flag.as_str(),
    ];
    assert_ok(&pair.pod.outrigger(&args, &[]), "apply with DNS capture");
    let save = pair.pod.save("iptables-save");
    assert!(
        save.contains(&format!("-d {}/32", pair.client_ip)),
        "{save}"
    );

    let (ready, bound) = mpsc::channel();
    let udp = pair.pod.run_in(move || {
        let socket =
            std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 15053)).expect("bind udp 15053");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        ready.send(()).expect("signal bound");
        let mut buf = [0u8; 64];
        socket
            .recv_from(&mut buf)
            .ok()
            .map(|(n, _)| buf[..n].to_vec())
    });
    bound
        .recv_timeout(Duration::from_secs(5))
        .expect("udp listener bound");
    let server = SocketAddrV4::new(pair.client_ip, 53);
    pair.pod
        .run_in(move || {
            let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("udp client");
            socket.send_to(b"query", server).expect("send");
        })
        .join()
        .expect("udp client thread");
    assert_eq!(
        udp.join().expect("udp thread").as_deref(),
        Some(&b"query"[..]),
        "UDP DNS was not redirected"
    );

    let (_, orig, data) = redirected(&pair.pod, 15053, &pair.pod, server);
    assert_eq!(orig, server);
    assert_eq!(data, "hello");
}

/// A CNI runtime may hand the plugin a PATH without /usr/sbin; the tools are still found.
#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn applies_without_sbin_on_path() {
    let ns = Netns::new("nopath");
    assert_ok(
        &ns.outrigger(&sidecar(), &[("PATH", "/nonexistent")]),
        "apply with a useless PATH",
    );
    assert!(ns.save("iptables-save").contains(":ISTIO_OUTPUT"));
}
