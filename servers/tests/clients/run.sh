#!/usr/bin/env bash
# The WebSocket front seen by third-party clients with permessage-deflate on: Python
# `websockets` (pytest, test_ws_python.py) and Node `ws` (node --test, test_ws_node.mjs), each
# against the example server in both deflate modes, shared and per-connection, with the
# simulator moving the market. Both pin their versions (requirements.txt; package.json and
# package-lock.json) and install under $CARGO_TARGET_DIR (or target/): a venv and an npm tree.
#
#   run.sh [--server-bin PATH]   (a prebuilt ws_server instead of building the example)
#
# Needs python3 (>= 3.9) with venv, node (>= 20.15) with npm, and cargo.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
jobs="${CARGO_BUILD_JOBS:-2}"

server_bin=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --server-bin) server_bin="$2"; shift 2 ;;
        *) echo "unknown argument: $1 (see the top of $0)" >&2; exit 2 ;;
    esac
done

# ---- the clients ---------------------------------------------------------------------------
venv="$target/ws-clients-venv"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

node_dir="$target/ws-clients-node"
mkdir -p "$node_dir"
# npm ci only when the lock changed; the tests run from this copy so that node_modules stays
# out of the source tree.
if ! cmp -s "$here/package-lock.json" "$node_dir/package-lock.json" || [[ ! -d "$node_dir/node_modules/ws" ]]; then
    cp "$here/package.json" "$here/package-lock.json" "$node_dir/"
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
cp "$here"/*.mjs "$node_dir/"

# ---- the servers ---------------------------------------------------------------------------
work="$(mktemp -d)"
server_pids=()
cleanup() {
    # Closing the servers' stdin stops them; the kill covers a server that hangs.
    exec 3>&- || true
    for pid in "${server_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

if [[ -z "$server_bin" ]]; then
    cargo build -q -j "$jobs" -p ticker-servers --example ws_server
    server_bin="$target/debug/examples/ws_server"
fi
mkfifo "$work/stdin"
# Hold the servers' stdin open for as long as this script runs.
exec 3<>"$work/stdin"
servers=""
for mode in shared per-connection; do
    mkfifo "$work/stdout-$mode"
    "$server_bin" --listen 127.0.0.1:0 --deflate "$mode" \
        --token alice-token=1 --token bob-token=2 <"$work/stdin" >"$work/stdout-$mode" &
    server_pids+=($!)
    exec 4<"$work/stdout-$mode"
    if ! read -r -t 120 -u 4 line || [[ "$line" != "listening on "* ]]; then
        echo "ws_server --deflate $mode did not start: ${line:-no output}" >&2
        exit 1
    fi
    # Keep draining its stdout so that a chatty server never blocks on a full pipe.
    cat <&4 >/dev/null &
    exec 4<&-
    echo "ws clients: ws_server --deflate $mode on ${line#listening on }"
    servers+="${servers:+,}$mode=${line#listening on }"
done
export TICKER_WS_SERVERS="$servers"

# Both suites run even when the first fails, so one run reports both.
status=0
echo "== python websockets"
started=$(date +%s)
(cd "$here" && "$venv/bin/python" -m pytest -q -p no:cacheprovider test_ws_python.py) || status=1
echo "python websockets tests took $(($(date +%s) - started)) s"

echo "== node ws"
started=$(date +%s)
(cd "$node_dir" && node --test test_ws_node.mjs) || status=1
echo "node ws tests took $(($(date +%s) - started)) s"
exit "$status"
