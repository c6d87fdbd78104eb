"""For random states and flows, the rulesets rendered for the nodes on a
flow's path decide it as the reference evaluator does (traced through the
rendered tables, without a kernel)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataplane import Dataplane
from rules.evaluate import tiered_verdict, verdict
from rules.model import ClusterState, LabelSelector
from rules.translate import RenderMemo, desired_ruleset
from strategies import NODE_NAMES, cluster_parts, cluster_policies, states_and_flows


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states_and_flows())
def test_rendered_rules_decide_as_the_evaluator(case) -> None:
    state, flows = case
    dataplane = Dataplane(state)
    for src, dst, port, protocol in flows:
        v = verdict(state, src, dst, port, protocol)
        assert dataplane.allows(src, dst, port, protocol) == v.allowed, (
            f"{v.src} -> {v.dst} {protocol.value}/{port}: evaluator {v.allowed} ({v.reason})"
        )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states_and_flows(tiered=True))
def test_rendered_tiers_decide_as_the_tiered_evaluator(case) -> None:
    """With ClusterNetworkPolicies of both tiers, every action and tied
    priorities: Admin, then NetworkPolicy, then Baseline, then allow."""
    state, flows = case
    dataplane = Dataplane(state)
    for src, dst, port, protocol in flows:
        allowed, egress, ingress = tiered_verdict(state, src, dst, port, protocol)
        assert dataplane.allows(src, dst, port, protocol) == allowed, (src, dst, port, protocol, egress, ingress)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(cluster_parts(), min_size=2, max_size=5), st.lists(cluster_policies()), st.randoms(use_true_random=False))
def test_a_render_with_the_previous_render_memo_equals_a_fresh_render(parts, tiers, rng) -> None:
    """Successive states share some pod objects and change others, as the
    enforcer's do (updated pod by pod, or rebuilt after a relist; namespaces,
    policies and cluster policies replaced); reusing sets and chains from the
    memo never changes the result, whichever node renders."""
    memo = RenderMemo()
    state = ClusterState.build(*parts[0])
    for namespaces, new_pods, policies, nodes in parts:
        removed = [p.key for p in state.pods if rng.random() < 0.3]
        changed = [p for p in new_pods if rng.random() < 0.6]
        if rng.random() < 0.2:  # a relist: the same objects, built afresh
            state = ClusterState.build(state.namespaces, state.pods, state.policies, state.nodes, state.cluster_policies)
        state = state.with_pods(changed, removed)
        if rng.random() < 0.5:
            state = state.with_objects(namespaces, policies)
        if tiers and rng.random() < 0.5:
            state = state.with_objects(cluster_policies=rng.choice(tiers))
        for node in rng.sample(NODE_NAMES, len(NODE_NAMES)):
            assert desired_ruleset(state, node, memo=memo) == desired_ruleset(state, node)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(cluster_parts(), min_size=2, max_size=4), st.randoms(use_true_random=False))
def test_a_state_updated_pod_by_pod_is_the_state_built_afresh(parts, rng) -> None:
    """``with_pods`` (the enforcer's path for watch events) gives the state, the
    indexes and the ruleset that a fresh build of the same objects gives."""
    namespaces, pods, policies, nodes = parts[0]
    state = ClusterState.build(namespaces, pods, policies, nodes)
    current = {p.key: p for p in pods}
    for _, new_pods, _, _ in parts[1:]:
        removed = [k for k in current if rng.random() < 0.3]
        changed = [p for p in new_pods if rng.random() < 0.7]
        for k in removed:
            del current[k]
        current.update({p.key: p for p in changed})
        before, before_fresh = state, ClusterState.build(namespaces, state.pods, policies, nodes)
        state = state.with_pods(changed, removed)
        fresh = ClusterState.build(namespaces, current.values(), policies, nodes)
        for updated, built in ((state, fresh), (before, before_fresh)):  # and the old state is untouched
            assert updated == built
            for ns in {p.namespace for p in built.pods} | {n.name for n in namespaces}:
                assert updated.pods_in(ns) == built.pods_in(ns)
                for p in built.pods_in(ns):
                    for label in p.labels:
                        selector = LabelSelector((label,))
                        assert updated.targets_selected(ns, selector) == built.targets_selected(ns, selector)
            for name in {c.name for p in built.pods for c in p.ports if c.name}:
                assert updated.targets_with_port_name(name) == built.targets_with_port_name(name)
        for node in NODE_NAMES:
            assert desired_ruleset(state, node) == desired_ruleset(fresh, node)
