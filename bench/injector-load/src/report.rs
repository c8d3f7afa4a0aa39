//! Run results: throughput, latency percentiles, the printed table, and peak RSS from /proc.

use std::time::Duration;

/// What one measurement produced.
#[derive(Debug, Default)]
pub struct Run {
    pub elapsed: Duration,
    /// Sorted latencies.
    pub latencies: Vec<Duration>,
    pub errors: u64,
    /// What went wrong first, when `errors > 0`.
    pub first_error: Option<String>,
    /// CPU time (user + system) the server spent during the run.
    pub server_cpu: Duration,
}

impl Run {
    pub fn new(elapsed: Duration, mut latencies: Vec<Duration>, errors: u64) -> Run {
        latencies.sort_unstable();
        Run {
            elapsed,
            latencies,
            errors,
            first_error: None,
            server_cpu: Duration::ZERO,
        }
    }

    /// Server CPU time per answered request: comparable even when other processes compete
    /// for the cores.
    pub fn cpu_per_request(&self) -> Duration {
        match u32::try_from(self.latencies.len()) {
            Ok(n) if n > 0 => self.server_cpu / n,
            _ => Duration::ZERO,
        }
    }

    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile (`p` in 0..=100); zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        // The epsilon keeps float noise (0.999 * 1000 = 999.0000000000001) off the next rank.
        let rank = (p * self.latencies.len() as f64 / 100.0 - 1e-9).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// Print one line per run.
pub fn print(rows: &[(&str, &str, Run)]) {
    println!(
        "{:<10} {:<15} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>12}",
        "server", "run", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "cpu us/req"
    );
    for (server, run_name, run) in rows {
        println!(
            "{:<10} {:<15} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>7} {:>12.0}",
            server,
            run_name,
            run.throughput(),
            ms(run.percentile(50.0)),
            ms(run.percentile(99.0)),
            ms(run.percentile(99.9)),
            ms(run.latencies.last().copied().unwrap_or_default()),
            run.errors,
            run.cpu_per_request().as_secs_f64() * 1e6
        );
    }
}

/// User + system CPU time of a process so far (`/proc/<pid>/stat` fields 14 and 15, in
/// USER_HZ = 100 ticks per second, which Linux uses for every /proc interface).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// `VmHWM` (peak resident set) of a process, in KiB.
pub fn vm_hwm_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM")
}

/// `VmRSS` (resident set now) of a process, in KiB.
pub fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let run = Run::new(
            Duration::from_secs(2),
            (1..=1000).rev().map(Duration::from_micros).collect(),
            0,
        );
        assert_eq!(run.throughput(), 500.0);
        assert_eq!(run.percentile(50.0), Duration::from_micros(500));
        assert_eq!(run.percentile(99.0), Duration::from_micros(990));
        assert_eq!(run.percentile(99.9), Duration::from_micros(999));
        assert_eq!(run.percentile(100.0), Duration::from_micros(1000));
        assert_eq!(Run::default().percentile(99.0), Duration::ZERO);
    }

    #[test]
    fn reads_own_cpu_time() {
        // Spin until the reader itself reports 30 ms more (wall time says nothing on a loaded
        // machine); a reader that does not move fails at the deadline.
        let pid = std::process::id();
        let before = cpu_time(pid).unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_time(pid).unwrap() < before + Duration::from_millis(30) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "cpu_time did not grow"
            );
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
        }
        assert!(x > 0);
    }

    #[test]
    fn reads_own_peak_rss() {
        // RSS first: other test threads may grow the process between the two reads, and the
        // high-water mark read later is at least every earlier RSS.
        let rss = vm_rss_kib(std::process::id()).unwrap();
        let peak = vm_hwm_kib(std::process::id()).unwrap();
        assert!(rss > 0);
        assert!(rss <= peak, "VmRSS {rss} kB above VmHWM {peak} kB");
    }
}
