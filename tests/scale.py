"""Cluster states of realistic shape and any size, for size tests and benchmarks.

Shape: namespaces labelled with a team; deployments of 10 to 100 replicas
(pods share the deployment's labels and a named ``http`` port whose number
differs between deployments); a default deny per namespace; allow policies by
namespace label and pod label, some with ipBlocks and named ports. ``local``
pods run on the node under test, the rest on other nodes. Deterministic for a
given seed.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from rules.load import state_from_objects
from rules.model import ClusterState

NODE = "node-under-test"


def scaled_objects(
    pods: int, policies: int, namespaces: int | None = None, local: int = 20, seed: int = 1
) -> list[dict[str, Any]]:
    """Objects for ``pods`` pods and ``policies`` policies in ``namespaces``
    namespaces (default: one per 100 pods); every (pods // local)-th pod is local."""
    rng = random.Random(seed)
    namespaces = namespaces or max(1, pods // 100)
    local_every = max(1, pods // local)
    teams = [f"team-{i}" for i in range(max(1, namespaces // 5))]
    objects: list[dict[str, Any]] = []
    for n in range(namespaces):
        objects.append({"kind": "Namespace", "metadata": {"name": f"ns-{n}", "labels": {"team": teams[n % len(teams)]}}})
    deployments: list[tuple[str, str]] = []
    v4 = ipaddress.ip_network("10.64.0.0/10")
    made = 0
    while made < pods:
        ns = f"ns-{len(deployments) % namespaces}"
        app = f"app-{len(deployments)}"
        deployments.append((ns, app))
        replicas = min(rng.randint(10, 100), pods - made)
        port = rng.choice([8080, 8443, 9000, 3000])
        for r in range(replicas):
            objects.append(
                {
                    "kind": "Pod",
                    "metadata": {
                        "namespace": ns,
                        "name": f"{app}-{r}",
                        "labels": {"app": app, "tier": rng.choice(["web", "api", "db"])},
                    },
                    "spec": {
                        "nodeName": NODE if made % local_every == 0 else f"node-{made % 500}",
                        "containers": [{"name": "main", "ports": [{"name": "http", "containerPort": port}]}],
                    },
                    "status": {"phase": "Running", "podIPs": [{"ip": str(v4[made + 1])}]},
                }
            )
            made += 1
    for n in range(min(namespaces, policies)):
        objects.append(
            {
                "kind": "NetworkPolicy",
                "metadata": {"namespace": f"ns-{n}", "name": "default-deny"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            }
        )
    for i in range(policies - min(namespaces, policies)):
        ns, app = deployments[i % len(deployments)]
        peer_ns, peer_app = deployments[rng.randrange(len(deployments))]
        ingress_from: list[dict[str, Any]] = [
            {
                "namespaceSelector": {"matchLabels": {"team": teams[int(peer_ns.split("-")[1]) % len(teams)]}},
                "podSelector": {"matchLabels": {"app": peer_app}},
            }
        ]
        if i % 5 == 0:
            ingress_from.append(
                {"ipBlock": {"cidr": f"172.{16 + i % 16}.0.0/16", "except": [f"172.{16 + i % 16}.{i % 256}.0/24"]}}
            )
        objects.append(
            {
                "kind": "NetworkPolicy",
                "metadata": {"namespace": ns, "name": f"allow-{i}"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": app}},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": ingress_from, "ports": [{"port": "http"}, {"port": 9100, "protocol": "TCP"}]}],
                    "egress": [
                        {"to": [{"podSelector": {"matchLabels": {"tier": rng.choice(["api", "db"])}}}]},
                        {
                            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns-0"}}}],
                            "ports": [{"port": 53, "protocol": "UDP"}],
                        },
                    ],
                },
            }
        )
    return objects


def scaled_state(pods: int, policies: int, **kwargs: Any) -> ClusterState:
    return state_from_objects(scaled_objects(pods, policies, **kwargs))
