#!/usr/bin/env bash
# The Python gRPC client tests: installs pinned grpcio/grpcio-tools into a venv, generates the
# stubs from proto/ with grpc_tools.protoc, starts the example gRPC server on a free loopback
# port, and runs test_grpc.py and test_risk_client.py (the risk-client example) with pytest.
# Needs python3 (3.11) with venv, and cargo.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib/server.sh
source "$here/../lib/server.sh"
venv="$target/python-grpc-venv"

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

mkdir -p "$work/gen"
"$venv/bin/python" -m grpc_tools.protoc -I "$root/proto" \
    --python_out="$work/gen" --grpc_python_out="$work/gen" "$root"/proto/ticker/v1/*.proto

server_bin="$(server_example grpc_server)"
server_start grpc "$server_bin" --no-simulator \
    --token alice-token=1 --token bob-token=2 --token risk-desk-token=risk
addr="$server_addr"
echo "python grpc tests against $addr"

cd "$work"
PYTHONPATH="$work/gen:$root/servers/examples/python" TICKER_GRPC_ADDR="$addr" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "$here/test_grpc.py" "$here/test_risk_client.py"
