//! CLI tests through the real binary: every kind of bad input exits 1 and names the flag, the
//! value and the reason; help and dry-run behave.

use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outrigger-iptables"))
        .env_clear()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the outrigger-iptables binary runs")
}

/// Asserts exit code 1, nothing on stdout, and a message naming flag, value and reason.
fn assert_rejected(args: &[&str], env: &[(&str, &str)], flag: &str, value: &str, reason: &str) {
    let out = run(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?} {env:?}: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{args:?}: printed rules: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for part in [flag, value, reason] {
        assert!(
            stderr.contains(part),
            "{args:?} {env:?}: stderr lacks {part:?}: {stderr}"
        );
    }
}

#[test]
fn bad_cidrs() {
    assert_rejected(
        &["--dry-run", "-i", "10.0.0.0/33"],
        &[],
        "-i/--istio-service-cidr",
        "10.0.0.0/33",
        "not a CIDR",
    );
    assert_rejected(
        &["--dry-run", "-i", "*", "-x", "10.0.0.0/8,nope"],
        &[],
        "-x/--istio-service-exclude-cidr",
        "nope",
        "not a CIDR",
    );
    assert_rejected(
        &["--dry-run", "-i", "not-an-ip/8"],
        &[],
        "-i/--istio-service-cidr",
        "not-an-ip/8",
        "not a CIDR",
    );
}

#[test]
fn exclude_wildcard_is_an_error() {
    assert_rejected(
        &["--dry-run", "-i", "*", "-x", "*"],
        &[],
        "-x/--istio-service-exclude-cidr",
        "\"*\"",
        "wildcard",
    );
    assert_rejected(
        &["--dry-run"],
        &[("ISTIO_SERVICE_EXCLUDE_CIDR", "*")],
        "-x/--istio-service-exclude-cidr",
        "*",
        "wildcard",
    );
}

#[test]
fn unknown_iptables_backend() {
    assert_rejected(
        &["--dry-run", "--force-iptables-binary", "xtables"],
        &[],
        "--force-iptables-binary",
        "xtables",
        "legacy or nft",
    );
    assert_rejected(
        &["--dry-run"],
        &[("FORCE_IPTABLES_BINARY", "iptables-ng")],
        "--force-iptables-binary",
        "iptables-ng",
        "legacy or nft",
    );
}

#[test]
fn ports_outside_1_to_65535() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["-p", "0"], "-p/--envoy-port", "0"),
        (&["-z", "65536"], "-z/--inbound-capture-port", "65536"),
        (&["-e", "http"], "-e/--inbound-tunnel-port", "http"),
        (&["-b", "80,99999"], "-b/--istio-inbound-ports", "80,99999"),
        (
            &["-b", "*", "-d", "15020,x"],
            "-d/--istio-local-exclude-ports",
            "15020,x",
        ),
        (&["-q", "0"], "-q/--istio-outbound-ports", "0"),
        (
            &["-o", "25,70000"],
            "-o/--istio-local-outbound-ports-exclude",
            "25,70000",
        ),
        (
            &["--iptables-probe-port", "0"],
            "--iptables-probe-port",
            "0",
        ),
    ];
    for (args, flag, value) in cases {
        let mut argv = vec!["--dry-run"];
        argv.extend_from_slice(args);
        assert_rejected(&argv, &[], flag, value, "1-65535");
    }
    assert_rejected(
        &["--dry-run"],
        &[("ENVOY_PORT", "0")],
        "-p/--envoy-port",
        "0",
        "1-65535",
    );
}

#[test]
fn invalid_interface_names() {
    assert_rejected(
        &["--dry-run", "-c", "eth 0"],
        &[],
        "-c/--istio-exclude-interfaces",
        "eth 0",
        "whitespace",
    );
    assert_rejected(
        &["--dry-run", "-k", "a/b"],
        &[],
        "-k/--kube-virt-interfaces",
        "a/b",
        "'/'",
    );
    assert_rejected(
        &["--dry-run", "-c", "averyveryverylongname"],
        &[],
        "-c/--istio-exclude-interfaces",
        "averyveryverylongname",
        "15 characters",
    );
}

#[test]
fn loopback_cidr_must_be_ipv4_loopback() {
    let flag = "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR";
    for bad in ["10.0.0.1/32", "127.0.0.1/7", "::1/128"] {
        assert_rejected(&["--dry-run"], &[(flag, bad)], flag, bad, "loopback");
    }
    assert_rejected(
        &["--dry-run"],
        &[(flag, "127.0.0.1")],
        flag,
        "127.0.0.1",
        "not an IPv4 CIDR",
    );
}

#[test]
fn other_bad_values() {
    assert_rejected(
        &["--dry-run", "-m", "TPROXY", "-t", "0"],
        &[],
        "-t/--istio-inbound-tproxy-mark",
        "0",
        "every unmarked packet",
    );
    for table in ["0", "253", "254", "255"] {
        assert_rejected(
            &["--dry-run", "-m", "TPROXY", "-r", table],
            &[],
            "-r/--istio-inbound-tproxy-route-table",
            table,
            "kernel's",
        );
    }
    assert_rejected(
        &["--dry-run", "-m", "NAT"],
        &[],
        "-m/--istio-inbound-interception-mode",
        "NAT",
        "REDIRECT or TPROXY",
    );
    assert_rejected(
        &["--dry-run", "-u", "istio-proxy"],
        &[],
        "-u/--proxy-uid",
        "istio-proxy",
        "numeric",
    );
    assert_rejected(
        &["--dry-run", "--probe-timeout", "soon"],
        &[],
        "--probe-timeout",
        "soon",
        "duration",
    );
    assert_rejected(
        &["--dry-run", "--ipv6=maybe"],
        &[],
        "--ipv6",
        "maybe",
        "true or false",
    );
    let groups = (0..65).map(|g| g.to_string()).collect::<Vec<_>>().join(",");
    assert_rejected(
        &["--dry-run"],
        &[("ISTIO_OUTBOUND_OWNER_GROUPS", &groups)],
        "ISTIO_OUTBOUND_OWNER_GROUPS",
        "64",
        "at most",
    );
}

#[test]
fn unknown_flags_exit_1_and_help_exits_0() {
    let out = run(&["--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    let out = run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--istio-inbound-ports",
        "--redirect-dns",
        "--reconcile",
        "--cleanup-only",
        "--run-validation",
        "--resolv-conf",
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn missing_resolv_conf_is_reported_when_dns_capture_needs_it() {
    let out = run(
        &[
            "--dry-run",
            "--ipv6=false",
            "--redirect-dns",
            "--resolv-conf",
            "/nonexistent/resolv.conf",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/resolv.conf"));
    // With --capture-all-dns the servers are not needed, so the file is not read.
    let out = run(
        &[
            "--dry-run",
            "--ipv6=false",
            "--redirect-dns",
            "--capture-all-dns",
            "--resolv-conf",
            "/nonexistent/resolv.conf",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dns_capture_is_off_without_servers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "search example.com\n").expect("write resolv.conf");
    let resolv_flag = format!("--resolv-conf={}", resolv.display());
    let base = run(&["--dry-run", "--ipv6=false", "-b", "*", "-i", "*"], &[]);
    let dns = run(
        &[
            "--dry-run",
            "--ipv6=false",
            "-b",
            "*",
            "-i",
            "*",
            "--redirect-dns",
            &resolv_flag,
        ],
        &[],
    );
    assert!(base.status.success() && dns.status.success());
    assert_eq!(
        base.stdout, dns.stdout,
        "no DNS servers: the rules must be the plain ones"
    );
    assert!(String::from_utf8_lossy(&dns.stderr).contains("DNS capture disabled"));
}

#[test]
fn dry_run_prints_ipv4_then_ipv6() {
    let out = run(&["--dry-run", "--ipv6=true", "-b", "*", "-i", "*"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let v4 = text.find("-s 127.0.0.6/32").expect("IPv4 payload");
    let v6 = text.find("-s ::6/128").expect("IPv6 payload");
    assert!(v4 < v6);
    assert_eq!(text.matches("* nat").count(), 2);
}

#[test]
fn json_logs_on_stderr_keep_stdout_clean() {
    let out = run(
        &[
            "--dry-run",
            "--ipv6=false",
            "--redirect-dns",
            "--log-as-json",
            "--resolv-conf=/dev/null",
        ],
        &[],
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("DNS capture disabled"))
        .expect("a warning is logged");
    assert!(
        line.starts_with('{') && line.contains("\"level\":\"WARN\""),
        "{line}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .all(|l| !l.starts_with('{'))
    );
}

#[test]
fn conflicting_flags_exit_1_naming_both_and_redundant_ones_are_warned() {
    let out = run(&["--dry-run", "-b", "8080", "-d", "8080"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "printed rules on a refusal");
    assert!(
        stderr.contains(
            "conflicting flags -b/--istio-inbound-ports and -d/--istio-local-exclude-ports: port 8080 is in both"
        ),
        "{stderr}"
    );
    let out = run(&["--dry-run", "--ipv6=false", "-t", "42"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("-t/--istio-inbound-tproxy-mark has no effect"),
        "{stderr}"
    );
}
