#!/usr/bin/env bash
# Idle CPU of outrigger-install-cni: starts the installer on temporary directories standing in
# for the host mounts (a Calico-style conflist, a token, a CA), waits until it is ready and has
# inserted its entry, then samples its CPU time (utime+stime from /proc/<pid>/stat) over an idle
# window and prints the share of one core. Usage: bench/cni-idle/run.sh [BINARY] [SECONDS]
set -euo pipefail
bin=${1:-target/release/outrigger-install-cni}
seconds=${2:-10}
[ -x "$bin" ] || { echo "no installer binary at $bin (cargo build --release -p outrigger-cni)" >&2; exit 1; }
root=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$root"; }
trap cleanup EXIT
mkdir -p "$root/net.d" "$root/bin" "$root/sa"
printf '%s' '{"name":"k8s-pod-network","cniVersion":"0.3.1","plugins":[{"type":"calico"},{"type":"portmap","capabilities":{"portMappings":true}}]}' > "$root/net.d/10-calico.conflist"
printf 'token' > "$root/sa/token"
printf -- '-----BEGIN CERTIFICATE-----\n' > "$root/sa/ca.crt"
cp "$bin" "$root/plugin"
port=$((20000 + RANDOM % 20000))
"$bin" --cni-bin-dir "$root/bin" --cni-conf-dir "$root/net.d" --plugin-binary "$root/plugin" \
  --token-path "$root/sa/token" --ca-path "$root/sa/ca.crt" --api-server https://127.0.0.1:6443 \
  --listen "127.0.0.1:$port" --repair off --log-level warn 2>"$root/log" &
pid=$!
for _ in $(seq 100); do
  grep -q outrigger-cni "$root/net.d/10-calico.conflist" 2>/dev/null && break
  sleep 0.1
done
grep -q outrigger-cni "$root/net.d/10-calico.conflist" || { cat "$root/log" >&2; echo "entry never inserted" >&2; exit 1; }
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks); start=$(date +%s.%N)
sleep "$seconds"
after=$(ticks); end=$(date +%s.%N)
awk -v t=$((after - before)) -v hz="$hz" -v s="$start" -v e="$end" -v b="$bin" \
  'BEGIN { printf "%s: idle CPU %.2f %% of one core over %.1f s\n", b, 100 * t / hz / (e - s), e - s }'
