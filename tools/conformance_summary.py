"""Summarise a run of the ClusterNetworkPolicy conformance suite (``go test -v``
output of network-policy-api's conformance.test) as the README's results table.

    python tools/conformance_summary.py LOG SECONDS SUITE_DIR [EDITION]

``SUITE_DIR`` is the network-policy-api module's source: each test's subtests
are read from ``conformance/tests/*.go``, so that the subtests left out of the
run (scripts/cnp-conformance skips those that probe SCTP, which this kernel
lacks) are counted and named with their reason, not silently missing.
``EDITION`` says which suite ran (default: unmodified).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): TestConformance/(\w+)(?:/(\S+))? \(([\d.]+)s\)")
SCTP_REASON = "probes SCTP, and this kernel has no SCTP sockets (CONFIG_IP_SCTP unset)"
FEATURE_REASON = "its experimental feature was not enabled (--supported-features)"


def suite_subtests(suite_dir: str) -> dict[str, list[tuple[str, bool]]]:
    """Each test's subtests, in order, and whether each probes SCTP."""
    tests: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(Path(suite_dir, "conformance", "tests").glob("*.go")):
        source = path.read_text()
        heads = list(re.finditer(r'ShortName:\s*"(\w+)"', source))
        for i, head in enumerate(heads):
            body = source[head.end() : heads[i + 1].start() if i + 1 < len(heads) else len(source)]
            runs = list(re.finditer(r't\.Run\("([^"]+)"', body))
            tests[head.group(1)] = [
                (run.group(1), '"sctp"' in body[run.end() : runs[j + 1].start() if j + 1 < len(runs) else len(body)])
                for j, run in enumerate(runs)
            ]
    return tests


def main(log: str, seconds: str, suite_dir: str, edition: str = "unmodified") -> None:
    declared = suite_subtests(suite_dir)
    ran: dict[str, dict] = {}  # the tests the run selected (a test the suite skips for its feature shows as SKIP)
    for line in open(log, errors="replace"):
        m = RESULT.match(line)
        if not m:
            continue
        status, test, sub, _ = m.groups()
        entry = ran.setdefault(test, {"status": None, "subs": {}})
        if sub is None:
            entry["status"] = status
        else:
            entry["subs"][sub.replace("_", " ")] = status
    rows, totals, failed = [], {"PASS": 0, "FAIL": 0, "SCTP": 0, "FEATURE": 0}, []
    for name in sorted(ran):
        subs = ran[name]["subs"]
        counts = {"PASS": 0, "FAIL": 0, "SCTP": 0, "FEATURE": 0}
        for title, sctp in declared.get(name, []):
            result = subs.get(title)
            kind = result if result in ("PASS", "FAIL") else "SCTP" if sctp else "FEATURE"
            counts[kind] += 1
            if result == "FAIL":
                failed.append(f"{name}/{title}")
        for kind in counts:
            totals[kind] += counts[kind]
        reasons = [r for kind, r in (("SCTP", SCTP_REASON), ("FEATURE", FEATURE_REASON)) if counts[kind]]
        result = "fail" if counts["FAIL"] else "pass" if counts["PASS"] else "not run"
        rows.append(
            f"| {name} | {result} | {counts['PASS']} / {counts['FAIL']} / {counts['SCTP'] + counts['FEATURE']} | {'; '.join(reasons)} |"
        )
    print(
        f"ClusterNetworkPolicy conformance (sigs.k8s.io/network-policy-api v0.3.0, {edition}), "
        f"{len(ran)} of its {len(declared)} tests: subtests **{totals['PASS']} passed, {totals['FAIL']} failed, "
        f"{totals['SCTP'] + totals['FEATURE']} not run** ({totals['SCTP']} probe SCTP, "
        f"{totals['FEATURE']} need a feature not enabled); {seconds} s\n"
    )
    print("| test | result | subtests passed / failed / not run | why not run |\n| --- | --- | --- | --- |")
    print("\n".join(rows))
    if failed:
        print("\nFailed subtests:\n" + "\n".join(f"- {f}" for f in failed))


if __name__ == "__main__":
    main(*sys.argv[1:5])
