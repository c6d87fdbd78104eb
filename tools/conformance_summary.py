"""Summarise a run of the ClusterNetworkPolicy conformance suite (``go test -v``
output of network-policy-api's conformance.test) as the README's results table.

    python tools/conformance_summary.py LOG SECONDS SKIP_SUBTESTS

One row per conformance test with its subtests' results; every skipped
subtest gets its reason: ``SKIP_SUBTESTS`` is the pattern scripts/cnp-conformance
skips (subtests that probe SCTP), any other skip is the suite's own (a
feature not enabled).
"""

from __future__ import annotations

import re
import sys

RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): TestConformance/(\w+)(?:/(\S+))? \(([\d.]+)s\)")
SCTP_REASON = "probes SCTP, and this kernel has no SCTP sockets (CONFIG_IP_SCTP unset)"
FEATURE_REASON = "its experimental feature was not enabled (--supported-features)"


def main(log: str, seconds: str, skip: str) -> None:
    tests: dict[str, dict] = {}
    for line in open(log, errors="replace"):
        m = RESULT.match(line)
        if not m:
            continue
        status, test, sub, took = m.groups()
        entry = tests.setdefault(test, {"status": None, "subs": [], "seconds": 0.0})
        if sub is None:
            entry["status"], entry["seconds"] = status, float(took)
        else:
            entry["subs"].append((sub.replace("_", " "), status))
    count = {s: sum(1 for t in tests.values() for _, st in t["subs"] if st == s) for s in ("PASS", "FAIL", "SKIP")}
    whole = {s: sum(1 for t in tests.values() if t["status"] == s and not t["subs"]) for s in ("SKIP",)}
    print(
        f"ClusterNetworkPolicy conformance (sigs.k8s.io/network-policy-api v0.3.0, unmodified): "
        f"{len(tests)} tests; subtests **{count['PASS']} passed, {count['FAIL']} failed, {count['SKIP']} skipped**; "
        f"{whole['SKIP']} tests skipped whole; {seconds} s\n"
    )
    print("| test | result | subtests passed / failed / skipped | skip reason |\n| --- | --- | --- | --- |")
    for name, t in sorted(tests.items()):
        subs = t["subs"]
        n = {s: sum(1 for _, st in subs if st == s) for s in ("PASS", "FAIL", "SKIP")}
        reason = ""
        if n["SKIP"] or (t["status"] == "SKIP" and not subs):
            reason = (
                SCTP_REASON if any(re.search(skip, s.replace(" ", "_")) for s, st in subs if st == "SKIP") else FEATURE_REASON
            )
        print(f"| {name} | {t['status'].lower()} | {n['PASS']} / {n['FAIL']} / {n['SKIP']} | {reason} |")
    failed = [f"{name}/{s}" for name, t in sorted(tests.items()) for s, st in t["subs"] if st == "FAIL"]
    if failed:
        print("\nFailed subtests:\n" + "\n".join(f"- {f}" for f in failed))


if __name__ == "__main__":
    main(*sys.argv[1:4])
