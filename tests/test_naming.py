"""The names and comments the translator writes are the ones the readers parse
(audit, metrics, the deny log): every object of a rendered ruleset is
classified back by ``rules.naming``, and each comment names its policy."""

from __future__ import annotations

import pytest

from builders import namespace, pod, policy, state
from rules import naming
from rules.audit import dump
from rules.model import Direction, L4Protocol
from rules.nft import Verdict
from rules.translate import desired_ruleset

STATE = state(
    namespace("x"),
    namespace("y", team="b"),
    pod("x/a", "10.0.1.1", labels={"app": "a"}, ports=[("http", 8080)]),
    pod("y/b", "10.0.1.2", labels={"app": "b"}, ports=[("http", 8081)]),
    policy(
        "x/web",
        {
            "podSelector": {"matchLabels": {"app": "a"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}], "ports": [{"port": "http"}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": "http"}]}],
        },
    ),
)


def test_every_chain_of_a_rendered_table_is_classified_and_names_its_policies() -> None:
    table = desired_ruleset(STATE, "n1").tables[0]
    assert (table.family, table.name) == naming.POLICY_TABLE
    kinds = {c.name: (naming.is_policy_chain(c.name), naming.is_isolate_chain(c.name)) for c in table.chains}
    assert kinds == {
        "forward": (False, False),
        "ingress-dispatch": (False, False),
        naming.policy_chain_name("x/web", Direction.INGRESS): (True, False),
        naming.policy_chain_name("x/web", Direction.EGRESS): (True, False),
        naming.isolate_chain_name(Direction.INGRESS, ("x/web",)): (False, True),
        naming.isolate_chain_name(Direction.EGRESS, ("x/web",)): (False, True),
    }
    for chain in table.chains:
        if naming.is_isolate_chain(chain.name):
            direction = naming.isolate_chain_direction(chain.name)
            jumps = [r.comment for r in chain.rules if any(isinstance(s, Verdict) and s.kind == "jump" for s in r.statements)]
            assert [naming.policy_of(c) for c in jumps] == ["x/web"]
            assert all(naming.is_direction_comment(c, direction) for c in jumps)
        if naming.is_policy_chain(chain.name):
            assert naming.policy_of(chain.comment) == "x/web"
            assert all(r.comment.startswith("x/web ") for r in chain.rules)


@pytest.mark.parametrize(
    "name, named_port",
    [
        (naming.named_port_set_name(L4Protocol.TCP, "http", 4, Direction.INGRESS), True),
        (naming.named_port_set_name(L4Protocol.UDP, "dns", 6, Direction.EGRESS), True),
        (naming.peer_set_name("x: app=a", 4), False),
        ("cidr-abcdefgh-v4", False),
    ],
)
def test_named_port_sets_are_told_from_peer_sets(name, named_port) -> None:
    assert naming.is_named_port_set(name) is named_port


def test_the_audit_lists_peers_not_the_named_port_sets_of_ingress_rules() -> None:
    """An ingress rule with a named port matches a ``local-port-*`` set: it names
    ports of local pods, not the peers the rule admits."""
    table = desired_ruleset(STATE, "n1").tables[0]
    report = dump(table, "n1", {"x/a": ("10.0.1.1", None)}, {"10.0.1.1": "x/a", "10.0.1.2": "y/b"})
    ingress = report["pods"][0]["ingress"]
    assert ingress["policies"] == ["x/web"]
    sets = [p["set"] for r in ingress["rules"] for p in r["peers"]]
    assert sets and not any(naming.is_named_port_set(s) for s in sets), sets


@pytest.mark.parametrize("direction", list(Direction))
def test_a_deny_log_prefix_parses_back_to_its_direction_and_chain(direction) -> None:
    chain = naming.isolate_chain_name(direction, ("x/web", "x/other"))
    assert naming.parse_deny_log_prefix(naming.deny_log_prefix(direction, chain)) == (direction.field, chain)


@pytest.mark.parametrize("prefix", ["", "nftpolicy ingress", "kube-proxy ingress isolate-x ", "nftpolicy a b c"])
def test_a_prefix_that_is_not_ours_is_not_parsed(prefix) -> None:
    assert naming.parse_deny_log_prefix(prefix) is None


def test_long_policy_names_are_truncated_but_stay_distinct() -> None:
    a, b = ("x/" + "p" * 300 + suffix for suffix in ("1", "2"))
    names = {naming.policy_chain_name(k, Direction.INGRESS) for k in (a, b)}
    assert len(names) == 2 and all(len(n) <= naming.NAME_MAX for n in names)
