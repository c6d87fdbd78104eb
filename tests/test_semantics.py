"""NetworkPolicy semantics, one behaviour per case, checked on the reference
evaluator. Each case is a small cluster plus flows and their expected verdicts.

The base cluster (see ``BASE``): namespaces x (team=a), y (team=b), z;
node n1 at 192.168.0.1, node n2 at 192.168.0.2; pods listed below.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from builders import namespace, pod, policy, state
from rules.evaluate import verdict
from rules.model import L4Protocol

BASE = [
    namespace("x", team="a"),
    namespace("y", team="b"),
    namespace("z"),
    {"kind": "Node", "metadata": {"name": "n1"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"}]}},
    {"kind": "Node", "metadata": {"name": "n2"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.2"}]}},
    pod("x/a", ["10.0.1.1", "fd00:1::1"], labels={"app": "a"}),
    pod("x/b", ["10.0.1.2", "fd00:1::2"], labels={"app": "b"}),
    pod("y/a", "10.0.1.3", labels={"app": "a"}),
    pod("y/b", "10.0.2.4", node="n2", labels={"app": "b"}),
    pod("z/c", "10.0.2.5", node="n2", labels={"app": "c"}),
    pod("x/web", "10.0.1.6", labels={"app": "web"}, ports=[("http", 80), ("dns", 53, "UDP")]),
    pod("x/web2", "10.0.2.7", node="n2", labels={"app": "web"}, ports=[("http", 8080)]),
    pod("x/host", "192.168.0.2", node="n2", labels={"app": "b"}, hostNetwork=True),
    pod("x/done", "10.0.1.9", labels={"app": "b"}, phase="Succeeded"),
]

OUTSIDE = "203.0.113.5"


@dataclass(frozen=True)
class Case:
    name: str
    policies: list
    flows: list  # (src, dst, "PORT/PROTO", allowed)


DENY_INGRESS_X = policy("x/deny", {"podSelector": {}, "policyTypes": ["Ingress"]})

CASES = [
    Case(
        "without policies every flow is allowed",
        [],
        [("x/a", "y/a", "80/TCP", True), (OUTSIDE, "z/c", "1/UDP", True), ("y/b", OUTSIDE, "443/TCP", True)],
    ),
    Case(
        "default deny ingress isolates every pod of its namespace for ingress only",
        [DENY_INGRESS_X],
        [
            ("y/a", "x/a", "80/TCP", False),
            ("x/b", "x/a", "80/TCP", False),
            ("x/a", "y/a", "80/TCP", True),
            (OUTSIDE, "x/web", "80/TCP", False),
            ("y/a", "y/b", "80/TCP", True),
        ],
    ),
    Case(
        "namespaceSelector and podSelector in one peer must both match (AND)",
        [
            policy(
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
        [("y/b", "x/a", "80/TCP", True), ("y/a", "x/a", "80/TCP", False), ("x/b", "x/a", "80/TCP", False)],
    ),
    Case(
        "namespaceSelector and podSelector as two peers either may match (OR)",
        [
            policy(
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
        [
            ("y/a", "x/a", "80/TCP", True),
            ("y/b", "x/a", "80/TCP", True),
            ("x/b", "x/a", "80/TCP", True),
            ("z/c", "x/a", "80/TCP", False),
            ("x/web", "x/a", "80/TCP", False),
        ],
    ),
    Case(
        "podSelector {} as a peer means every pod of the policy's namespace",
        [policy("x/same-ns", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})],
        [
            ("x/b", "x/a", "80/TCP", True),
            ("x/web2", "x/a", "80/TCP", True),
            ("y/a", "x/a", "80/TCP", False),
            (OUTSIDE, "x/a", "80/TCP", False),
        ],
    ),
    Case(
        "namespaceSelector {} without podSelector means every pod of every namespace, not outside IPs",
        [policy("x/all-pods", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]})],
        [("y/a", "x/a", "80/TCP", True), ("z/c", "x/a", "80/TCP", True), (OUTSIDE, "x/a", "80/TCP", False)],
    ),
    Case(
        "spec.podSelector selects only matching pods of the policy's own namespace",
        [policy("x/only-a", {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"]})],
        [("z/c", "x/a", "80/TCP", False), ("z/c", "x/b", "80/TCP", True), ("z/c", "y/a", "80/TCP", True)],
    ),
    Case(
        "matchExpressions: In, NotIn, Exists, DoesNotExist",
        [
            policy(
                "x/expr",
                {
                    "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "web"]}]},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {
                                        "matchExpressions": [
                                            {"key": "team", "operator": "Exists"},
                                            {"key": "team", "operator": "NotIn", "values": ["a"]},
                                        ]
                                    },
                                    "podSelector": {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
                                }
                            ]
                        }
                    ],
                },
            )
        ],
        [
            ("y/a", "x/a", "80/TCP", True),
            ("x/b", "x/a", "80/TCP", False),
            ("z/c", "x/web", "80/TCP", False),
            ("z/c", "x/b", "80/TCP", True),
        ],
    ),
    Case(
        "ingress: [{}] allows everything, from anywhere, on every port",
        [policy("x/allow-all", {"podSelector": {}, "ingress": [{}]})],
        [("y/a", "x/a", "80/TCP", True), (OUTSIDE, "x/a", "9/UDP", True)],
    ),
    Case(
        "ingress: [] with the Ingress type allows nothing",
        [policy("x/none", {"podSelector": {}, "ingress": [], "policyTypes": ["Ingress"]})],
        [("y/a", "x/a", "80/TCP", False), ("x/b", "x/a", "80/TCP", False)],
    ),
    Case(
        "a rule with ports but no from allows those ports from everyone",
        [policy("x/port-only", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]})],
        [(OUTSIDE, "x/a", "80/TCP", True), (OUTSIDE, "x/a", "81/TCP", False), ("y/a", "x/a", "80/UDP", False)],
    ),
    Case(
        "ipBlock allows its cidr but not the except ranges",
        [
            policy(
                "x/block",
                {
                    "podSelector": {},
                    "ingress": [{"from": [{"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}}]}],
                },
            )
        ],
        [
            ("203.0.113.5", "x/a", "80/TCP", True),
            ("203.0.113.200", "x/a", "80/TCP", False),
            ("198.51.100.1", "x/a", "80/TCP", False),
        ],
    ),
    Case(
        "ipBlock matches addresses, pods' addresses included",
        [
            policy(
                "x/pod-cidr",
                {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.2.0/24"}}]}]},
            )
        ],
        [("y/b", "x/a", "80/TCP", True), ("y/a", "x/a", "80/TCP", False)],
    ),
    Case(
        "an IPv6 ipBlock matches IPv6 flows only",
        [policy("x/v6", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "2001:db8::/32"}}]}]})],
        [("2001:db8::1", "x/a", "80/TCP", True), ("203.0.113.1", "x/a", "80/TCP", False)],
    ),
    Case(
        "a named port resolves on each destination pod to its own number",
        [policy("x/named", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "http"}]}]})],
        [
            ("z/c", "x/web", "80/TCP", True),
            ("z/c", "x/web", "8080/TCP", False),
            ("z/c", "x/web2", "8080/TCP", True),
            ("z/c", "x/web2", "80/TCP", False),
        ],
    ),
    Case(
        "a named port resolves only with the same protocol",
        [
            policy(
                "x/named-udp",
                {
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"ports": [{"port": "dns", "protocol": "UDP"}, {"port": "http", "protocol": "UDP"}]}],
                },
            )
        ],
        [("z/c", "x/web", "53/UDP", True), ("z/c", "x/web", "53/TCP", False), ("z/c", "x/web", "80/UDP", False)],
    ),
    Case(
        "an egress named port resolves on the destination pod",
        [
            policy(
                "y/egress-named",
                {
                    "podSelector": {"matchLabels": {"app": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": [{"port": "http"}]}],
                },
            )
        ],
        [
            ("y/a", "x/web", "80/TCP", True),
            ("y/a", "x/web2", "8080/TCP", True),
            ("y/a", "x/web2", "80/TCP", False),
            ("y/a", OUTSIDE, "80/TCP", False),
        ],
    ),
    Case(
        "endPort allows the inclusive range from port to endPort",
        [policy("x/range", {"podSelector": {}, "ingress": [{"ports": [{"port": 8000, "endPort": 8010}]}]})],
        [
            ("z/c", "x/a", "8000/TCP", True),
            ("z/c", "x/a", "8010/TCP", True),
            ("z/c", "x/a", "8011/TCP", False),
            ("z/c", "x/a", "7999/TCP", False),
        ],
    ),
    Case(
        "a port's protocol defaults to TCP; a protocol without port allows all its ports",
        [policy("x/proto", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}, {"protocol": "UDP"}]}]})],
        [
            ("z/c", "x/a", "80/TCP", True),
            ("z/c", "x/a", "80/UDP", True),
            ("z/c", "x/a", "5353/UDP", True),
            ("z/c", "x/a", "81/TCP", False),
        ],
    ),
    Case(
        "SCTP ports are matched as SCTP only",
        [policy("x/sctp", {"podSelector": {}, "ingress": [{"ports": [{"port": 9000, "protocol": "SCTP"}]}]})],
        [("z/c", "x/a", "9000/SCTP", True), ("z/c", "x/a", "9000/TCP", False)],
    ),
    Case(
        "policyTypes omitted: Ingress always, Egress only when the spec has egress rules",
        [
            policy(
                "x/defaulted",
                {
                    "podSelector": {"matchLabels": {"app": "a"}},
                    "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}]}],
                },
            )
        ],
        [("x/a", "x/b", "80/TCP", True), ("x/a", "y/a", "80/TCP", False), ("x/b", "x/a", "80/TCP", False)],
    ),
    Case(
        "policyTypes omitted with only ingress rules leaves egress open",
        [policy("x/ingress-only", {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{}]})],
        [("x/a", OUTSIDE, "443/TCP", True)],
    ),
    Case(
        "policyTypes [Egress] ignores ingress rules and leaves ingress open",
        [
            policy(
                "x/egress-only",
                {
                    "podSelector": {"matchLabels": {"app": "a"}},
                    "policyTypes": ["Egress"],
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "none"}}}]}],
                    "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}]}],
                },
            )
        ],
        [("x/a", "x/b", "80/TCP", True), ("x/a", "y/a", "80/TCP", False), ("y/a", "x/a", "80/TCP", True)],
    ),
    Case(
        "egress and ingress are both needed: the source's egress and the destination's ingress",
        [
            policy("x/eg", {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"], "egress": [{}]}),
            policy("x/deny", {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"]}),
        ],
        [("x/a", "x/b", "80/TCP", False), ("x/a", "y/a", "80/TCP", True)],
    ),
    Case(
        "policies add up: any rule of any selecting policy allows",
        [
            policy("x/p80", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
            policy(
                "x/from-b",
                {
                    "podSelector": {"matchLabels": {"app": "a"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}],
                },
            ),
        ],
        [
            ("z/c", "x/a", "80/TCP", True),
            ("x/b", "x/a", "22/TCP", True),
            ("z/c", "x/a", "22/TCP", False),
            ("x/b", "x/web", "22/TCP", False),
        ],
    ),
    Case(
        "hostNetwork pods are never selected: not isolated, and not a podSelector peer",
        [
            policy("x/deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
            policy(
                "y/from-b",
                {
                    "podSelector": {},
                    "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "b"}}}]}],
                },
            ),
        ],
        [
            ("x/host", "y/a", "80/TCP", False),
            ("x/b", "y/a", "80/TCP", False),
            ("y/b", "y/a", "80/TCP", True),
            ("z/c", "192.168.0.2", "22/TCP", True),
        ],
    ),
    Case(
        "a terminated pod's address is no longer that pod",
        [
            policy(
                "y/from-b",
                {
                    "podSelector": {},
                    "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "b"}}}]}],
                },
            )
        ],
        [("10.0.1.9", "y/a", "80/TCP", False), ("x/b", "y/a", "80/TCP", True)],
    ),
    Case(
        "dual-stack pods are matched on both addresses",
        [
            policy(
                "x/from-b",
                {
                    "podSelector": {"matchLabels": {"app": "a"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}],
                },
            )
        ],
        [
            ("fd00:1::2", "fd00:1::1", "80/TCP", True),
            ("10.0.1.2", "10.0.1.1", "80/TCP", True),
            ("2001:db8::9", "fd00:1::1", "80/TCP", False),
        ],
    ),
    Case(
        "traffic between a pod and its own node is always allowed, another node's is not",
        [policy("x/deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})],
        [
            ("192.168.0.1", "x/a", "10250/TCP", True),
            ("x/a", "192.168.0.1", "53/UDP", True),
            ("192.168.0.2", "x/a", "10250/TCP", False),
            ("x/a", "192.168.0.2", "53/UDP", False),
        ],
    ),
]


def _endpoint(s, text: str):
    return s.pod(text) if "/" in text and ":" not in text and s.pod(text) else text


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_semantics(case: Case) -> None:
    s = state(*BASE, *case.policies)
    observed = []
    for src, dst, port, allowed in case.flows:
        number, proto = port.split("/")
        v = verdict(s, _endpoint(s, src), _endpoint(s, dst), int(number), L4Protocol(proto))
        observed.append((src, dst, port, v.allowed))
    assert observed == [tuple(f) for f in case.flows]


def test_allowed_verdict_names_the_rules_that_allowed_it() -> None:
    s = state(*BASE, policy("x/p80", {"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}, {"ports": [{"port": 80}]}]}))
    v = verdict(s, s.pod("z/c"), s.pod("x/a"), 80, L4Protocol.TCP)
    assert [str(r) for r in v.deciding_rules] == ["x/p80 ingress[1]"]


def test_denied_verdict_names_the_isolating_policies() -> None:
    s = state(*BASE, DENY_INGRESS_X)
    v = verdict(s, s.pod("y/a"), s.pod("x/a"), 80, L4Protocol.TCP)
    assert not v.allowed and v.ingress.isolated_by == ("x/deny",) and v.egress.isolated_by == ()
    assert "x/deny" in v.reason
