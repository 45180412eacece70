# -*- coding: utf-8 -*-
"""Reads the fuzzingclient's reports/index.json and judges the run.

Prints, per agent (one per echo-server mode), how many cases ended in each behavior, the id
and a one-line reason of every case that passed with something other than OK (NON-STRICT,
INFORMATIONAL, an allowed UNIMPLEMENTED), and the id, description, expectation and result of
every case that did not pass. A case passes when
its behavior and its closing behavior are OK, NON-STRICT or INFORMATIONAL, or UNIMPLEMENTED
for a case id listed in the --unimplemented-ok file (an offer our server is right to decline).
Exits 1 if any case did not pass or if no case ran at all, 0 otherwise.

Runs under the Python 2.7 that run.sh installs as well as under Python 3.
"""
from __future__ import print_function

import argparse
import fnmatch
import json
import os
import sys

PASSING = ("OK", "NON-STRICT", "INFORMATIONAL")


def case_sort_key(case_id):
    return tuple(int(part) for part in case_id.split("."))


def load_unimplemented_ok(path):
    """Case-id patterns (fnmatch) for which UNIMPLEMENTED is the right answer, one a line."""
    if not path:
        return []
    patterns = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                patterns.append(line)
    return patterns


def passes(behavior, case_id, unimplemented_ok):
    if behavior in PASSING:
        return True
    if behavior == "UNIMPLEMENTED":
        return any(fnmatch.fnmatch(case_id, p) for p in unimplemented_ok)
    return False


def one_line(text, width=160):
    """`text` on one line of at most `width` characters, in ASCII (Python 2 prints to a pipe
    as ASCII, and the UTF-8 cases' reports quote their payloads)."""
    text = " ".join(text.split())
    if len(text) > width:
        text = text[:width - 3] + "..."
    return text.encode("ascii", "backslashreplace").decode("ascii")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", help="the fuzzingclient's outdir (holds index.json)")
    parser.add_argument("--unimplemented-ok", help="file of case-id patterns")
    args = parser.parse_args()

    with open(os.path.join(args.reports, "index.json")) as f:
        index = json.load(f)
    unimplemented_ok = load_unimplemented_ok(args.unimplemented_ok)

    total = 0
    not_passed = 0
    for agent in sorted(index):
        cases = index[agent]
        counts = {}
        close_counts = {}
        bad = []
        noted = []
        for case_id in sorted(cases, key=case_sort_key):
            result = cases[case_id]
            behavior = result["behavior"]
            behavior_close = result["behaviorClose"]
            counts[behavior] = counts.get(behavior, 0) + 1
            close_counts[behavior_close] = close_counts.get(behavior_close, 0) + 1
            if not (passes(behavior, case_id, unimplemented_ok)
                    and passes(behavior_close, case_id, unimplemented_ok)):
                bad.append((case_id, result))
            elif behavior != "OK" or behavior_close != "OK":
                noted.append((case_id, result))
        total += len(cases)
        not_passed += len(bad)
        print("agent %s: %d cases" % (agent, len(cases)))
        print("  behavior:       " + ", ".join(
            "%s %d" % (k, counts[k]) for k in sorted(counts)))
        print("  close behavior: " + ", ".join(
            "%s %d" % (k, close_counts[k]) for k in sorted(close_counts)))
        for case_id, result in noted:
            with open(os.path.join(args.reports, result["reportfile"])) as f:
                report = json.load(f)
            # The part of the report that says why: the result unless only the close differed.
            why = report.get("result", "") if result["behavior"] != "OK" \
                else report.get("resultClose", "")
            print("  %s %s (close %s): %s" % (
                case_id, result["behavior"], result["behaviorClose"], one_line(why)))
        for case_id, result in bad:
            with open(os.path.join(args.reports, result["reportfile"])) as f:
                report = json.load(f)
            print("  NOT PASSED %s: behavior %s, close %s, remote close code %s" % (
                case_id, result["behavior"], result["behaviorClose"],
                result.get("remoteCloseCode")))
            print("    description: %s" % " ".join(report.get("description", "").split()))
            print("    expectation: %s" % " ".join(report.get("expectation", "").split()))
            print("    result:      %s" % " ".join(report.get("result", "").split()))
            if report.get("resultClose"):
                print("    close:       %s" % " ".join(report["resultClose"].split()))

    if total == 0:
        print("no case ran")
        return 1
    print("%d passed, %d failed" % (total - not_passed, not_passed))
    return 1 if not_passed else 0


if __name__ == "__main__":
    sys.exit(main())
