"""For random states and flows, the rulesets rendered for the nodes on a
flow's path decide it as the reference evaluator does (traced through the
rendered tables, without a kernel)."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataplane import Dataplane
from rules.evaluate import verdict
from rules.model import ClusterState
from rules.translate import SetMemo, desired_ruleset
from strategies import NODE_NAMES, cluster_parts, states_and_flows


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states_and_flows())
def test_rendered_rules_decide_as_the_evaluator(case) -> None:
    state, flows = case
    dataplane = Dataplane(state)
    for src, dst, port, protocol in flows:
        v = verdict(state, src, dst, port, protocol)
        assert dataplane.allows(src, dst, port, protocol) == v.allowed, (
            f"{v.src} -> {v.dst} {protocol.value}/{port}: evaluator {v.allowed} ({v.reason})")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(cluster_parts(), min_size=2, max_size=4), st.randoms(use_true_random=False))
def test_a_render_with_the_previous_sets_memo_equals_a_fresh_render(parts, rng) -> None:
    """Successive states share some pod objects and change others, as the
    enforcer's cache does; reusing sets from the memo never changes the result."""
    memo = SetMemo()
    pods: list = []
    for namespaces, new_pods, policies, nodes in parts:
        kept = [p for p in pods if rng.random() < 0.7 and not any(n.key == p.key for n in new_pods)]
        pods = kept + [p for p in new_pods if rng.random() < 0.5]
        state = ClusterState.build(namespaces, pods, policies, nodes)
        for node in NODE_NAMES:
            assert desired_ruleset(state, node, memo=memo) == desired_ruleset(state, node)
