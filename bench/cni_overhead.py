#!/usr/bin/env python3
"""CNI ADD overhead of nftpolicy on top of bridge, and ADD to enforced, on a
simulated node, for both forms of the installed plugin.

    sudo .venv/bin/python bench/cni_overhead.py [--form both|shim|python] [--pods 40] [--rounds 3]

Same run, same node, same enforcer: the python form is the bed's own
executable, the shim is installed beside it with the same conflist entry.
Each pod's ADD runs bridge (+host-local) and then the nftpolicy plugin, timed
separately. The baseline is bridge's own ADD time in the same calls;
nftpolicy's time includes writing the record, tagging the veth and waiting
until the enforcer committed the pod's rules, so it is also the time from ADD
to enforced. Serial ADDs alternate the forms pod by pod; then ``--rounds``
rounds of 20 ADDs at once per form, the forms alternating round by round
(each round's pods deleted after it, so every round meets the same node).
Prints medians, p99 and ratios.
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

from enforcer.node.cni_install import install_plugin  # noqa: E402
from enforcer.testbed.simulation import SimulatedPod, Testbed, build_shim, sh  # noqa: E402

CONCURRENT = 20


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def timed_add(node, pod: SimulatedPod, bin_dir: Path) -> tuple[float, float]:
    """(bridge seconds, nftpolicy seconds) for one pod's ADD; nftpolicy from ``bin_dir``."""
    sh("ip", "netns", "add", pod.netns)
    bridge, own = node.conflist()["plugins"]
    t0 = time.perf_counter()
    code, prev = node.run_plugin(bridge, "ADD", pod, None, "1.0.0")
    t1 = time.perf_counter()
    assert code == 0, prev
    code, out = node.run_plugin(own, "ADD", pod, prev, "1.0.0", bin_dir)
    t2 = time.perf_counter()
    assert code == 0 and out == prev, out
    pod.result = prev
    node.pods[pod.key] = pod
    return t1 - t0, t2 - t1


def new_pod(bed, node, name: str) -> SimulatedPod:
    return SimulatedPod("bench", name, node, f"{bed.prefix}-p{next(bed.counter)}", uuid.uuid4().hex, {"app": "bench"}, [])


def concurrent_round(bed, node, bin_dir: Path, tag: str) -> list[tuple[float, float]]:
    results: list[tuple[float, float]] = []
    lock = threading.Lock()
    pods = [new_pod(bed, node, f"{tag}-{i}") for i in range(CONCURRENT)]

    def add(pod: SimulatedPod) -> None:
        r = timed_add(node, pod, bin_dir)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=add, args=(pod,)) for pod in pods]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == CONCURRENT, "an ADD failed"
    for pod in pods:  # the next round meets the same node
        node.delete_pod(pod.key, publish=False)
    node.wait_converged()
    return results


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:7.1f} ms   p99 {p99(values) * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--form", choices=("both", "shim", "python"), default="both")
    parser.add_argument("--pods", type=int, default=40, help="serial ADDs per form")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of 20 concurrent ADDs per form")
    args = parser.parse_args()
    forms = ("python", "shim") if args.form == "both" else (args.form,)
    serial: dict[str, list[tuple[float, float]]] = {f: [] for f in forms}
    conc: dict[str, list[tuple[float, float]]] = {f: [] for f in forms}
    with tempfile.TemporaryDirectory() as tmp, Testbed(Path(tmp) / "bed", nodes=1) as bed:
        bins = {"python": bed.cni_bin}
        if "shim" in forms:
            bins["shim"] = bed.root / "cni-bin-shim"
            bins["shim"].mkdir()
            install_plugin(bins["shim"], form="shim", shim=build_shim())
        node = bed.nodes[0]
        bed.namespace("bench")
        bed.apply_policies(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"namespace": "bench", "name": "deny"},
                "spec": {"podSelector": {}},
            }
        )
        node.start_enforcer()
        node.wait_converged()
        for i in range(args.pods):  # the forms alternate pod by pod
            for form in forms:
                serial[form].append(timed_add(node, new_pod(bed, node, f"{form}-s{i}"), bins[form]))
        for r in range(args.rounds):  # and round by round
            for form in forms:
                conc[form] += concurrent_round(bed, node, bins[form], f"{form}-c{r}")

    print(f"serial ADDs: {args.pods} pods per form, the forms alternating, 1 node, enforcer running")
    all_bridge = [b for f in forms for b, _ in serial[f]]
    print(f"  {'bridge+host-local (baseline)':30s}  {ms(all_bridge)}")
    for form in forms:
        own = [o for _, o in serial[form]]
        print(
            f"  {f'nftpolicy {form} (ADD to enforced)':30s}  {ms(own)}   "
            f"ratio to bridge p50 {statistics.median(own) / statistics.median(all_bridge):5.2f}x"
        )
    print(
        f"{CONCURRENT} concurrent ADDs x {args.rounds} rounds per form (each pod's bridge, then its nftpolicy; 20 pods at once)"
    )
    for form in forms:
        bridge, own = [b for b, _ in conc[form]], [o for _, o in conc[form]]
        print(f"  {f'bridge+host-local ({form} rounds)':30s}  {ms(bridge)}")
        print(f"  {f'nftpolicy {form} (ADD to enforced)':30s}  {ms(own)}   ratio to bridge p99 {p99(own) / p99(bridge):5.2f}x")


if __name__ == "__main__":
    main()
