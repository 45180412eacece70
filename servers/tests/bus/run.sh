#!/usr/bin/env bash
# The scale-out test (servers/tests/bus.rs): installs Debian's nats-server (pinned) when it is
# missing, then runs the ignored bus test, which starts nats-server with JetStream on a random
# loopback port and a temporary store, one matcher and three gateways, and stops them all.
# Runs as root in CI (apt-get); elsewhere have nats-server on PATH or set NATS_SERVER.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
jobs="${CARGO_BUILD_JOBS:-2}"
version="2.9.10-1+b3"

if [[ -z "${NATS_SERVER:-}" ]] && ! command -v nats-server >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "nats-server=$version" >/dev/null
fi
"${NATS_SERVER:-nats-server}" --version

cd "$root"
cargo test -j "$jobs" -p ticker-servers --test bus -- --ignored --nocapture
