#!/usr/bin/env bash
# The soak test (issue 18): tickerd, the release binary, as a child process under mixed load —
# gRPC order flow and order updates, orders at the touch that cross the book and get filled,
# WebSocket and gRPC subscribers that come, go and resume,
# slow and stalled readers, bad inputs on both fronts — with a table row every INTERVAL (RSS,
# fds, threads, tasks, CPU, order → ack p50/p99/p99.9, slow-consumer counters, failures) and a
# verdict at the end: the exit status is non-zero on a lost sequence, an unexpected answer,
# growth that does not level off or a latency drift (benches/src/soak/).
#
#   bash benches/soak.sh [DURATION] [INTERVAL] [more ticker-bench soak flags]
#   bash benches/soak.sh            # 1h, a row every 60s
#   bash benches/soak.sh 60s 10s    # the CI version
#
# SOAK_PROFILE=dev runs the debug build instead of release (CI: `cargo test` has built it
# already, where a release build with fat LTO would add ten minutes); figures from it are not
# the release binary's.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-1h}"
interval="${2:-60s}"
shift $(( $# < 2 ? $# : 2 ))

profile="${SOAK_PROFILE:-release}"
dir="$profile"
[[ "$profile" == dev ]] && dir=debug
cargo build -j "${CARGO_BUILD_JOBS:-2}" --profile "$profile" -p ticker-benches -p ticker-servers
exec "${CARGO_TARGET_DIR:-target}/$dir/ticker-bench" soak \
  --duration "$duration" --interval "$interval" "$@"
