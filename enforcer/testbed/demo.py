"""``nftpolicy demo``: the example policies enforced on simulated nodes.

Builds two nodes in network namespaces, with the real bridge and host-local
CNI plugins and nftpolicy chained after them, and the pods of
manifests/examples/cluster.yaml on them (each serving its container ports).
Prints the connectivity matrix measured with real TCP connections, applies
the example policies, waits until both enforcers committed them, prints the
matrix again beside the reference evaluator's, and removes everything it made.
Needs root; touches nothing outside the namespaces it creates.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import yaml

from enforcer.testbed.simulation import SimulatedPod, Testbed, expected, observed

EXAMPLES = Path(__file__).resolve().parent / "examples"  # package data; manifests/examples links here


def _first_tcp_port(pod: SimulatedPod) -> int:
    return next((p for _, p, proto in pod.ports if proto == "TCP"), 80)


def run(examples: Path = EXAMPLES) -> bool:
    """Returns whether the measured matrices agreed with the evaluator."""
    objects = [o for o in yaml.safe_load_all((examples / "cluster.yaml").read_text()) if o]
    policies = [
        o for f in sorted(examples.glob("*.yaml")) if f.name != "cluster.yaml" for o in yaml.safe_load_all(f.read_text()) if o
    ]
    with tempfile.TemporaryDirectory(prefix="nftpolicy-demo-") as tmp, Testbed(Path(tmp) / "bed", nodes=2) as bed:
        click.echo("Building two simulated nodes (network namespaces, bridge + host-local + nftpolicy CNI)...")
        for o in objects:
            if o["kind"] == "Namespace":
                bed.namespace(o["metadata"]["name"], **(o["metadata"].get("labels") or {}))
        for node in bed.nodes:
            node.start_enforcer()
        nodes = {n.name: n for n in bed.nodes}
        for o in objects:
            spec = o.get("spec", {})
            if o["kind"] != "Pod" or spec.get("hostNetwork"):
                continue
            ports = [
                (p.get("name", ""), p["containerPort"], p.get("protocol", "TCP"))
                for c in spec.get("containers", [])
                for p in c.get("ports", [])
            ]
            meta = o["metadata"]
            nodes[spec["nodeName"]].add_pod(f"{meta['namespace']}/{meta['name']}", meta.get("labels") or {}, ports, publish=False)
        bed.publish()
        bed.wait_converged()
        click.echo(
            f"{len(bed.pods())} pods. TCP connect to each pod's first container port; . connected, X refused or timed out:\n"
        )
        click.echo(observed(bed, _first_tcp_port).render())
        started = time.monotonic()
        bed.apply_policies(*policies)
        bed.wait_converged()
        click.echo(
            f"Applied {len(policies)} example policies; both enforcers committed them in "
            f"{(time.monotonic() - started) * 1000:.0f} ms:\n  "
            + "\n  ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in policies)
            + "\n"
        )
        want = expected(bed, _first_tcp_port)
        got = observed(bed, _first_tcp_port, expect=want)
        click.echo(want.compare(got))
        agreed = not want.mismatches(got)
        click.echo("The packets agree with the reference evaluator." if agreed else "The packets DISAGREE with the evaluator.")
        click.echo("Removing the simulated nodes.")
        return agreed
