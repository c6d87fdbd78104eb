"""For random states and flows, the rulesets rendered for the nodes on a
flow's path decide it as the reference evaluator does (traced through the
rendered tables, without a kernel)."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from dataplane import Dataplane
from rules.evaluate import verdict
from strategies import states_and_flows


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states_and_flows())
def test_rendered_rules_decide_as_the_evaluator(case) -> None:
    state, flows = case
    dataplane = Dataplane(state)
    for src, dst, port, protocol in flows:
        v = verdict(state, src, dst, port, protocol)
        assert dataplane.allows(src, dst, port, protocol) == v.allowed, (
            f"{v.src} -> {v.dst} {protocol.value}/{port}: evaluator {v.allowed} ({v.reason})")
