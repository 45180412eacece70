#!/usr/bin/env bash
# The trader page in headless Chromium: installs Debian's chromium (when /usr/bin/chromium is
# missing) and the pinned playwright-core (npm ci), builds and starts the example WebSocket server
# (simulator on) on a free loopback port, and runs trader_page.test.js with node's test runner
# against the page the server embeds. Runs as root with no stdin on a fresh Debian machine; needs
# Node.js >= 20 with npm, and cargo. TICKER_DEFLATE=shared|per-connection|off picks the server's
# compression mode (default: the server's own); TICKER_WS_ADDR=host:port tests a server that is
# already running instead of building and starting one.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
jobs="${CARGO_BUILD_JOBS:-2}"

work="$(mktemp -d)"
server_pid=""
cleanup() {
    # Closing the server's stdin stops it; the kill covers a server that hangs.
    exec 3>&- || true
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if [[ ! -x /usr/bin/chromium ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends chromium </dev/null
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
    echo "browser tests need Node.js >= 20 (playwright-core's minimum); found $(node --version 2>&1)" >&2
    exit 1
fi
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

# Builds and starts the example server; sets `addr` to the address it listens on.
start_server() {
    cargo build -q -j "$jobs" -p ticker-servers --example ws_server
    local deflate=()
    if [[ -n "${TICKER_DEFLATE:-}" ]]; then
        deflate=(--deflate "$TICKER_DEFLATE")
    fi
    mkfifo "$work/stdin" "$work/stdout"
    # Hold the server's stdin open for as long as this script runs.
    exec 3<>"$work/stdin"
    "$target/debug/examples/ws_server" --listen 127.0.0.1:0 --token alice-token=1 "${deflate[@]}" \
        <"$work/stdin" >"$work/stdout" 2>"$work/server.log" &
    server_pid=$!
    exec 4<"$work/stdout"
    local line=""
    if ! read -r -t 120 -u 4 line || [[ "$line" != "listening on "* ]]; then
        echo "ws_server did not start: ${line:-no output}" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    addr="${line#listening on }"
    # Keep reading what the server prints so that it never blocks on a full pipe.
    cat <&4 >"$work/server.out" &
}

if [[ -n "${TICKER_WS_ADDR:-}" ]]; then
    addr="$TICKER_WS_ADDR"
else
    start_server
fi
echo "browser tests against http://$addr/ (chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'))"

status=0
TICKER_WS_ADDR="$addr" CHROMIUM=/usr/bin/chromium node --test --test-reporter=tap \
    "$here/trader_page.test.js" || status=$?
if [[ $status -ne 0 && -f "$work/server.log" ]]; then
    echo "--- ws_server log" >&2
    tail -n 50 "$work/server.log" >&2
fi
exit $status
