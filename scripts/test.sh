#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, clippy, and all unit, CLI,
# network-namespace and end-to-end tests. Run as root (CI does): the tests that need root are
# marked `#[ignore = "needs root: ..."]` so a plain `cargo test` passes as any user, and this
# script runs them too (`--include-ignored`); as root it first installs the system packages they
# need. As a non-root user it refuses, loudly, rather than skip them.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=()
command -v iptables-restore >/dev/null 2>&1 || apt_pkgs+=(iptables)
command -v ip >/dev/null 2>&1 || apt_pkgs+=(iproute2)
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || apt_pkgs+=(containernetworking-plugins)
command -v python3 >/dev/null 2>&1 || apt_pkgs+=(python3 python3-pip)
# The layer-7 e2e test sends HTTP/2 with prior knowledge through curl.
command -v curl >/dev/null 2>&1 || apt_pkgs+=(curl)

if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: missing system packages: ${apt_pkgs[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "test.sh: installing ${apt_pkgs[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
fi
if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
  echo "test.sh: installing kubernetes-validate (PyPI)" >&2
  python3 -m pip install -q kubernetes-validate || python3 -m pip install -q --break-system-packages kubernetes-validate
fi

# One-shot runs gain nothing from incremental caches, which are most of a target dir's size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== cargo fmt" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (binaries used by the end-to-end tests)" >&2
cargo build --workspace --bins --locked
if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: the network-namespace and end-to-end tests need root; run: sudo ./scripts/test.sh" >&2
  echo "test.sh: (a plain 'cargo test --workspace' runs everything else as any user)" >&2
  exit 1
fi
echo "== cargo test (every test, including the root-only ones)" >&2
cargo test --workspace --locked -- --include-ignored "$@"
echo "== fuzz (every target briefly; scripts/fuzz.sh SECONDS for a longer run)" >&2
./scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
