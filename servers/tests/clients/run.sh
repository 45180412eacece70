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
# shellcheck source=../lib/server.sh
source "$here/../lib/server.sh"

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
if [[ -z "$server_bin" ]]; then
    server_bin="$(server_example ws_server)"
fi
servers=""
for mode in shared per-connection; do
    server_start "ws_server-$mode" "$server_bin" --deflate "$mode" \
        --token alice-token=1 --token bob-token=2
    echo "ws clients: ws_server --deflate $mode on $server_addr"
    servers+="${servers:+,}$mode=$server_addr"
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
