# shellcheck shell=bash
# Starting example servers for the test scripts (servers/tests/*/run.sh); source it, do not run
# it. Sourcing sets
#   root    the workspace;   target  $CARGO_TARGET_DIR (or target/), absolute;
#   jobs    $CARGO_BUILD_JOBS (or 2);   work  a temporary directory, removed on exit;
# and takes the EXIT trap: the servers are stopped (their standard input is closed, which stops
# an example server cleanly, and any that is still up after 10 s is killed) and `work` is
# removed; when the script fails, the end of each server's stderr is printed.
#
#   bin="$(server_example ws_server)"    # builds the example, prints its path
#   server_start ws-shared "$bin" --deflate shared --token alice-token=1
#   echo "$server_addr"                  # 127.0.0.1:PORT, already answering
#
# A server is started on 127.0.0.1 port 0 (`--listen 127.0.0.1:0` is added to its arguments):
# the system picks a free port and the server prints `listening on ADDR` once it serves. The
# helper waits for that line, then until the port accepts a connection.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
jobs="${CARGO_BUILD_JOBS:-2}"
work="$(mktemp -d)"

# Seconds a server may take to print its address, and to stop once its stdin is closed.
server_start_timeout="${SERVER_START_TIMEOUT:-120}"
server_stop_timeout=10

server_pids=()
server_labels=()
# Every server reads the same fifo, held open for writing on fd 3 by this script alone: closing
# fd 3 (on exit, or when the script dies) is the end of their standard input.
mkfifo "$work/server-stdin"
exec 3<>"$work/server-stdin"

_server_stop_all() {
    local status=$?
    exec 3>&- || true
    local pid i deadline=$((SECONDS + server_stop_timeout))
    for pid in "${server_pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if ((status != 0)); then
        for i in "${!server_labels[@]}"; do
            if [[ -s "$work/${server_labels[$i]}.log" ]]; then
                echo "--- stderr of server ${server_labels[$i]} (last 50 lines)" >&2
                tail -n 50 "$work/${server_labels[$i]}.log" >&2
            fi
        done
    fi
    rm -rf "$work"
    return "$status"
}
trap _server_stop_all EXIT

# server_example NAME: builds the example NAME of ticker-servers (debug profile) and prints the
# path of its binary. Assign it (bin="$(server_example NAME)") rather than pass it as an
# argument, so that a failed build stops the script under set -e.
server_example() {
    cargo build -q -j "$jobs" -p ticker-servers --example "$1" >&2 || return
    echo "$target/debug/examples/$1"
}

# server_start LABEL BIN [ARG...]: starts BIN --listen 127.0.0.1:0 ARG... in the background,
# waits until it answers and sets server_addr to its address. Its stdout (after the address)
# and stderr go to $work/LABEL.out and $work/LABEL.log. Exits the script if it does not start.
server_start() {
    local label="$1" bin="$2"
    shift 2
    mkfifo "$work/$label.stdout"
    "$bin" --listen 127.0.0.1:0 "$@" <"$work/server-stdin" >"$work/$label.stdout" \
        2>"$work/$label.log" 3>&- &
    server_pids+=($!)
    server_labels+=("$label")
    local line=""
    exec 4<"$work/$label.stdout"
    if ! read -r -t "$server_start_timeout" -u 4 line || [[ "$line" != "listening on "* ]]; then
        local why="no address within $server_start_timeout s"
        if [[ -n "$line" ]]; then
            why="it printed ${line@Q}"
        elif ! kill -0 "${server_pids[-1]}" 2>/dev/null; then
            why="it exited"
        fi
        echo "server $label ($bin${*:+ $*}) did not start: $why" >&2
        exit 1
    fi
    # Keep draining its stdout so that a chatty server never blocks on a full pipe.
    cat <&4 >"$work/$label.out" 3>&- &
    exec 4<&-
    server_addr="${line#listening on }"
    local deadline=$((SECONDS + server_start_timeout))
    until (exec 5<>"/dev/tcp/${server_addr%:*}/${server_addr##*:}") 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            echo "server $label printed $server_addr but does not accept connections" >&2
            exit 1
        fi
        sleep 0.1
    done
}
