"""``verify``'s drift lines: every difference, in nft syntax, its sign spelled out."""

from __future__ import annotations

from dataclasses import replace

from builders import namespace, pod, policy, state
from rules.drift import table_drift
from rules.model import PodInterface
from rules.naming import POD_PORTS_SET, dispatch_map_name
from rules.model import Direction
from rules.nft import Str, Verdict
from rules.translate import desired_ruleset
import ipaddress

STATE = state(namespace("x"), pod("x/a", "10.0.1.1", labels={"app": "a"}), policy("x/deny", {"podSelector": {}}))
A = PodInterface("x", "a", "c" * 64, "veth0a", "02:00:00:00:00:01", (ipaddress.ip_address("10.0.1.1"),))


def tables():
    return desired_ruleset(STATE, "n1", [A]).tables


def with_set(table, name, elements):
    return replace(table, sets=tuple(replace(s, elements=elements) if s.name == name else s for s in table.sets))


def test_an_extra_port_and_a_changed_dispatch_verdict_read_as_nft_with_their_signs() -> None:
    inet, bridge = tables()
    live_bridge = with_set(bridge, POD_PORTS_SET, bridge.set(POD_PORTS_SET).elements + (Str("veth9z"),))
    dispatch = dispatch_map_name(Direction.INGRESS, 4)
    live_inet = with_set(inet, dispatch, tuple((k, Verdict("accept")) for k, _ in inet.set(dispatch).elements))
    lines = "\n".join(table_drift(bridge, live_bridge) + table_drift(inet, live_inet))
    assert '+ unwanted, present: "veth9z"' in lines, lines
    assert "- wanted, missing: 10.0.1.1 : goto isolate-ingress-" in lines, lines
    assert "+ unwanted, present: 10.0.1.1 : accept" in lines, lines
    assert "Str(" not in lines and "Verdict(" not in lines, lines


def test_a_deleted_rule_is_shown_as_the_rule_nft_would_list() -> None:
    inet, _ = tables()
    chain = next(c for c in inet.chains if c.name.startswith("isolate-ingress-"))
    live = replace(inet, chains=tuple(replace(c, rules=c.rules[:-1]) if c is chain else c for c in inet.chains))
    lines = "\n".join(table_drift(inet, live))
    assert f"changed: table inet nftpolicy chain {chain.name}" in lines
    assert '- wanted, missing: counter drop comment "ingress denied: no rule of the policies above allows it"' in lines, lines


def test_no_difference_no_line() -> None:
    inet, bridge = tables()
    assert table_drift(inet, inet) == [] and table_drift(bridge, bridge) == []
