"""Shared helpers for tests.

Conventions for addresses in tests: pods on node n1 are 10.0.1.0/24 and
fd00:1::/64, on node n2 10.0.2.0/24 and fd00:2::/64; "outside the cluster" is
203.0.113.0/24 (TEST-NET-3) and 2001:db8::/32. Nothing here ever sends a
packet outside a network namespace the test made.
"""

from __future__ import annotations

import random
from typing import Any

from rules.load import state_from_objects
from rules.model import ClusterState


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(
    key: str,
    ips: str | list[str],
    node: str = "n1",
    labels: dict | None = None,
    ports: list | None = None,
    phase: str = "Running",
    **spec: Any,
) -> dict[str, Any]:
    """A pod as the API returns it. ``ports``: (name, number[, protocol]) tuples."""
    ns, name = key.split("/")
    ips = [ips] if isinstance(ips, str) else ips
    container_ports = [{"name": p[0], "containerPort": p[1], "protocol": p[2] if len(p) > 2 else "TCP"} for p in ports or []]
    return {
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": labels or {}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": container_ports}], **spec},
        "status": {"phase": phase, "podIPs": [{"ip": ip} for ip in ips]},
    }


def policy(key: str, spec: dict[str, Any]) -> dict[str, Any]:
    ns, name = key.split("/")
    return {
        "kind": "NetworkPolicy",
        "apiVersion": "networking.k8s.io/v1",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }


def cnp(name: str, tier: str, priority: int, subject: dict, ingress: list | None = None, egress: list | None = None) -> dict:
    """A ClusterNetworkPolicy as the API takes it."""
    spec: dict = {"tier": tier, "priority": priority, "subject": subject}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": "policy.networking.k8s.io/v1beta1",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def rule(action: str, peers: list, name: str = "", protocols: list | None = None, field: str = "from") -> dict:
    r: dict = {"action": action, field: peers}
    if name:
        r["name"] = name
    if protocols is not None:
        r["protocols"] = protocols
    return r


def state(*objects: dict[str, Any]) -> ClusterState:
    return state_from_objects(objects)


def random_policy(rng: random.Random, i: int) -> dict:
    """A random but valid policy over the bed's labels, ports and CIDRs."""

    def selector() -> dict:
        return rng.choice(
            [
                {},
                {"matchLabels": {"app": rng.choice("abc")}},
                {"matchExpressions": [{"key": "app", "operator": rng.choice(["In", "NotIn"]), "values": [rng.choice("abc")]}]},
            ]
        )

    def peer() -> dict:
        return rng.choice(
            [
                {"podSelector": selector()},
                {"namespaceSelector": rng.choice([{}, {"matchLabels": {"team": rng.choice("ab")}}])},
                {"namespaceSelector": {"matchLabels": {"team": rng.choice("ab")}}, "podSelector": selector()},
                {"ipBlock": {"cidr": "10.244.0.0/16", "except": [f"10.244.{rng.choice([1, 2])}.0/24"]}},
            ]
        )

    def port() -> dict:
        return rng.choice(
            [{"port": 80}, {"port": "http"}, {"port": 79, "endPort": 81}, {"protocol": "UDP", "port": 53}, {"protocol": "TCP"}]
        )

    def rules() -> list:
        return [
            {
                k: v
                for k, v in (
                    ("from", [peer() for _ in range(rng.randint(0, 2))]),
                    ("ports", [port() for _ in range(rng.randint(0, 2))]),
                )
                if v
            }
            for _ in range(rng.randint(0, 2))
        ]

    egress = [{("to" if k == "from" else k): v for k, v in r.items()} for r in rules()]
    spec = {
        "podSelector": selector(),
        "policyTypes": rng.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]]),
        "ingress": rules(),
        "egress": egress,
    }
    return policy(f"{rng.choice('xyz')}/random-{i}", spec)
