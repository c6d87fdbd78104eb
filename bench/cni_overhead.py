#!/usr/bin/env python3
"""CNI ADD overhead of nftpolicy on top of bridge, and ADD to enforced, on a simulated node.

    sudo .venv/bin/python bench/cni_overhead.py [--pods 40]

Same run, same node: each pod's ADD runs bridge (+host-local) and then the
nftpolicy plugin, timed separately. The baseline is bridge's own ADD time;
nftpolicy's time includes writing the record, tagging the veth and waiting
until the enforcer committed the pod's rules, so it is also the time from
ADD to enforced. Then 20 ADDs at once. Prints medians, p99 and ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from enforcer.simulation import Pod, Testbed, sh  # noqa: E402


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def timed_add(node, pod: Pod) -> tuple[float, float]:
    """(bridge seconds, nftpolicy seconds) for one pod's ADD."""
    sh("ip", "netns", "add", pod.netns)
    bridge, own = node.conflist()["plugins"]
    t0 = time.perf_counter()
    code, prev = node.run_plugin(bridge, "ADD", pod, None, "1.0.0")
    t1 = time.perf_counter()
    assert code == 0, prev
    code, out = node.run_plugin(own, "ADD", pod, prev, "1.0.0")
    t2 = time.perf_counter()
    assert code == 0, out
    pod.result = prev
    node.pods[pod.key] = pod
    return t1 - t0, t2 - t1


def new_pod(bed, node, i: int) -> Pod:
    return Pod("bench", f"p{i}", node, f"{bed.prefix}-p{next(bed.counter)}", uuid.uuid4().hex, {"app": "bench"}, [])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Testbed(Path(tmp) / "bed", nodes=1) as bed:
        node = bed.nodes[0]
        bed.namespace("bench")
        bed.apply_policies({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                            "metadata": {"namespace": "bench", "name": "deny"}, "spec": {"podSelector": {}}})
        node.start_enforcer()
        node.wait_converged()
        serial = [timed_add(node, new_pod(bed, node, i)) for i in range(args.pods)]
        bridge_times = [b for b, _ in serial]
        own_times = [o for _, o in serial]

        results: list[tuple[float, float]] = []
        lock = threading.Lock()

        def concurrent(i: int) -> None:
            r = timed_add(node, new_pod(bed, node, 1000 + i))
            with lock:
                results.append(r)

        threads = [threading.Thread(target=concurrent, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        conc_bridge = [b for b, _ in results]
    conc_own = [o for _, o in results]

    med_b, med_o = statistics.median(bridge_times), statistics.median(own_times)
    print(f"serial ADDs: {args.pods} pods, 1 node, enforcer running")
    print(f"  bridge+host-local (baseline)  p50 {med_b * 1000:7.1f} ms   p99 {p99(bridge_times) * 1000:7.1f} ms")
    print(f"  nftpolicy (ADD to enforced)   p50 {med_o * 1000:7.1f} ms   p99 {p99(own_times) * 1000:7.1f} ms")
    print(f"  ratio nftpolicy / bridge      p50 {med_o / med_b:7.2f}x")
    print("20 concurrent ADDs (each pod's bridge, then its nftpolicy; all pods at once)")
    print(f"  bridge+host-local (baseline)  p50 {statistics.median(conc_bridge) * 1000:7.1f} ms   p99 {p99(conc_bridge) * 1000:7.1f} ms")
    print(f"  nftpolicy (ADD to enforced)   p50 {statistics.median(conc_own) * 1000:7.1f} ms   p99 {p99(conc_own) * 1000:7.1f} ms")
    print(f"  ratio nftpolicy / bridge      p99 {p99(conc_own) / p99(conc_bridge):7.2f}x")


if __name__ == "__main__":
    main()
