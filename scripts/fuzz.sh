#!/usr/bin/env bash
# Runs every cargo-fuzz (libFuzzer) target under fuzz/ for SECONDS each (default 60), seeding
# each corpus from fuzz/seeds/<target> (real fixtures). Installs cargo-fuzz when missing. It
# runs on the machine's one (stable) toolchain: RUSTC_BOOTSTRAP=1 lets it take the sanitizer
# flags cargo-fuzz passes (no nightly toolchain can be fetched on our machines). A crash fails
# the script and leaves the input in fuzz/artifacts/<target>/.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  seeds=()
  [ -d "fuzz/seeds/$target" ] && seeds=("fuzz/seeds/$target")
  echo "== fuzz $target for ${seconds}s" >&2
  cargo fuzz run --fuzz-dir fuzz "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>"fuzz/$target.log" || {
      tail -n 40 "fuzz/$target.log" >&2
      echo "fuzz.sh: $target failed (input in fuzz/artifacts/$target/)" >&2
      exit 1
    }
  grep -E '^stat::number_of_executed_units|^Done' "fuzz/$target.log" | tr '\n' ' ' >&2; echo >&2
done
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash" >&2
