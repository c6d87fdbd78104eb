#!/usr/bin/env python3
"""Ruleset size and render time for the node under test, at growing cluster sizes.

    .venv/bin/python bench/ruleset_size.py

Baseline (same run): the smallest state. Prints objects per state and the
ratio of each count to the baseline's, next to the ratio of pods and policies:
chains and rules should follow local pods and policies, not cluster size;
elements should grow no faster than pods.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from scale import NODE, scaled_state  # noqa: E402

from rules.nft import render_text  # noqa: E402
from rules.translate import desired_ruleset  # noqa: E402

SIZES = [(1000, 100), (5000, 500), (10000, 1000)]


def measure(pods: int, policies: int) -> dict:
    state = scaled_state(pods, policies)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        ruleset = desired_ruleset(state, NODE)
        text = render_text(ruleset)
        times.append(time.perf_counter() - start)
    counts = ruleset.object_count()
    counts["objects"] = counts["chains"] + counts["sets"] + counts["maps"] + counts["rules"]
    counts["bytes"] = len(text)
    counts["render_s"] = statistics.median(times)
    return counts


def main() -> None:
    rows = [(p, q, measure(p, q)) for p, q in SIZES]
    base = rows[0][2]
    keys = ["chains", "sets", "maps", "rules", "objects", "elements", "bytes", "render_s"]
    print(f"{'pods':>6} {'policies':>8} " + " ".join(f"{k:>10}" for k in keys))
    for pods, policies, c in rows:
        print(f"{pods:>6} {policies:>8} " + " ".join(f"{c[k]:>10.3f}" if k == "render_s" else f"{c[k]:>10}" for k in keys))
    print("\nratio to the baseline (first row):")
    for pods, policies, c in rows:
        print(f"{pods / SIZES[0][0]:>6.1f}x pods {policies / SIZES[0][1]:>5.1f}x policies: " + " ".join(
            f"{k}={c[k] / base[k]:.2f}" for k in keys if base[k]))


if __name__ == "__main__":
    main()
