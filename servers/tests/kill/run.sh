#!/usr/bin/env bash
# The long kill test: servers/tests/kill.rs (the CI-sized test kills tickerd 20 times) run for
# as long as asked. Not part of CI.
#
#   bash servers/tests/kill/run.sh [MINUTES] [--release]
#
# Kills tickerd for MINUTES (default 10), then stops it cleanly and replays the whole journal
# (the same checks as in CI, on a longer journal). The summary at the end says how many kills
# and what they hit; a failure prints the seed (rerun with TICKERD_KILL_SEED=<seed>) and keeps
# the data directory (tickerd journal verify | inspect | replay DIR).
#
# Settings, all optional, through the environment:
#   TICKERD_KILL_SECONDS          kill for at least this long (default: MINUTES * 60)
#   TICKERD_KILL_ROUNDS           and at least this many kills (default 20)
#   TICKERD_KILL_SEED             replay a run's random choices (default: from the clock)
#   TICKERD_KILL_MAX_DELAY_MS     longest wait before a kill once the client streams (1500)
#   TICKERD_KILL_SNAPSHOT_EVERY   tickerd's journal.snapshot_every (default here 100000; CI 5000)
#
# Disk: every snapshot is kept (the final check replays the journal from its first command,
# and pruning would delete it), and a snapshot is several MB, mostly the feeds' resume
# histories. At the default 100,000 commands between snapshots (about one a minute) a run
# writes roughly 0.7 GB of journal and 0.8 GB of snapshots an hour under $TMPDIR (/tmp),
# removed when the test passes. Memory: the client keeps every answer it got (about 1,000 a
# second).
#
# --release builds the test and tickerd with the release profile (fat LTO: a long build, but
# the fastest tickerd); the default test profile shares the artifacts of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/../../.."

minutes=10
profile=()
for arg in "$@"; do
    case "$arg" in
        --release) profile=(--release) ;;
        *[!0-9]* | '') echo "usage: $0 [MINUTES] [--release]" >&2; exit 2 ;;
        *) minutes="$arg" ;;
    esac
done

export TICKERD_KILL_SECONDS="${TICKERD_KILL_SECONDS:-$((minutes * 60))}"
export TICKERD_KILL_SNAPSHOT_EVERY="${TICKERD_KILL_SNAPSHOT_EVERY:-100000}"
echo "kill test for ${TICKERD_KILL_SECONDS} s (snapshot every ${TICKERD_KILL_SNAPSHOT_EVERY} commands)"
exec cargo test "${profile[@]}" -p ticker-servers --test kill -j "${CARGO_BUILD_JOBS:-2}" \
    -- --nocapture
