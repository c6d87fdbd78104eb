"""``nftpolicy demo``: the example cluster before and after its policies.

Prints the connectivity matrix of the example pods with no policies, then
with every example policy applied, explains two flows, and shows the size of
the ruleset node-1 gets. Everything is computed offline from
manifests/examples; nothing is changed on this machine.
"""
from __future__ import annotations

from pathlib import Path

import click

from rules.evaluate import verdict
from rules.load import load_state
from rules.matrix import Matrix
from rules.model import ClusterState, Protocol
from rules.translate import desired_ruleset

EXAMPLES = Path(__file__).resolve().parent.parent / "manifests" / "examples"


def _probe_port(state: ClusterState, dst: str) -> int:
    """The destination's first container port, as a probe would use."""
    pod = state.pod(dst)
    return pod.ports[0].port if pod and pod.ports else 80


def connectivity(state: ClusterState, names: list[str]) -> Matrix:
    def allowed(src: str, dst: str) -> bool:
        return verdict(state, state.pod(src), state.pod(dst), _probe_port(state, dst), Protocol.TCP).allowed

    return Matrix.probe(names, allowed)


def run(examples: Path = EXAMPLES) -> None:
    before = load_state([examples / "cluster.yaml"])
    after = load_state([examples])
    names = [p.key for p in before.pods if p.is_policy_target and any(ip.version == 4 for ip in p.ips)]
    click.echo("Connectivity with no policies (TCP to each pod's first port; . allowed, X denied):\n")
    click.echo(connectivity(before, names).render())
    click.echo(f"With the {len(after.policies)} example policies ({', '.join(p.key for p in after.policies)}):\n")
    click.echo(connectivity(after, names).render())
    for src, dst, port in (("frontend/web-1", "backend/api-v1-0", 8080), ("staging/web-canary-0", "backend/api-v1-0", 8080)):
        v = verdict(after, after.pod(src), after.pod(dst), port, Protocol.TCP)
        click.echo(f"{'ALLOWED' if v.allowed else 'DENIED '} {src} -> {dst} TCP/{port}: {v.reason}")
    counts = desired_ruleset(after, "node-1").object_count()
    click.echo("\nnode-1's ruleset: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    click.echo(f"See it with: nftpolicy render -f {examples} --node node-1")
