"""Real packets on simulated nodes agree with the reference evaluator.

The bed (conftest.py): node-1 runs x/a, x/b, y/b; node-2 runs y/a, z/c.
Namespaces x (team=a), y (team=b), z. Every pod serves TCP 80, 81, 8080 and
UDP 53; x/a names 80 "http", x/b names 8080 "http", y/a names 81 "http".
Each case applies its policies, waits until both enforcers committed them,
and probes every pair of pods, on one node and across nodes.
"""

from __future__ import annotations

import json
import random
import sys

import pytest

from builders import cnp, policy as np, random_policy, rule
from enforcer.testbed.simulation import in_ns
from probes import assert_matrix
from rules.evaluate import tiered_verdict, verdict
from rules.load import state_from_objects
from rules.model import L4Protocol


CASES = {
    "no policies: everything reaches everything": ([], [(80, "TCP")]),
    "default deny ingress in x": ([np("x/deny", {"podSelector": {}, "policyTypes": ["Ingress"]})], [(80, "TCP"), (53, "UDP")]),
    "namespace AND pod selector in one peer": (
        [
            np(
                "x/and",
                {
                    "podSelector": {"matchLabels": {"app": "a"}},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {"matchLabels": {"team": "b"}},
                                    "podSelector": {"matchLabels": {"app": "b"}},
                                }
                            ]
                        }
                    ],
                },
            )
        ],
        [(80, "TCP")],
    ),
    "namespace OR pod selector as two peers": (
        [
            np(
                "x/or",
                {
                    "podSelector": {"matchLabels": {"app": "a"}},
                    "ingress": [
                        {
                            "from": [
                                {"namespaceSelector": {"matchLabels": {"team": "b"}}},
                                {"podSelector": {"matchLabels": {"app": "b"}}},
                            ]
                        }
                    ],
                },
            )
        ],
        [(80, "TCP")],
    ),
    "egress-only isolation": (
        [np("y/egress", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"podSelector": {}}]}]})],
        [(80, "TCP")],
    ),
    "named port resolves per destination pod": (
        [
            np("x/named", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
            np("y/named", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
        ],
        [(80, "TCP"), (8080, "TCP"), (81, "TCP")],
    ),
    "egress to a named port on the destination": (
        [np("z/egress-named", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "http"}]}]})],
        [(80, "TCP"), (8080, "TCP")],
    ),
    "endPort range": (
        [np("x/range", {"podSelector": {}, "ingress": [{"ports": [{"port": 79, "endPort": 80}]}]})],
        [(80, "TCP"), (81, "TCP")],
    ),
    "ipBlock with except over the pod CIDRs": (
        [
            np(
                "x/block",
                {
                    "podSelector": {},
                    "ingress": [
                        {
                            "from": [
                                {"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.0/24"]}},
                                {"ipBlock": {"cidr": "fd00:10:244::/48", "except": ["fd00:10:244:2::/64"]}},
                            ]
                        }
                    ],
                },
            )
        ],
        [(80, "TCP")],
    ),
    "UDP allowed, TCP on the same port denied": (
        [np("z/udp", {"podSelector": {}, "ingress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]})],
        [(53, "UDP"), (80, "TCP")],
    ),
    "SCTP port allowed": (
        [np("x/sctp", {"podSelector": {}, "ingress": [{"ports": [{"port": 9000, "protocol": "SCTP"}]}]})],
        [(9000, "SCTP"), (9001, "SCTP")],
    ),
    "deny all in every namespace, allow-all in y": (
        [np(f"{ns}/deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}) for ns in ("x", "y", "z")]
        + [np("y/allow-all", {"podSelector": {}, "ingress": [{}], "egress": [{}]})],
        [(80, "TCP")],
    ),
}


ALL_NAMESPACES = {"namespaces": {}}
TEAM_A, TEAM_B = ({"namespaces": {"matchLabels": {"team": t}}} for t in ("a", "b"))
NODE_2_PODS = {"networks": ["10.244.2.0/24", "fd00:10:244:2::/64"]}
TCP_80 = [{"tcp": {"destinationPort": {"number": 80}}}]

CLUSTER_CASES = {
    "an admin Deny overrides a NetworkPolicy that allows": (
        [
            np("x/allow-all", {"podSelector": {}, "ingress": [{}]}),
            cnp("no-team-b", "Admin", 10, TEAM_A, ingress=[rule("Deny", [TEAM_B], "deny-team-b")]),
        ],
        [(80, "TCP")],
    ),
    "an admin Accept overrides NetworkPolicy's isolation, on its port only": (
        [
            np("x/deny", {"podSelector": {}, "policyTypes": ["Ingress"]}),
            cnp("let-b-in", "Admin", 10, TEAM_A, ingress=[rule("Accept", [TEAM_B], protocols=TCP_80)]),
        ],
        [(80, "TCP"), (8080, "TCP")],
    ),
    "an admin Pass goes to NetworkPolicy, or to the baseline where none isolates": (
        [
            np(
                "x/from-team-b",
                {
                    "podSelector": {"matchLabels": {"app": "a"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}],
                },
            ),
            cnp("pass", "Admin", 5, ALL_NAMESPACES, ingress=[rule("Pass", [TEAM_B], "to-lower-tiers")]),
            cnp("deny-rest", "Admin", 6, ALL_NAMESPACES, ingress=[rule("Deny", [ALL_NAMESPACES])]),
            cnp("baseline-deny", "Baseline", 1, ALL_NAMESPACES, ingress=[rule("Deny", [ALL_NAMESPACES])]),
        ],
        [(80, "TCP")],
    ),
    "a baseline Deny applies only where no NetworkPolicy isolates": (
        [
            np("y/from-x", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]}),
            cnp("baseline", "Baseline", 1, ALL_NAMESPACES, ingress=[rule("Deny", [ALL_NAMESPACES])]),
        ],
        [(80, "TCP"), (53, "UDP")],
    ),
    "egress: an admin Deny to a network, and an Accept still meets the destination's ingress": (
        [
            np("z/deny", {"podSelector": {}, "policyTypes": ["Ingress"]}),
            cnp("x-not-to-node-2", "Admin", 1, TEAM_A, egress=[rule("Deny", [NODE_2_PODS], "node-2", field="to")]),
            cnp("y-out", "Admin", 2, TEAM_B, egress=[rule("Accept", [ALL_NAMESPACES], field="to")]),
        ],
        [(80, "TCP")],
    ),
    "equal priorities: the policy whose name sorts first decides": (
        [
            cnp("a-deny", "Admin", 7, ALL_NAMESPACES, ingress=[rule("Deny", [TEAM_B])]),
            cnp("b-accept", "Admin", 7, ALL_NAMESPACES, ingress=[rule("Accept", [TEAM_B]), rule("Deny", [TEAM_A])]),
        ],
        [(80, "TCP")],
    ),
    "port ranges and protocols": (
        [
            cnp(
                "ranges",
                "Baseline",
                3,
                ALL_NAMESPACES,
                ingress=[
                    rule(
                        "Accept", [ALL_NAMESPACES], protocols=[{"tcp": {"destinationPort": {"range": {"start": 80, "end": 81}}}}]
                    ),
                    rule("Deny", [ALL_NAMESPACES]),
                ],
            )
        ],
        [(80, "TCP"), (81, "TCP"), (8080, "TCP"), (53, "UDP")],
    ),
}


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(CASES) + list(CLUSTER_CASES))
def test_matrix_matches_the_evaluator(bed, name: str) -> None:
    """ClusterNetworkPolicy cases are held to the tiered evaluator (Admin, NetworkPolicy, Baseline)."""
    policies, probes = CASES.get(name) or CLUSTER_CASES[name]
    bed.apply_policies(*policies)
    bed.wait_converged()
    for port, protocol in probes:
        for family in (4, 6):
            assert_matrix(bed, port, protocol, family)


@pytest.mark.kernel
@pytest.mark.parametrize("seed", range(4))
def test_random_policies_match_the_evaluator(bed, seed: int) -> None:
    rng = random.Random(seed)
    bed.apply_policies(*(random_policy(rng, i) for i in range(rng.randint(1, 4))))
    bed.wait_converged()
    for port, protocol in ((80, "TCP"), (81, "TCP"), (53, "UDP")):
        assert_matrix(bed, port, protocol, 4)
    assert_matrix(bed, 80, "TCP", 6)


LIVE_EXPLAIN = """
import json, sys
from enforcer.kernel.nftables import NftablesKernel
from enforcer.audit.live import explain_live
from rules.model import L4Protocol
kernel = NftablesKernel()
for src, dst, port in json.loads(sys.argv[1]):
    print(json.dumps(explain_live(kernel, src, dst, port, L4Protocol.TCP)))
"""


@pytest.mark.kernel
@pytest.mark.parametrize("name", [n for n in CASES if "SCTP" not in n and "UDP" not in n])
def test_live_explain_names_the_kernel_rule_the_evaluator_expects(bed, name: str) -> None:
    """Flows between node-1's pods, traced through node-1's live rules, decide as the
    evaluator does, and the deciding kernel rule's comment is a rule the evaluator names."""
    bed.apply_policies(*CASES[name][0])
    bed.wait_converged()
    node = bed.nodes[0]
    state = state_from_objects(bed.objects)
    pods = list(node.pods.values())
    flows = [(s.ip(4), d.ip(4), port) for s in pods for d in pods if s is not d for port in (80, 8080)]
    out = in_ns(node.netns, sys.executable, "-c", LIVE_EXPLAIN, json.dumps(flows)).stdout.splitlines()
    for (src, dst, port), line in zip(flows, out, strict=True):
        live, v = json.loads(line), verdict(state, src, dst, port, L4Protocol.TCP)
        assert live["allowed"] == v.allowed, (src, dst, port, live, v.reason)
        if v.allowed and v.ingress and v.ingress.isolated_by:
            assert any(
                live["rule"]["comment"].startswith(f"{r} ")
                or live["rule"]["comment"].startswith(f"{r}.")
                or live["rule"]["comment"] == str(r)
                for r in v.ingress.allowed_by
            ), (live["rule"], v.deciding_rules)


@pytest.mark.kernel
@pytest.mark.parametrize("name", [n for n in CLUSTER_CASES if not n.startswith(("port ranges", "egress:"))])
def test_live_explain_names_the_cluster_policy_rule_that_decides(bed, name: str) -> None:
    """Where a ClusterNetworkPolicy rule decides a flow between node-1's pods, the
    live explanation's deciding kernel rule is that rule (policy, tier, priority,
    index, name and action in its comment), and the verdict is the tiered evaluator's."""
    bed.apply_policies(*CLUSTER_CASES[name][0])
    bed.wait_converged()
    node = bed.nodes[0]
    state = state_from_objects(bed.objects)
    pods = list(node.pods.values())
    flows = [(s.ip(4), d.ip(4), 80) for s in pods for d in pods if s is not d]
    out = in_ns(node.netns, sys.executable, "-c", LIVE_EXPLAIN, json.dumps(flows)).stdout.splitlines()
    decided_by_tiers = 0
    for (src, dst, port), line in zip(flows, out, strict=True):
        live = json.loads(line)
        allowed, egress, ingress = tiered_verdict(state, src, dst, port, L4Protocol.TCP)
        assert live["allowed"] == allowed, (src, dst, live, egress, ingress)
        # The kernel walks egress first: it decides a denied egress; otherwise the ingress does, if policed.
        deciding = egress if egress is not None and (not egress.allowed or ingress is None) else ingress
        if deciding is not None and deciding.tier in ("Admin", "Baseline"):
            policy = deciding.decided_by.split(" ", 1)[0]  # "cnp/NAME ingress[i] (name) Deny"
            action = deciding.decided_by.rsplit(" ", 1)[1]
            comment = live["rule"]["comment"]
            assert comment.startswith(f"{policy} {deciding.tier}/") and comment.endswith(f" {action}"), (comment, deciding)
            decided_by_tiers += 1
    assert decided_by_tiers, "no flow of this case is decided by a ClusterNetworkPolicy rule on node-1"
