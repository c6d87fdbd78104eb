#!/usr/bin/env python3
"""Growth: ruleset size, render time and one-change transaction size for the
node under test, at growing cluster sizes.

    .venv/bin/python bench/ruleset_size.py

Baseline (same run): the smallest state. Prints objects per state and the
ratio of each count to the baseline's, next to the ratio of pods and
policies: chains and rules should follow local pods and policies, not
cluster size; elements should grow no faster than pods. Then, per size, the
transaction that one change needs (a remote pod appears, a local pod's label
changes, a policy gains a port) and the time to render and plan it as the
enforcer does (state updated in place, render memo kept): neither should
depend on cluster size.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from scale import NODE, scaled_state  # noqa: E402

from rules.model import ClusterState, PolicyPort  # noqa: E402
from rules.nft import render_text  # noqa: E402
from rules.plan import plan  # noqa: E402
from rules.translate import RenderMemo, desired_ruleset  # noqa: E402

SIZES = [(1000, 100), (5000, 500), (10000, 1000)]


def measure(state: ClusterState) -> dict:
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


# --- one change at a time ------------------------------------------------------


def new_remote_pod(state: ClusterState) -> ClusterState:
    """A replica of a deployment that local pods' policies name, on another node."""
    local = next(p for p in state.pods if p.node == NODE)
    peer = next(p for p in state.pods if p.node != NODE and p.namespace == local.namespace)
    ip = ipaddress.ip_address("10.127.255.254")
    return state.with_pods([dataclasses.replace(peer, name=peer.name + "-new", ips=(ip,))])


def local_label_change(state: ClusterState) -> ClusterState:
    """A local pod leaves its deployment's allow policies (its app label changes)."""
    local = next(p for p in state.pods if p.node == NODE)
    relabelled = dataclasses.replace(local, labels=tuple((k, v + "-x" if k == "app" else v) for k, v in local.labels))
    return state.with_pods([relabelled])


def policy_gains_a_port(state: ClusterState) -> ClusterState:
    """A policy selecting a local pod allows one more port."""
    local = next(p for p in state.pods if p.node == NODE)
    policy = next(p for p in state.policies if p.namespace == local.namespace and p.ingress)
    rule = policy.ingress[0]
    changed = dataclasses.replace(policy, ingress=(dataclasses.replace(rule, ports=rule.ports + (PolicyPort(port=7777),)),))
    return state.with_objects(policies=[changed if p is policy else p for p in state.policies])


CHANGES: dict[str, Callable[[ClusterState], ClusterState]] = {
    "remote pod added": new_remote_pod,
    "local pod relabelled": local_label_change,
    "policy gains a port": policy_gains_a_port,
}


def one_change(state: ClusterState, change: Callable[[ClusterState], ClusterState], rounds: int = 5) -> tuple[int, float]:
    """Commands in the transaction, and the median render + plan time with a
    warm memo, toggling between the two states."""
    memo = RenderMemo()
    states = [state, change(state)]
    current = desired_ruleset(state, NODE, memo=memo).tables[0]
    sizes, times = [], []
    for i in range(1, 2 * rounds + 1):
        start = time.perf_counter()
        desired = desired_ruleset(states[i % 2], NODE, memo=memo).tables[0]
        sizes.append(len(plan(desired, current)))
        times.append(time.perf_counter() - start)
        current = desired
    return max(sizes), statistics.median(times)


def main() -> None:
    states = [(p, q, scaled_state(p, q)) for p, q in SIZES]
    rows = [(p, q, measure(s)) for p, q, s in states]
    base = rows[0][2]
    keys = ["chains", "sets", "maps", "rules", "objects", "elements", "bytes", "render_s"]
    print(f"{'pods':>6} {'policies':>8} " + " ".join(f"{k:>10}" for k in keys))
    for pods, policies, c in rows:
        print(f"{pods:>6} {policies:>8} " + " ".join(f"{c[k]:>10.3f}" if k == "render_s" else f"{c[k]:>10}" for k in keys))
    print("\nratio to the baseline (first row):")
    for pods, policies, c in rows:
        print(
            f"{pods / SIZES[0][0]:>6.1f}x pods {policies / SIZES[0][1]:>5.1f}x policies: "
            + " ".join(f"{k}={c[k] / base[k]:.2f}" for k in keys if base[k])
        )
    print("\none change: commands in its transaction, render+plan time (state updated in place, render memo kept)")
    print(f"{'pods':>6} " + " ".join(f"{name:>30}" for name in CHANGES))
    for pods, _, state in states:
        cells = []
        for change in CHANGES.values():
            commands, seconds = one_change(state, change)
            cells.append(f"{commands:>6} cmds {seconds * 1000:>8.1f} ms")
        print(f"{pods:>6} " + " ".join(f"{c:>30}" for c in cells))


if __name__ == "__main__":
    main()
