"""The policy IR (``rules.ir``): which local pods are isolated, by which
policies, and what each rule allows, with the policy rule every match comes
from; and the nft renderer takes its decisions from the IR alone."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import HealthCheck, given, settings

from builders import policy, state
from rules.evaluate import Endpoint, direction_verdict
from rules.ir import (
    IRMemo,
    Isolation,
    Members,
    NamedPort,
    NodePolicy,
    PodPolicy,
    PolicyRules,
    PortRange,
    RuleMatch,
    RuleSource,
    SelectorScope,
    node_policy_ir,
)
from rules.model import Direction, IPBlock, LabelSelector, L4Protocol
from rules.nft import Ruleset, render_text
from rules.selection import policy_selects
from rules.translate import desired_ruleset, policy_table
from strategies import NODE_NAMES, cluster_states
from test_semantics import BASE
from test_translate import GOLDEN, case_policies

INGRESS, EGRESS = Direction.INGRESS, Direction.EGRESS
TCP, UDP = L4Protocol.TCP, L4Protocol.UDP
APP_A = {"podSelector": {"matchLabels": {"app": "a"}}}


def pod_policy(ir: NodePolicy, key: str) -> PodPolicy:
    return next(p for p in ir.pods if p.pod == key)


def isolating(pod: PodPolicy, direction: Direction) -> list[str]:
    """The keys of the policies isolating a pod, tier by tier."""
    return [rules.policy for tier in pod.tiers(direction) for rules in tier.policies]


def test_a_pod_no_policy_selects_has_no_tiers() -> None:
    ir = node_policy_ir(state(*BASE, policy("x/p", {**APP_A, "policyTypes": ["Ingress", "Egress"]})), "n1")
    assert pod_policy(ir, "x/b") == PodPolicy("x/b", tuple(map(ipaddress.ip_address, ("10.0.1.2", "fd00:1::2"))))
    assert isolating(pod_policy(ir, "x/a"), INGRESS) == isolating(pod_policy(ir, "x/a"), EGRESS) == ["x/p"]


@pytest.mark.parametrize(
    "spec, ingress, egress",
    [
        ({"policyTypes": ["Ingress"]}, True, False),
        ({"policyTypes": ["Egress"]}, False, True),
        ({"policyTypes": ["Ingress", "Egress"]}, True, True),
        ({}, True, False),  # defaulted: Ingress always,
        ({"egress": [{}]}, True, True),  # Egress when there are egress rules
    ],
    ids=["ingress", "egress", "both", "defaulted", "defaulted with egress rules"],
)
def test_policy_types_decide_the_directions(spec: dict, ingress: bool, egress: bool) -> None:
    ir = node_policy_ir(state(*BASE, policy("x/p", {**APP_A, **spec})), "n1")
    assert (bool(pod_policy(ir, "x/a").ingress), bool(pod_policy(ir, "x/a").egress)) == (ingress, egress)


@pytest.mark.parametrize(
    "node, pods",
    [
        ("n1", ["x/a", "x/b", "x/web", "y/a"]),  # not x/done: terminated
        ("n2", ["x/web2", "y/b", "z/c"]),  # not x/host: hostNetwork
        ("n3", []),
    ],
)
def test_only_the_nodes_own_policy_targets_are_in_its_ir(node: str, pods: list[str]) -> None:
    ir = node_policy_ir(state(*BASE, policy("x/deny", {"podSelector": {}})), node)
    assert ir.node == node and [p.pod for p in ir.pods] == pods


def test_policies_are_listed_in_namespace_and_name_order_whatever_the_input_order() -> None:
    objects = [*BASE, *(policy(f"x/{name}", {"podSelector": {}, "ingress": [{}]}) for name in ("b", "c", "a"))]
    random.Random(3).shuffle(objects)
    ir = node_policy_ir(state(*objects), "n1")
    assert isolating(pod_policy(ir, "x/a"), INGRESS) == ["x/a", "x/b", "x/c"]
    assert ir == node_policy_ir(state(*reversed(objects)), "n1")


def test_pods_isolated_by_the_same_policies_share_their_tiers() -> None:
    ir = node_policy_ir(state(*BASE, policy("x/deny", {"podSelector": {}})), "n1")
    assert pod_policy(ir, "x/a").ingress is pod_policy(ir, "x/b").ingress is pod_policy(ir, "x/web").ingress
    assert pod_policy(ir, "y/a").ingress == ()


B_HERE = SelectorScope("x", None, LabelSelector((("app", "b"),)))
TEAM_B = LabelSelector((("team", "b"),))
BLOCK = IPBlock(ipaddress.ip_network("203.0.113.0/24"), (ipaddress.ip_network("203.0.113.128/25"),))


def source(peer: int | None = None, named_port: str | None = None, index: int = 0) -> RuleSource:
    return RuleSource("x/p", INGRESS, index, peer, named_port)


@pytest.mark.parametrize(
    "rule, matches",
    [
        pytest.param({}, [RuleMatch(None, None, source())], id="no from and no ports: any peer, any port"),
        pytest.param(
            {"from": [], "ports": [{"port": 80}]},
            [RuleMatch(None, (PortRange(TCP, 80, 80),), source())],
            id="an empty from is any peer",
        ),
        pytest.param(
            {"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]},
            [RuleMatch(B_HERE, None, source(0))],
            id="a podSelector alone is scoped to the policy's namespace",
        ),
        pytest.param(
            {"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]},
            [RuleMatch(SelectorScope(None, TEAM_B, None), None, source(0))],
            id="a namespaceSelector scopes to the namespaces it matches",
        ),
        pytest.param(
            {"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {}}]},
            [RuleMatch(SelectorScope(None, TEAM_B, LabelSelector()), None, source(0))],
            id="both selectors in one peer are one scope",
        ),
        pytest.param(
            {"from": [{"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}}]},
            [RuleMatch(BLOCK, None, source(0))],
            id="an ipBlock is its block",
        ),
        pytest.param(
            {
                "from": [
                    {"podSelector": {"matchLabels": {"app": "b"}}},
                    {"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}},
                ]
            },
            [RuleMatch(B_HERE, None, source(0)), RuleMatch(BLOCK, None, source(1))],
            id="each peer is a match of its own",
        ),
        pytest.param(
            {"ports": [{"port": "dns", "protocol": "UDP"}, {"port": 80}, {"port": "http"}, {"port": 53, "protocol": "UDP"}]},
            [
                RuleMatch(None, (PortRange(TCP, 80, 80), PortRange(UDP, 53, 53)), source()),
                RuleMatch(None, NamedPort(TCP, "http"), source(named_port="http")),
                RuleMatch(None, NamedPort(UDP, "dns"), source(named_port="dns")),
            ],
            id="numeric ports match together, each named port on its own",
        ),
        pytest.param(
            {"ports": [{"protocol": "UDP"}, {"port": 8000, "endPort": 8010}]},
            [RuleMatch(None, (PortRange(UDP, 0, 65535), PortRange(TCP, 8000, 8010)), source())],
            id="a port without a number is every port, endPort makes a range",
        ),
        pytest.param(
            {
                "from": [
                    {"podSelector": {"matchLabels": {"app": "b"}}},
                    {"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}},
                ],
                "ports": [{"port": 80}, {"port": "http"}],
            },
            [
                RuleMatch(B_HERE, (PortRange(TCP, 80, 80),), source(0)),
                RuleMatch(B_HERE, NamedPort(TCP, "http"), source(0, "http")),
                RuleMatch(BLOCK, (PortRange(TCP, 80, 80),), source(1)),
                RuleMatch(BLOCK, NamedPort(TCP, "http"), source(1, "http")),
            ],
            id="every peer with every port group",
        ),
    ],
)
def test_each_rule_becomes_matches_that_name_their_source(rule: dict, matches: list[RuleMatch]) -> None:
    ir = node_policy_ir(state(*BASE, policy("x/p", {**APP_A, "ingress": [rule]})), "n1")
    (tier,) = pod_policy(ir, "x/a").ingress
    assert tier == Isolation(INGRESS, (PolicyRules("x/p", INGRESS, tuple(matches)),))


def test_sources_count_rules_per_direction() -> None:
    spec = {
        **APP_A,
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"ports": [{"port": 80}]}, {}],
        "egress": [{"to": [{"namespaceSelector": {}}]}],
    }
    pod = pod_policy(node_policy_ir(state(*BASE, policy("x/p", spec)), "n1"), "x/a")
    (ingress,), (egress,) = pod.ingress, pod.egress
    assert [m.source for m in ingress.policies[0].matches] == [source(index=0), source(index=1)]
    assert [m.source for m in egress.policies[0].matches] == [RuleSource("x/p", EGRESS, 0, 0)]


def test_a_memo_gives_an_unchanged_policy_the_same_rules_and_a_changed_one_new_rules() -> None:
    memo = IRMemo()
    before = state(*BASE, policy("x/p", {**APP_A, "ingress": [{}]}), policy("x/q", {**APP_A, "ingress": [{}]}))
    after = state(
        *BASE, policy("x/p", {**APP_A, "ingress": [{}]}), policy("x/q", {**APP_A, "ingress": [{"ports": [{"port": 80}]}]})
    )
    (p1, q1), (p2, q2) = (
        [r for t in pod_policy(node_policy_ir(s, "n1", memo), "x/a").ingress for r in t.policies] for s in (before, after)
    )
    assert p2 is p1 and q2 != q1
    assert node_policy_ir(after, "n1", memo) == node_policy_ir(after, "n1")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_states)
def test_the_ir_isolates_as_the_reference_evaluator_and_keeps_every_rule(s) -> None:
    """For every local pod and direction: the isolating policies are the
    evaluator's, and each of their rules is the source of some match."""
    for node in NODE_NAMES:
        for pod_ir in node_policy_ir(s, node).pods:
            pod = s.pod(pod_ir.pod)
            for direction in Direction:
                here = Endpoint(pod.ips[0], pod)
                assert isolating(pod_ir, direction) == list(direction_verdict(s, direction, pod, here, here, 80, TCP).isolated_by)
                sources = {
                    (m.source.policy, m.source.direction, m.source.index)
                    for tier in pod_ir.tiers(direction)
                    for rules in tier.policies
                    for m in rules.matches
                }
                assert sources == {
                    (p.key, direction, i)
                    for p in s.policies
                    if direction in p.policy_types and policy_selects(p, pod)
                    for i in range(len(p.rules(direction)))
                }


def test_rendering_the_ir_of_the_golden_state_gives_the_golden_ruleset() -> None:
    """The state of ``test_translate.test_golden_ruleset``."""
    s = state(*BASE, *(p for p in case_policies() if p["metadata"]["name"] in ("and", "named", "block", "range", "defaulted")))
    table = policy_table(node_policy_ir(s, "n1"), Members(s, "n1"))
    assert render_text(Ruleset((table,))) == (GOLDEN / "n1.nft").read_text()


def test_the_renderer_takes_its_decisions_from_the_ir_alone() -> None:
    """An IR written by hand over a state without policies renders as the
    policy it describes does."""
    spec = {
        **APP_A,
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}], "ports": [{"port": 80}, {"port": "http"}]}],
    }
    with_policy, without = state(*BASE, policy("x/p", spec)), state(*BASE)
    rules = PolicyRules(
        "x/p",
        INGRESS,
        (RuleMatch(B_HERE, (PortRange(TCP, 80, 80),), source(0)), RuleMatch(B_HERE, NamedPort(TCP, "http"), source(0, "http"))),
    )
    by_hand = NodePolicy("n1", (PodPolicy("x/a", without.pod("x/a").ips, ingress=(Isolation(INGRESS, (rules,)),)),))
    assert policy_table(by_hand, Members(without, "n1")) == desired_ruleset(with_policy, "n1").tables[0]
