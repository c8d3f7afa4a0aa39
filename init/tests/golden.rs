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

const SIDECAR: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
];

const CASES: &[Case] = &[Case {
    name: "redirect-sidecar-default",
    args: SIDECAR,
    env: &[],
}];

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
