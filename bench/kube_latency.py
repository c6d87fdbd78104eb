#!/usr/bin/env python3
"""Latency from the Kubernetes API to the kernel, on two simulated nodes with
a real kube-apiserver (built by scripts/build-kube).

    sudo .venv/bin/python bench/kube_latency.py [--rounds 20]

For each round a policy is changed with ``kubectl apply`` (alternately
isolating x/a and selecting nothing). Measured:
- the ``kubectl apply`` itself (the same-run baseline: the API write);
- apply to committed on every node (each enforcer's status shows the
  policy's resourceVersion);
- apply to a probe from the other node seeing the new behaviour (rounds
  that open the flow, probed every 20 ms);
- pod ADD to enforced: nftpolicy's CNI ADD, which returns once committed,
  beside bridge's own ADD.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from cni_overhead import new_pod, p99, timed_add  # noqa: E402
from enforcer.testbed.simulation import Testbed  # noqa: E402
from kube import ApiCluster, ControlPlane  # noqa: E402


def policy(selecting: str) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": "x", "name": "toggle"},
        "spec": {"podSelector": {"matchLabels": {"app": selecting}}, "policyTypes": ["Ingress"]},
    }


def committed_everywhere(bed: Testbed, rv: int) -> bool:
    for node in bed.nodes:
        seen = json.loads(node.status().get("source") or "{}")
        if seen.get("NetworkPolicy", 0) < rv:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    writes, commits, probes = [], [], []
    with tempfile.TemporaryDirectory() as tmp, Testbed(Path(tmp) / "bed", nodes=2) as bed:
        with ControlPlane(Path(tmp) / "kube", bed.add_host("api", 2), "192.168.56.2") as cp:
            bed.cluster = ApiCluster(cp)
            bed.namespace("x")
            n1, n2 = bed.nodes
            for node in bed.nodes:
                node.start_enforcer()
            a = n1.add_pod("x/a", {"app": "a"})
            b = n2.add_pod("x/b", {"app": "b"})
            bed.wait_converged()
            for i in range(args.rounds):
                opening = i % 2 == 1
                started = time.perf_counter()
                rv = cp.apply(policy("nothing" if opening else "a"))
                writes.append(time.perf_counter() - started)
                while not committed_everywhere(bed, rv):
                    time.sleep(0.002)
                commits.append(time.perf_counter() - started)
                if opening:
                    while not b.result_of(b.send(op="tcp", host=a.ip(4), port=80, timeout=0.02)):
                        pass
                    probes.append(time.perf_counter() - started)
            bed.namespace("bench")
            bed.publish()
            bed.wait_converged()
            adds = [timed_add(n1, new_pod(bed, n1, i)) for i in range(args.rounds)]

    def row(name: str, values: list[float]) -> str:
        return f"  {name:<44} p50 {statistics.median(values) * 1000:7.1f} ms   p99 {p99(values) * 1000:7.1f} ms"

    print(f"{args.rounds} policy changes by kubectl apply, 2 nodes")
    print(row("kubectl apply (same-run baseline)", writes))
    print(row("apply -> committed on every node", commits))
    print(row("apply -> probe across nodes sees it", probes))
    print(f"  ratio committed / apply                       p50 {statistics.median(commits) / statistics.median(writes):.2f}x")
    print(f"{args.rounds} pod ADDs")
    print(row("bridge + host-local (same-run baseline)", [b for b, _ in adds]))
    print(row("nftpolicy ADD -> enforced", [o for _, o in adds]))


if __name__ == "__main__":
    main()
