//! End-to-end tests on real network namespaces (root): outrigger-iptables installs the rules,
//! outrigger-proxy runs as UID 1337 in each pod, apps run as UID 1000, the node plays kubelet.

mod discovery;
mod http_path;
mod l7_routes;
mod l7_upstream;
mod lifecycle;
mod tcp_echo;

use std::path::Path;

use outrigger_e2e::topology::{INIT_ARGS, ProxyProcess, Topology};

pub const APP: &str = env!("CARGO_BIN_EXE_e2e-app");

/// Two pods, `a` (client side) and `b` (server side), both captured and proxied.
pub fn two_pods(
    b_env: &[(&str, &str)],
    proxy_args: &[&str],
) -> (Topology, ProxyProcess, ProxyProcess) {
    let topology = Topology::new(&["a", "b"], Path::new(APP)).expect("build the topology");
    topology
        .capture("a", INIT_ARGS)
        .expect("capture rules in a");
    topology
        .capture("b", INIT_ARGS)
        .expect("capture rules in b");
    let proxy_a = topology.start_proxy("a", &[], proxy_args).expect("proxy a");
    let proxy_b = topology
        .start_proxy("b", b_env, proxy_args)
        .expect("proxy b");
    (topology, proxy_a, proxy_b)
}

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
