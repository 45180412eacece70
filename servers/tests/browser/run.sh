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
# shellcheck source=../lib/server.sh
source "$here/../lib/server.sh"

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

if [[ -n "${TICKER_WS_ADDR:-}" ]]; then
    addr="$TICKER_WS_ADDR"
else
    deflate=()
    if [[ -n "${TICKER_DEFLATE:-}" ]]; then
        deflate=(--deflate "$TICKER_DEFLATE")
    fi
    server_bin="$(server_example ws_server)"
    # An hour of simulated past, as tickerd's fresh start has: the chart is full on open. A
    # busier market than the default's two market orders a second per instrument: the debug
    # server on a loaded machine runs its simulated time slower than the clock, and the resync
    # step waits for the trade after one it drops.
    server_start ws_server "$server_bin" --token alice-token=1 --sim-history-s 3600 \
        --sim-takes-per-sec 20 "${deflate[@]}"
    addr="$server_addr"
fi
echo "browser tests against http://$addr/ (chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'))"

# On a failure the helper prints the end of the server's log.
TICKER_WS_ADDR="$addr" CHROMIUM=/usr/bin/chromium node --test --test-reporter=tap \
    "$here/trader_page.test.js"
