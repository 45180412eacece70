#!/usr/bin/env bash
# The Autobahn testsuite's fuzzingclient against our WebSocket echo server (the ws_echo example,
# built on the same stack as the real server: handshake, permessage-deflate, inflating stream).
#
#   run.sh [--cases ci|all|ID,ID,...] [--mode shared|per-connection|both] [--server-bin PATH]
#
# --cases ci (the default) is the core sections 1-7 plus a sample of the permessage-deflate
# cases 12.* and 13.*; --cases all is every case (9.* are the slow performance cases); or a
# comma-separated list of case ids / patterns such as 6.*,12.1.3. --mode picks the echo
# server's deflate mode; "both" runs each mode as its own agent. --server-bin runs a prebuilt
# echo server instead of building the example (it gets --listen 127.0.0.1:0 --mode MODE and
# must print "listening on ADDR").
#
# wstest needs Python 2.7, which Debian 12 no longer ships: the bullseye packages listed in
# debs.txt are fetched with apt-get download (a private apt config pointing at bullseye; the
# system's sources are not touched) and unpacked with dpkg -x; pip 20.3.4 (the last for 2.7) is
# bootstrapped from its wheel and installs requirements.txt. All of it is cached under
# $CARGO_TARGET_DIR/autobahn (or target/autobahn), so a second run only runs the cases.
# Needs: apt-get, dpkg, curl, gcc, sha256sum, cargo; runs as root or not, with no stdin.
#
# Exits non-zero if any case's behavior or closing behavior is FAILED, WRONG CODE,
# UNIMPLEMENTED (except the ids in unimplemented-ok.txt) or anything but OK, NON-STRICT or
# INFORMATIONAL. The last report stays in $CARGO_TARGET_DIR/autobahn/reports (index.html).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib/server.sh
source "$here/../lib/server.sh"
cache="$target/autobahn"

cases_arg="ci"
mode_arg="both"
server_bin=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cases) cases_arg="$2"; shift 2 ;;
        --mode) mode_arg="$2"; shift 2 ;;
        --server-bin) server_bin="$2"; shift 2 ;;
        *) echo "unknown argument: $1 (see the top of $0)" >&2; exit 2 ;;
    esac
done
case "$mode_arg" in
    shared|per-connection) modes=("$mode_arg") ;;
    both) modes=(shared per-connection) ;;
    *) echo "--mode must be shared, per-connection or both, not $mode_arg" >&2; exit 2 ;;
esac

# The CI sample of the deflate cases: for every data set (12.1-12.5) and every negotiation
# variant (13.1-13.7), 1,000 messages of 16 B, of 1 KiB, and of 8 KiB fragmented into 256-byte
# frames (the last number of a case id indexes autobahn's MSG_SIZES table); and 1,000 messages
# of 128 KiB once (13.1.10). The 128 KiB cases take 15-45 s each; --cases all runs them all.
ci_cases='"1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "13.1.10"'
for n in 1 2 3 4 5; do
    for i in 1 4 11; do ci_cases+=", \"12.$n.$i\""; done
done
for n in 1 2 3 4 5 6 7; do
    for i in 1 4 11; do ci_cases+=", \"13.$n.$i\""; done
done
case "$cases_arg" in
    ci) cases_json="[$ci_cases]" ;;
    all) cases_json='["*"]' ;;
    *) cases_json="[$(echo "$cases_arg" | sed 's/[^,][^,]*/"&"/g; s/,/, /g')]" ;;
esac

# ---- Python 2.7 from Debian 11 ------------------------------------------------------------
py2="$cache/py2"
# The unpacked interpreter with its environment; kept out of this script's own environment
# so that cargo and the echo server never see the old libssl or PYTHONHOME.
python27() {
    LD_LIBRARY_PATH="$py2/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        PYTHONHOME="$py2/usr" "$py2/usr/bin/python2.7" "$@"
}
unset PYTHONPATH
debs=$(grep -v '^#' "$here/debs.txt" | xargs)
if [[ ! -x "$py2/usr/bin/python2.7" || "$(cat "$py2.stamp" 2>/dev/null)" != "$debs" ]]; then
    echo "autobahn: fetching Python 2.7 from Debian 11 ($debs)"
    apt_dir="$cache/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/state"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main" \
        >"$apt_dir/sources.list"
    apt_opts=(
        -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State=$apt_dir/state" -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::State::status=/dev/null" -o "Dir::Cache=$apt_dir/cache"
        -o "Dir::Cache::Archives=$apt_dir/archives" -o "Debug::NoLocking=1"
        -o "APT::Sandbox::User=root" -o "Acquire::Languages=none"
        -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
        -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
        -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
    )
    apt-get "${apt_opts[@]}" -qq update
    rm -f "$apt_dir"/archives/*.deb
    # shellcheck disable=SC2086 # one argument per package
    (cd "$apt_dir/archives" && apt-get "${apt_opts[@]}" -qq download $debs)
    rm -rf "$py2" "$cache/site" "$cache/site.stamp"
    mkdir -p "$py2"
    for deb in "$apt_dir"/archives/*.deb; do dpkg -x "$deb" "$py2"; done
    echo "$debs" >"$py2.stamp"
fi
if ! missing=$(python27 -c 'import ssl, hashlib, zlib, bz2, pyexpat, ctypes, json' 2>&1); then
    echo "the unpacked Python 2.7 is missing a library: $missing" >&2
    LD_LIBRARY_PATH="$py2/usr/lib/x86_64-linux-gnu" ldd "$py2"/usr/lib/python2.7/lib-dynload/*.so | grep 'not found' | sort -u >&2 || true
    exit 1
fi

# ---- pip 20.3.4 and the pinned testsuite ---------------------------------------------------
pip_whl="$cache/pip-20.3.4-py2.py3-none-any.whl"
pip_sha256=217ae5161a0e08c0fb873858806e3478c9775caffce5168b50ec885e358c199d
if [[ ! -f "$pip_whl" ]]; then
    curl -fsSL -o "$pip_whl.part" \
        "https://files.pythonhosted.org/packages/27/79/8a850fe3496446ff0d584327ae44e7500daf6764ca1a382d2d02789accf7/pip-20.3.4-py2.py3-none-any.whl"
    echo "$pip_sha256  $pip_whl.part" | sha256sum -c --quiet
    mv "$pip_whl.part" "$pip_whl"
fi
site="$cache/site"
site_stamp="$(cat "$here/build-requirements.txt" "$here/requirements.txt" | sha256sum)"
if [[ "$(cat "$site.stamp" 2>/dev/null)" != "$site_stamp" ]]; then
    echo "autobahn: installing the testsuite for Python 2.7"
    export PIP_CACHE_DIR="$cache/pip-cache"
    rm -rf "$cache/build-site" "$cache/wheels" "$site"
    # pip run from its wheel cannot build sdists (PEP 517 runs a script from inside pip), so
    # the wheel only installs pip itself and the build tools into build-site.
    python27 "$pip_whl/pip" install -q --disable-pip-version-check --no-python-version-warning \
        --no-warn-script-location --target "$cache/build-site" "$pip_whl" \
        -r "$here/build-requirements.txt"
    pip=(env PYTHONPATH="$cache/build-site" LD_LIBRARY_PATH="$py2/usr/lib/x86_64-linux-gnu"
        PYTHONHOME="$py2/usr" "$py2/usr/bin/python2.7" -m pip
        --disable-pip-version-check --no-python-version-warning)
    # Builds the sdists against the pinned build tools and the unpacked headers.
    CFLAGS="-I$py2/usr/include -I$py2/usr/include/python2.7" \
        "${pip[@]}" wheel -q --no-build-isolation --no-deps -w "$cache/wheels" \
        -r "$here/requirements.txt"
    "${pip[@]}" install -q --no-warn-script-location --no-index --find-links "$cache/wheels" \
        --target "$site" -r "$here/requirements.txt"
    echo "$site_stamp" >"$site.stamp"
fi
# addsitedir (not PYTHONPATH) so that the namespace packages' .pth files (zope.*) are read.
echo "import site; site.addsitedir('$site')" >"$py2/usr/lib/python2.7/dist-packages/autobahn-site.pth"
python27 -c 'import wsaccel, autobahntestsuite.wstest' 2>/dev/null || {
    echo "the installed testsuite does not import:" >&2
    python27 -c 'import wsaccel, autobahntestsuite.wstest' >&2
    exit 1
}

# ---- the echo servers ----------------------------------------------------------------------
if [[ -z "$server_bin" ]]; then
    server_bin="$(server_example ws_echo)"
fi
servers_json=""
for mode in "${modes[@]}"; do
    server_start "ws_echo-$mode" "$server_bin" --mode "$mode"
    echo "autobahn: ws_echo --mode $mode on $server_addr"
    servers_json+="${servers_json:+, }{\"agent\": \"ws_echo-$mode\", \"url\": \"ws://$server_addr/\"}"
done

# ---- the fuzzingclient ---------------------------------------------------------------------
reports="$cache/reports"
rm -rf "$reports"
cat >"$work/fuzzingclient.json" <<EOF
{
    "outdir": "$reports",
    "servers": [$servers_json],
    "cases": $cases_json,
    "exclude-cases": [],
    "exclude-agent-cases": {}
}
EOF
echo "autobahn: cases $cases_json"
started=$(date +%s)
(cd "$work" && python27 "$site/bin/wstest" -m fuzzingclient -s "$work/fuzzingclient.json" \
    </dev/null >"$work/wstest.log" 2>&1) || {
    echo "wstest failed:" >&2
    tail -n 40 "$work/wstest.log" >&2
    exit 1
}
echo "autobahn: fuzzingclient took $(($(date +%s) - started)) s; report in $reports/index.html"
python27 "$here/summarize.py" "$reports" --unimplemented-ok "$here/unimplemented-ok.txt"
