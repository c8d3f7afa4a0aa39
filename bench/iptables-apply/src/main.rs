//! Applies the default sidecar rules into fresh network namespaces many times and compares, in
//! the same run, with `iptables-restore --noflush` of the same text (the floor). Needs root.
//!
//! Run: `cargo build --release -p outrigger-init --bins &&
//!       cargo run --release -p outrigger-bench-iptables-apply -- [iterations]`

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use nix::sched::{CloneFlags, unshare};
use outrigger_init::apply::{self, ApplyOptions, ApplyOutcome, Backend, BackendChoice, Tool};
use outrigger_init::rule::Family;
use outrigger_init::{CaptureConfig, HostInfo, plan, render};

/// The sidecar command line, as the injector writes it.
/// The injector's sidecar command line, pinned to IPv4.
fn sidecar_args() -> Vec<&'static str> {
    [outrigger_init::SIDECAR_ARGS, &["--ipv6=false"]].concat()
}

/// Targets from issue 4.
const MAX_RATIO: f64 = 1.3;
const MAX_MEDIAN: Duration = Duration::from_millis(50);

fn main() -> anyhow::Result<()> {
    let iterations: usize = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .context("the argument is the number of iterations")?,
        None => 100,
    };
    ensure!(
        nix::unistd::geteuid().is_root(),
        "this benchmark creates network namespaces: run it as root"
    );
    let cli = sibling_binary("outrigger-iptables")?;
    let cfg = CaptureConfig::sidecar_default();
    let rules = plan(&cfg, &HostInfo::default());
    let payload = render(&rules).ipv4;
    let backend = in_fresh_netns(|| Ok(Backend::detect(BackendChoice::Auto)))?;
    let restore = backend.program(Family::V4, Tool::Restore);
    let opts = ApplyOptions::default();

    let save = backend.program(Family::V4, Tool::Save);
    let (mut library, mut binary, mut plain, mut save_only) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..iterations {
        // Alternate the order so drift (other load on the machine) hits all three alike.
        let mut runs: Vec<u8> = vec![0, 1, 2, 3];
        runs.rotate_left(i % 4);
        for which in runs {
            match which {
                0 => library.push(in_fresh_netns(|| {
                    let start = Instant::now();
                    let outcome = apply::apply(&cfg, &rules, &opts)?;
                    ensure!(
                        outcome == ApplyOutcome::Applied,
                        "unexpected outcome {outcome:?}"
                    );
                    Ok(start.elapsed())
                })?),
                1 => binary.push(in_fresh_netns(|| {
                    let start = Instant::now();
                    let status = Command::new(&cli)
                        .args(sidecar_args())
                        .env("RUST_LOG", "warn")
                        .status()?;
                    ensure!(status.success(), "outrigger-iptables failed: {status}");
                    Ok(start.elapsed())
                })?),
                3 => save_only.push(in_fresh_netns(|| {
                    let start = Instant::now();
                    let out = Command::new(&save).output()?;
                    ensure!(out.status.success(), "{save} failed: {}", out.status);
                    Ok(start.elapsed())
                })?),
                _ => plain.push(in_fresh_netns(|| {
                    let start = Instant::now();
                    let mut child = Command::new(&restore)
                        .arg("--noflush")
                        .stdin(Stdio::piped())
                        .spawn()?;
                    child
                        .stdin
                        .take()
                        .context("stdin")?
                        .write_all(payload.as_bytes())?;
                    let status = child.wait()?;
                    ensure!(status.success(), "{restore} failed: {status}");
                    Ok(start.elapsed())
                })?),
            }
        }
    }
    // Ratios of runs made in the same iteration, before sorting: robust to load drifting.
    let paired = |samples: &[Duration]| -> f64 {
        let mut ratios: Vec<f64> = samples
            .iter()
            .zip(&plain)
            .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    let (paired_library, paired_binary) = (paired(&library), paired(&binary));
    let floor = median(&mut plain);
    println!(
        "iptables-apply benchmark: {iterations} fresh network namespaces each, backend {backend:?}"
    );
    println!(
        "  {:<44} median {:>7.2} ms  p90 {:>7.2} ms",
        format!("plain `{restore} --noflush` (floor)"),
        ms(floor),
        ms(p90(&mut plain))
    );
    println!(
        "  {:<44} median {:>7.2} ms  (read only on the careful path, not into fresh namespaces)",
        format!("plain `{save}`"),
        ms(median(&mut save_only))
    );
    let mut verdicts = Vec::new();
    for (name, samples, paired) in [
        (
            "outrigger_init::apply::apply (library)",
            &mut library,
            paired_library,
        ),
        ("outrigger-iptables binary", &mut binary, paired_binary),
    ] {
        let m = median(samples);
        let ratio = m.as_secs_f64() / floor.as_secs_f64();
        println!(
            "  {name:<44} median {:>7.2} ms  p90 {:>7.2} ms  ratio {ratio:.2}x (paired median {paired:.2}x)",
            ms(m),
            ms(p90(samples))
        );
        verdicts.push((name, ratio <= MAX_RATIO && m <= MAX_MEDIAN, ratio, m));
    }
    for (name, ok, ratio, m) in &verdicts {
        println!(
            "  target (<= {MAX_RATIO}x and <= {} ms) for {name}: {} ({ratio:.2}x, {:.2} ms)",
            MAX_MEDIAN.as_millis(),
            if *ok { "met" } else { "MISSED" },
            ms(*m)
        );
    }
    Ok(())
}

/// Runs `f` on a new thread inside a brand-new network namespace (gone when the thread ends).
fn in_fresh_netns<T: Send>(f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                unshare(CloneFlags::CLONE_NEWNET).context("unshare a network namespace")?;
                f()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
    })
}

/// A binary of another package, built into the same target directory.
fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("executable directory")?.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: run `cargo build --release -p outrigger-init --bins` (or `cargo build --workspace --bins`) first",
            path.display()
        );
    }
    Ok(path)
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn p90(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[(samples.len() * 9 / 10).min(samples.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
