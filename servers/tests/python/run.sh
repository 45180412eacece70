#!/usr/bin/env bash
# The Python gRPC client tests: installs pinned grpcio/grpcio-tools into a venv, generates the
# stubs from proto/ with grpc_tools.protoc, starts the example gRPC server on a free loopback
# port, and runs test_grpc.py and test_risk_client.py (the risk-client example) with pytest.
# Needs python3 (3.11) with venv, and cargo.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/python-grpc-venv"
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

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

mkdir -p "$work/gen"
"$venv/bin/python" -m grpc_tools.protoc -I "$root/proto" \
    --python_out="$work/gen" --grpc_python_out="$work/gen" "$root"/proto/ticker/v1/*.proto

cargo build -q -j "$jobs" -p ticker-servers --example grpc_server
mkfifo "$work/stdin" "$work/stdout"
# Hold the server's stdin open for as long as this script runs.
exec 3<>"$work/stdin"
"$target/debug/examples/grpc_server" --listen 127.0.0.1:0 --no-simulator \
    --token alice-token=1 --token bob-token=2 --token risk-desk-token=risk \
    <"$work/stdin" >"$work/stdout" &
server_pid=$!
exec 4<"$work/stdout"
if ! read -r -t 120 -u 4 line || [[ "$line" != "listening on "* ]]; then
    echo "grpc_server did not start: ${line:-no output}" >&2
    exit 1
fi
addr="${line#listening on }"
echo "python grpc tests against $addr"

cd "$work"
PYTHONPATH="$work/gen:$root/servers/examples/python" TICKER_GRPC_ADDR="$addr" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "$here/test_grpc.py" "$here/test_risk_client.py"
