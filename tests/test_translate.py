"""The translator: rendered rulesets enforce exactly the reference semantics,
are deterministic, stay small, explain themselves, and load into the kernel."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from builders import cnp, namespace, pod, policy, state
from builders import rule as cnp_rule
from dataplane import Dataplane
from netns import netns, nft
from rules.evaluate import verdict
from rules.load import state_from_objects
from rules.model import L4Protocol
from rules.nft import render_json, render_text
from rules.translate import desired_ruleset
from test_semantics import BASE, CASES, Case, _endpoint

GOLDEN = Path(__file__).parent / "golden"


def case_policies() -> list[dict]:
    """Every policy of the semantics cases, once per name (the first wins)."""
    unique: dict[tuple[str, str], dict] = {}
    for c in CASES:
        for p in c.policies:
            unique.setdefault((p["metadata"]["namespace"], p["metadata"]["name"]), p)
    return list(unique.values())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_rendered_rulesets_agree_with_the_evaluator(case: Case) -> None:
    s = state(*BASE, *case.policies)
    dataplane = Dataplane(s)
    for src, dst, port, _ in case.flows:
        number, proto = port.split("/")
        a, b = _endpoint(s, src), _endpoint(s, dst)
        expected = verdict(s, a, b, int(number), L4Protocol(proto)).allowed
        assert dataplane.allows(a, b, int(number), L4Protocol(proto)) == expected, (src, dst, port)


def test_golden_ruleset() -> None:
    """A readable reference rendering; regenerate with UPDATE_GOLDEN=1 and review the diff."""
    s = state(*BASE, *(p for p in case_policies() if p["metadata"]["name"] in ("and", "named", "block", "range", "defaulted")))
    text = render_text(desired_ruleset(s, "n1"))
    golden = GOLDEN / "n1.nft"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_rendering_is_deterministic_whatever_the_input_order() -> None:
    objects = BASE + case_policies()
    first = render_text(desired_ruleset(state_from_objects(objects), "n1"))
    shuffled = objects[:]
    random.Random(7).shuffle(shuffled)
    assert render_text(desired_ruleset(state_from_objects(shuffled), "n1")) == first
    assert json.dumps(render_json(desired_ruleset(state_from_objects(shuffled), "n1"))) == json.dumps(
        render_json(desired_ruleset(state_from_objects(objects), "n1"))
    )


def test_every_chain_and_rule_says_where_it_comes_from() -> None:
    s = state(*BASE, *case_policies())
    table = desired_ruleset(s, "n1").tables[0]
    for chain in table.chains:
        assert chain.comment, chain.name
        for rule in chain.rules:
            assert rule.comment, (chain.name, rule.text())
        if chain.name.startswith("policy-"):
            key = chain.name.split("-", 3)[3]
            assert chain.comment.startswith(key)
            assert all(rule.comment.startswith(f"{key} ") for rule in chain.rules)


def _scaled_state(pods: int, policies: int, local: int = 20):
    """``pods`` pods in 10 namespaces, ``local`` of them on node n1; each namespace has
    a default deny, and ``policies`` allow policies by namespace and pod labels."""
    objects: list = [namespace(f"ns{i}", team=f"t{i % 3}") for i in range(10)]
    for i in range(pods):
        objects.append(
            pod(
                f"ns{i % 10}/p{i}",
                f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                node="n1" if i < local else f"n{2 + i % 50}",
                labels={"app": f"app{i % 25}"},
                ports=[("http", 8000 + i % 7)],
            )
        )
    for i in range(10):
        objects.append(policy(f"ns{i}/default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
    for i in range(policies - 10):
        objects.append(
            policy(
                f"ns{i % 10}/allow{i}",
                {
                    "podSelector": {"matchLabels": {"app": f"app{i % 25}"}},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {"matchLabels": {"team": f"t{i % 3}"}},
                                    "podSelector": {"matchLabels": {"app": f"app{(i + 1) % 25}"}},
                                }
                            ],
                            "ports": [{"port": "http"}, {"port": 443}],
                        }
                    ],
                    "egress": [{"to": [{"podSelector": {"matchLabels": {"app": f"app{(i + 2) % 25}"}}}]}],
                },
            )
        )
    return state_from_objects(objects)


def test_pods_selected_by_the_same_policies_share_chains() -> None:
    objects = [namespace("x")] + [pod(f"x/p{i}", f"10.0.1.{i + 1}", labels={"app": "web"}) for i in range(30)]
    objects.append(policy("x/web", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": 80}]}]}))
    table = desired_ruleset(state_from_objects(objects), "n1").tables[0]
    isolating = [c.name for c in table.chains if c.name.startswith("isolate-")]
    assert isolating == ["isolate-ingress-" + c.name[16:] for c in table.chains if c.name.startswith("isolate-ingress-")]
    assert sum(c.name.startswith("isolate-") for c in table.chains) == 1
    assert len(table.set("ingress-pods-v4").elements) == 30


def test_chains_and_rules_do_not_grow_with_remote_pods() -> None:
    small = desired_ruleset(_scaled_state(pods=1000, policies=100), "n1").object_count()
    large = desired_ruleset(_scaled_state(pods=4000, policies=100), "n1").object_count()
    assert (small["chains"], small["rules"], small["sets"], small["maps"]) == (
        large["chains"],
        large["rules"],
        large["sets"],
        large["maps"],
    )
    assert large["elements"] > small["elements"]


def test_set_elements_grow_linearly_in_pods() -> None:
    counts = [desired_ruleset(_scaled_state(pods=n, policies=100), "n1").object_count()["elements"] for n in (1000, 2000, 4000)]
    per_pod = [(counts[i + 1] - counts[i]) / n for i, n in enumerate((1000, 2000))]
    assert per_pod[0] == pytest.approx(per_pod[1], rel=0.1)


def test_host_network_and_terminated_pods_are_never_in_the_ruleset() -> None:
    s = state(*BASE, policy("x/deny-all", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}))
    text = render_text(desired_ruleset(s, "n1")) + render_text(desired_ruleset(s, "n2"))
    assert "192.168.0.2" not in text and "10.0.1.9" not in text


def _rendered_examples():
    s = state(*BASE, *case_policies())
    return [desired_ruleset(s, node) for node in ("n1", "n2")]


@pytest.mark.kernel
@pytest.mark.parametrize("fmt", ["nft", "json"])
def test_the_kernel_accepts_rendered_rulesets(fmt: str) -> None:
    with netns() as ns:
        for ruleset in _rendered_examples():
            if fmt == "nft":
                result = nft(ns, "-c", "-f", "-", stdin=render_text(ruleset))
            else:
                result = nft(ns, "-j", "-c", "-f", "-", stdin=json.dumps(render_json(ruleset)))
            assert result.returncode == 0, result.stderr


@pytest.mark.kernel
def test_the_kernel_lists_back_what_was_rendered() -> None:
    """Loaded for real, every rendered chain and rule comment is there to audit."""
    ruleset = _rendered_examples()[0]
    with netns() as ns:
        loaded = nft(ns, "-f", "-", stdin=render_text(ruleset))
        assert loaded.returncode == 0, loaded.stderr
        listed = nft(ns, "list", "table", "inet", "nftpolicy").stdout
    table = ruleset.tables[0]
    for chain in table.chains:
        assert f"chain {chain.name} {{" in listed
        for rule in chain.rules:
            if rule.comment:
                assert f'comment "{rule.comment}"' in listed
    assert sum(line.count(" . ") > 0 or line.strip().startswith("elements") for line in listed.splitlines()) > 0


def test_overlapping_and_adjacent_ports_are_merged_for_the_kernel() -> None:
    s = state(
        *BASE,
        policy(
            "x/overlap",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "ports": [
                            {"protocol": "TCP"},
                            {"port": 79, "endPort": 81},
                            {"port": 90, "protocol": "UDP"},
                            {"port": 91, "protocol": "UDP"},
                        ]
                    }
                ],
            },
        ),
    )
    text = render_text(desired_ruleset(s, "n1"))
    assert "meta l4proto . th dport { tcp . 0-65535, udp . 90-91 }" in text


CLUSTER_POLICIES = [
    cnp(
        "admin",
        "Admin",
        1,
        {"namespaces": {}},
        ingress=[cnp_rule("Pass", [{"namespaces": {}}], "p", protocols=[{"udp": {"destinationPort": {"number": 5353}}}])],
        egress=[
            cnp_rule("Deny", [{"nodes": {"matchLabels": {"zone": "a"}}}], "no-nodes", field="to"),
            cnp_rule("Accept", [{"pods": {"podSelector": {}}}], protocols=[{"destinationNamedPort": "http"}], field="to"),
        ],
    ),
    cnp("baseline", "Baseline", 2, {"namespaces": {}}, egress=[cnp_rule("Deny", [{"networks": ["192.0.2.0/24"]}], field="to")]),
]


def test_protocols_read_back_as_numbers_are_names() -> None:
    """Without /etc/protocols (a slim image), libnftables lists ``udp`` as 17."""
    from rules.nft_json import table_from_json

    listed = [
        {"chain": {"family": "inet", "table": "t", "name": "c"}},
        {
            "rule": {
                "family": "inet",
                "table": "t",
                "chain": "c",
                "expr": [
                    {
                        "match": {
                            "op": "==",
                            "left": {"concat": [{"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]},
                            "right": {"set": [{"concat": [17, 5353]}, {"concat": [6, {"range": [80, 81]}]}]},
                        }
                    },
                    {"drop": None},
                ],
            }
        },
    ]
    (chain,) = table_from_json(listed, "inet", "t").chains
    assert "meta l4proto . th dport { udp . 5353, tcp . 80-81 } drop" in chain.rules[0].text()


@pytest.mark.kernel
def test_tables_read_back_from_the_kernel_show_no_drift() -> None:
    """Every shape of rule and set the translator writes parses back from
    ``nft -j list`` into the same objects (what verify and audits rely on)."""
    import ipaddress

    from rules.drift import table_drift
    from rules.model import PodInterface
    from rules.nft_json import table_from_json

    s = state(*BASE, *case_policies(), *CLUSTER_POLICIES)
    interfaces = [
        PodInterface(
            "x", "a", "c1", "veth0a", "02:00:00:00:00:0a", (ipaddress.ip_address("10.0.1.1"), ipaddress.ip_address("fd00:1::1"))
        )
    ]
    for ruleset in (desired_ruleset(s, "n1", interfaces, log_group=100), desired_ruleset(s, "n2", [])):
        with netns() as ns:
            assert nft(ns, "-f", "-", stdin=render_text(ruleset)).returncode == 0
            for table in ruleset.tables:
                listed = json.loads(nft(ns, "-j", "list", "table", table.family, table.name).stdout)["nftables"]
                assert table_drift(table, table_from_json(listed, table.family, table.name)) == []
