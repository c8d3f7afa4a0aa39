#!/bin/bash
# Heap allocations (glibc malloc/realloc) and socket syscalls per request of outrigger-proxy on
# the `outrigger L7 (HTTP/1.1)` path, counted with perf uprobes and tracepoints (root, Debian's
# linux-perf) over 5 s of its throughput run. Requests are the proxy's own
# istio_requests_total over the same window, read from pod a's 15090 before and after; the
# window of the count is a little wider than perf's, so the figures are slightly low: divide
# by (writev per request / 2) for the exact ratio (two writev per request: upstream, client).
# usage: sudo bench/http-load/scripts/per-request.sh [target/release/http-load]
set -euo pipefail
BENCH=${1:-$(dirname "$0")/../../../target/release/http-load}
LIBC=$(ldconfig -p | awk '/libc.so.6 .*x86-64/ {print $NF; exit}')
perf probe -q -x "$LIBC" malloc 2>/dev/null || true
perf probe -q -x "$LIBC" realloc 2>/dev/null || true
LOG=$(mktemp)
"$BENCH" run --only "outrigger L7 (HTTP/1.1)" --seconds 12 > "$LOG" 2>&1 &
until grep -q "^direct " "$LOG"; do sleep 0.5; done
sleep 2
PID=$(pgrep -x outrigger-proxy | head -1)
NODE=$(ip netns list | awk '{print $1}' | grep 'node$' | head -1)
POD=${NODE%node}a
IP=$(ip netns exec "$POD" ip -4 -o addr show | awk '{print $4}' | grep -v '^127' | cut -d/ -f1)
requests() {
    ip netns exec "$NODE" curl -s "http://$IP:15090/stats/prometheus" |
        awk '/^istio_requests_total/ {s += $NF} END {print s + 0}'
}
BEFORE=$(requests)
perf stat -x, -e probe_libc:malloc,probe_libc:realloc,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait \
    -p "$PID" -- sleep 5 2> "$LOG.stat"
AFTER=$(requests)
wait
python3 - "$BEFORE" "$AFTER" "$LOG.stat" <<'PY'
import sys
n = float(sys.argv[2]) - float(sys.argv[1])
print(f"requests in the window: {n:.0f}")
for line in open(sys.argv[3]):
    fields = line.strip().split(",")
    if len(fields) > 2 and fields[0].isdigit():
        print(f"{fields[2]:35s} {int(fields[0]) / n:6.2f} per request")
PY
rm -f "$LOG" "$LOG.stat"
