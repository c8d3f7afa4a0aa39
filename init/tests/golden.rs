//! Golden tests: the real binary in `--dry-run` for many configurations; the expected
//! iptables-restore text lives in `tests/golden/<name>.txt`. Set `UPDATE_GOLDEN=1` to rewrite
//! the files after a deliberate change (then review the diff).

use std::path::PathBuf;
use std::process::Command;

/// One configuration: name of the golden file, arguments, environment.
struct Case {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

#[rustfmt::skip]
const SIDECAR: &[&str] = outrigger_init::SIDECAR_ARGS;

// One line per case keeps the table readable; rustfmt would put every token on its own line.
#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { name: "redirect-sidecar-default", args: SIDECAR, env: &[] },
    Case { name: "defaults-nothing-captured", args: &[], env: &[] },
    Case { name: "inbound-port-list", args: &["-b", "80,8080", "-i", "*"], env: &[] },
    Case { name: "inbound-empty-outbound-all", args: &["-b", "", "-i", "*"], env: &[] },
    Case { name: "inbound-wildcard-no-exclude", args: &["-b", "*", "-i", ""], env: &[] },
    Case { name: "exclude-ports-ignored-without-wildcard", args: &["-b", "80", "-d", "15020", "-i", ""], env: &[] },
    Case { name: "tproxy-wildcard", args: &["-m", "TPROXY", "-b", "*", "-d", "15090,15021,15020", "-i", "*"], env: &[] },
    Case { name: "tproxy-port-list", args: &["-m", "TPROXY", "-b", "80,443", "-i", "*"], env: &[] },
    Case { name: "tproxy-no-inbound", args: &["-m", "TPROXY", "-b", "", "-i", "*"], env: &[] },
    Case { name: "tproxy-mark-and-table", args: &["-m", "TPROXY", "-b", "*", "-i", "*", "-t", "1400", "-r", "140"], env: &[] },
    Case { name: "ipv6-sidecar", args: &["-i", "*", "-b", "*", "-d", "15090,15021,15020", "--ipv6=true"], env: &[] },
    Case { name: "ipv6-tproxy", args: &["-m", "TPROXY", "-b", "*", "-i", "*", "--ipv6=true"], env: &[] },
    Case { name: "ipv6-mixed-ranges", args: &["-b", "*", "-i", "10.0.0.0/8,fd00::/8", "-x", "10.96.0.0/12,fd00:96::/64", "--ipv6=true"], env: &[] },
    Case { name: "dns-resolv-conf-servers", args: &["-b", "*", "-i", "*", "--redirect-dns"], env: &[] },
    Case { name: "dns-capture-all", args: &["-b", "*", "-i", "*", "--redirect-dns", "--capture-all-dns"], env: &[] },
    Case { name: "dns-ipv6-servers", args: &["-b", "*", "-i", "*", "--redirect-dns", "--ipv6=true"], env: &[] },
    Case { name: "dns-from-env-tproxy", args: &["-b", "*", "-i", "*", "-m", "TPROXY"], env: &[("ISTIO_META_DNS_CAPTURE", "true")] },
    Case { name: "uid-gid-lists", args: &["-b", "*", "-i", "*", "-u", "1337,1338", "-g", "1339,1340"], env: &[] },
    Case { name: "dns-uid-gid-lists", args: &["-b", "*", "-i", "*", "-u", "3,4", "-g", "1,2", "--redirect-dns"], env: &[] },
    Case { name: "include-cidrs", args: &["-b", "*", "-i", "10.0.0.0/8,172.16.0.0/12", "-x", "10.96.0.0/12"], env: &[] },
    Case { name: "exclude-cidrs", args: &["-b", "*", "-i", "*", "-x", "10.0.0.0/8,192.168.0.0/16"], env: &[] },
    Case { name: "loopback-in-include", args: &["-b", "*", "-i", "127.0.0.1/32,10.0.0.0/8"], env: &[] },
    Case { name: "owner-groups-include", args: SIDECAR, env: &[("ISTIO_OUTBOUND_OWNER_GROUPS", "java,202")] },
    Case { name: "owner-groups-exclude", args: SIDECAR, env: &[("ISTIO_OUTBOUND_OWNER_GROUPS", "*"), ("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "888,ops")] },
    Case { name: "owner-groups-dns-ipv6", args: &["-b", "*", "-i", "*", "--redirect-dns", "--ipv6=true"], env: &[("ISTIO_OUTBOUND_OWNER_GROUPS", "java,202")] },
    Case { name: "virtual-interfaces-all", args: &["-b", "*", "-i", "*", "-k", "eth1,eth2"], env: &[] },
    Case { name: "virtual-interfaces-cidrs-ipv6", args: &["-b", "*", "-i", "10.0.0.0/8,fd00::/8", "-k", "eth1", "--ipv6=true"], env: &[] },
    Case { name: "exclude-nic-redirect", args: &["-b", "*", "-i", "*", "-c", "eth9,eth10"], env: &[] },
    Case { name: "exclude-nic-tproxy", args: &["-m", "TPROXY", "-b", "*", "-i", "*", "-c", "eth9"], env: &[] },
    Case { name: "drop-invalid", args: &["-b", "*", "-i", "*", "--drop-invalid"], env: &[] },
    Case { name: "drop-invalid-tproxy", args: &["-m", "TPROXY", "-b", "*", "-i", "*"], env: &[("INVALID_DROP", "true")] },
    Case { name: "loopback-cidr-env", args: SIDECAR, env: &[("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.1/8")] },
    Case { name: "outbound-ports-include", args: &["-b", "*", "-i", "", "-q", "3306,5432"], env: &[] },
    Case { name: "outbound-ports-exclude", args: &["-b", "*", "-i", "*", "-o", "25,8125"], env: &[] },
    Case { name: "custom-ports", args: &["-p", "16001", "-z", "16006", "-e", "16008", "-b", "*", "-i", "*"], env: &[] },
    Case { name: "all-from-env", args: &[], env: &[
        ("ENVOY_PORT", "17001"), ("INBOUND_CAPTURE_PORT", "17006"), ("ISTIO_INBOUND_PORTS", "*"),
        ("ISTIO_LOCAL_EXCLUDE_PORTS", "17020"), ("ISTIO_SERVICE_CIDR", "*"), ("ISTIO_SERVICE_EXCLUDE_CIDR", "169.254.169.254/32"),
        ("ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE", "9000"), ("PROXY_UID", "101"),
    ] },
    Case { name: "everything-tproxy-ipv6", args: &[
        "-m", "TPROXY", "-b", "80,443", "-i", "10.0.0.0/8,fd00::/8", "-x", "10.96.0.0/12", "-q", "3306", "-o", "25",
        "-k", "tap0", "-c", "eth9", "-u", "1337,1338", "--redirect-dns", "--drop-invalid", "--ipv6=true",
    ], env: &[("ISTIO_OUTBOUND_OWNER_GROUPS", "*"), ("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "888")] },
];

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn dry_run(case: &Case) -> String {
    let resolv = golden_dir().join("resolv.conf");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outrigger-iptables"));
    cmd.env_clear()
        .arg("--dry-run")
        .arg(format!("--resolv-conf={}", resolv.display()));
    if !case.args.iter().any(|a| a.starts_with("--ipv6")) {
        cmd.arg("--ipv6=false");
    }
    cmd.args(case.args).envs(case.env.iter().copied());
    let out = cmd.output().expect("the outrigger-iptables binary runs");
    assert!(
        out.status.success(),
        "{}: exit {}: {}",
        case.name,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("dry-run output is UTF-8");
    for line in stdout.lines() {
        let allowed = line.starts_with('#')
            || line.starts_with("* ")
            || line.starts_with("-N ")
            || line.starts_with("-A ")
            || line.starts_with("-I ")
            || line == "COMMIT";
        assert!(allowed, "{}: unexpected dry-run line {line:?}", case.name);
    }
    stdout
}

#[test]
fn dry_run_matches_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in CASES {
        let actual = dry_run(case);
        let path = golden_dir().join(format!("{}.txt", case.name));
        if update {
            std::fs::write(&path, &actual).expect("golden file is writable");
            continue;
        }
        let expected =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if actual != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                case.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_golden_file_has_a_case_and_cases_are_distinct() {
    let mut names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CASES.len(), "duplicate case names");
    assert!(
        CASES.len() >= 25,
        "issue 4 asks for at least 25 configurations"
    );
    for entry in std::fs::read_dir(golden_dir()).expect("golden dir exists") {
        let file = entry
            .expect("dir entry")
            .file_name()
            .into_string()
            .expect("UTF-8 name");
        if let Some(name) = file.strip_suffix(".txt") {
            assert!(names.contains(&name), "golden file {file} has no case");
        }
    }
    let outputs: Vec<String> = CASES.iter().map(dry_run).collect();
    for (i, a) in outputs.iter().enumerate() {
        for (j, b) in outputs.iter().enumerate().skip(i + 1) {
            assert_ne!(
                a, b,
                "cases {} and {} render the same rules",
                CASES[i].name, CASES[j].name
            );
        }
    }
}
