//! Heap profile of loading a configuration file in-process, as `--config-file` loads it:
//! bytes live after each step (dhat-rs counts every allocation), the peak, and the share of
//! the parts of the run-time state. Writes `dhat-heap.json` (per allocation site, viewable in
//! dhat's viewer) in the working directory.
//!
//! ```text
//! target/release/http-load large-config /tmp/large.json
//! cargo run --release -p outrigger-proxy --example config_heap -- /tmp/large.json
//! ```

use std::path::PathBuf;

#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / 1048576.0)
}

fn live() -> usize {
    dhat::HeapStats::get().curr_bytes
}

/// Heap bytes `make` leaves allocated in what it returns (a clone of a part: same layout).
fn size_of<T>(make: impl FnOnce() -> T) -> (usize, T) {
    let before = live();
    let value = make();
    (live() - before, value)
}

fn main() -> anyhow::Result<()> {
    let path: PathBuf = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: config_heap CONFIG.json"))?
        .into();
    let _profiler = dhat::Profiler::new_heap();
    let base = live();
    let loaded = outrigger_proxy::l7::source::load(&path)?;
    let stats = dhat::HeapStats::get();
    println!(
        "loaded {}: live {} (peak while loading {})",
        path.display(),
        mib(stats.curr_bytes - base),
        mib(stats.max_bytes - base)
    );
    let config = &loaded.config;
    let parts: [(&str, usize); 5] = [
        (
            "config.destinations",
            size_of(|| config.destinations.clone()).0,
        ),
        ("config.addresses", size_of(|| config.addresses.clone()).0),
        (
            "config.hostAliases",
            size_of(|| config.host_aliases.clone()).0,
        ),
        ("config.clusters", size_of(|| config.clusters.clone()).0),
        (
            "config.clusters[].endpoints",
            size_of(|| {
                config
                    .clusters
                    .values()
                    .map(|c| c.endpoints.clone())
                    .collect::<Vec<_>>()
            })
            .0,
        ),
    ];
    for (name, bytes) in parts {
        println!("  {name:<32} {}", mib(bytes));
    }
    // The run-time clusters, rebuilt from a copy of the whole model (endpoints put back).
    let model: outrigger_mesh::ProxyConfig = serde_json::from_value(loaded.config_json())?;
    let clusters_state = size_of(|| {
        let mut model = model.clone();
        outrigger_proxy::l7::balance::Clusters::build(&mut model)
            .expect("the loaded clusters build")
    })
    .0;
    println!(
        "  {:<32} {}",
        "run-time clusters (rebuilt)",
        mib(clusters_state)
    );
    drop(model);
    drop(loaded);
    println!("after drop: live {}", mib(live() - base));
    Ok(())
}
