#!/usr/bin/env python3
"""Strict checker for an Autobahn|Testsuite report (index.json).

Usage:
    autobahn/check.py REPORT_DIR_OR_INDEX_JSON [--agent sabai] [--expect-cases N]

Passes (exit 0) only if, for the given agent:
  * the report holds exactly the expected number of cases (default: the whole
    suite, EXPECTED_TOTAL_CASES), so an empty or truncated run never passes;
  * every case has `behavior` and `behaviorClose` in {OK, INFORMATIONAL},
    permessage-deflate's 12.* and 13.* included (UNIMPLEMENTED fails).
NON-STRICT, FAILED, WRONG CODE, UNCLEAN, FAILED BY CLIENT, ... all fail.

Exit codes: 0 pass, 1 check failed, 2 unusable input (missing/bad file, agent).
Standard library only.
"""
import argparse
import collections
import json
import os
import sys

# Number of cases wstest runs for the spec `"cases": ["*"]` with
# autobahntestsuite 0.8.2 (autobahn 0.10.9). Verified from the installed suite:
#   from autobahntestsuite.case import Cases, CaseCategories, ...
#   CaseSet(...).parseSpecCases({"cases": ["*"]})  ->  517 ids
# per top-level section: 1:16 2:11 3:7 4:10 5:20 6:145 7:37 9:54 10:1 12:90 13:126
# (there is no section 8 or 11). A full run's index.json held the same count.
EXPECTED_TOTAL_CASES = 517
# Of those, 12.x (90) + 13.x (126) = 216 are permessage-deflate cases.
EXPECTED_COMPRESSION_CASES = 216

ALLOWED = {"OK", "INFORMATIONAL"}


def case_sort_key(case_id):
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Fail unless an Autobahn report is complete and clean.")
    ap.add_argument("report", help="report directory (holding index.json) or the index.json itself")
    ap.add_argument("--agent", default="sabai", help="agent name in the report (default: sabai)")
    ap.add_argument("--expect-cases", type=int, default=EXPECTED_TOTAL_CASES, metavar="N",
                    help="number of cases the report must hold (default: %d, the whole suite); "
                         "only for trial runs on a subset of the cases" % EXPECTED_TOTAL_CASES)
    args = ap.parse_args(argv)

    path = args.report
    if os.path.isdir(path):
        path = os.path.join(path, "index.json")
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        print("check.py: FAIL: no report at %s (the run wrote no results)" % path)
        return 2
    except (OSError, ValueError) as e:
        print("check.py: FAIL: cannot read report %s: %s" % (path, e))
        return 2
    if not isinstance(index, dict):
        print("check.py: FAIL: %s is not an Autobahn index.json" % path)
        return 2

    print("check.py: report %s, agent %r" % (path, args.agent))
    if args.agent not in index:
        print("check.py: FAIL: agent %r not in report (agents present: %s)"
              % (args.agent, ", ".join(sorted(index)) or "none: the run produced no results"))
        return 2
    cases = index[args.agent]
    if not isinstance(cases, dict):
        print("check.py: FAIL: malformed entry for agent %r" % args.agent)
        return 2

    counts = {"behavior": collections.Counter(), "behaviorClose": collections.Counter()}
    offending = []
    for case_id in sorted(cases, key=case_sort_key):
        result = cases[case_id] if isinstance(cases[case_id], dict) else {}
        beh = result.get("behavior", "<missing>")
        beh_close = result.get("behaviorClose", "<missing>")
        counts["behavior"][beh] += 1
        counts["behaviorClose"][beh_close] += 1
        if beh not in ALLOWED or beh_close not in ALLOWED:
            offending.append((case_id, beh, beh_close, result.get("reportfile")))

    def summary(counter):
        order = ["OK", "INFORMATIONAL", "UNIMPLEMENTED", "NON-STRICT"]
        keys = [k for k in order if k in counter] + sorted(k for k in counter if k not in order)
        return ", ".join("%s: %d" % (k, counter[k]) for k in keys) or "(none)"

    print("behavior:      " + summary(counts["behavior"]))
    print("behaviorClose: " + summary(counts["behaviorClose"]))

    failed = False
    n = len(cases)
    if n != args.expect_cases:
        failed = True
        print("check.py: FAIL: report has %d cases, expected %d%s"
              % (n, args.expect_cases,
                 " (empty or truncated run?)" if n < args.expect_cases else ""))
    if offending:
        failed = True
        print("check.py: FAIL: %d case(s) not OK/INFORMATIONAL:" % len(offending))
        width = max(len(c[0]) for c in offending)
        for case_id, beh, beh_close, reportfile in offending:
            line = "  %-*s  behavior=%-14s behaviorClose=%s" % (width, case_id, beh, beh_close)
            if reportfile:
                # reportfile names the case's .json; its .html sits beside it.
                html = os.path.splitext(reportfile)[0] + ".html"
                line += "  [%s]" % os.path.join(os.path.dirname(path), html)
            print(line)

    if failed:
        print("check.py: FAILED (%d cases checked)" % n)
        return 1
    print("check.py: PASSED (%d cases)" % n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
