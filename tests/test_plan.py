"""Planning transactions: the smallest change, in an order the kernel accepts,
and the same kernel state as loading the desired table from scratch."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys

import pytest

from builders import cnp, namespace, pod, policy, random_policy, state
from builders import rule as cnp_rule
from netns import netns, nft, table_state
from enforcer.kernel.fake import FakeKernel
from enforcer.kernel import KernelError
from rules.drift import table_drift
from rules.nft import ACCEPT, Chain, Rule, Set, Table, Transaction, create_transaction
from rules.plan import plan, preload
from rules.translate import desired_ruleset

BASE = [
    namespace("x", team="a"),
    namespace("y", team="b"),
    pod("x/a", ["10.0.1.1", "fd00:1::1"], labels={"app": "a"}, ports=[("http", 8080)]),
    pod("x/b", "10.0.1.2", labels={"app": "b"}),
    pod("y/c", "10.0.2.3", node="n2", labels={"app": "b"}),
]
ALLOW_B = policy(
    "x/allow-b",
    {
        "podSelector": {"matchLabels": {"app": "a"}},
        "ingress": [
            {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "b"}}}], "ports": [{"port": "http"}]}
        ],
    },
)
DENY_ALL = policy("x/deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})


def table(*objects) -> Table:
    return desired_ruleset(state(*objects), "n1").tables[0]


def verbs(tx) -> list[str]:
    return [line.split(" inet nftpolicy ")[0] for line in tx.text().splitlines()]


def test_no_change_plans_nothing() -> None:
    t = table(*BASE, ALLOW_B)
    assert len(plan(t, t)) == 0


def test_a_remote_pod_ip_change_touches_only_its_set_elements() -> None:
    before = table(*BASE, ALLOW_B)
    moved = [o if o["metadata"].get("name") != "c" else pod("y/c", "10.0.2.99", node="n2", labels={"app": "b"}) for o in BASE]
    tx = plan(table(*moved, ALLOW_B), before)
    assert tx.text().splitlines() == [
        "delete element inet nftpolicy peer-" + tx.text().split("peer-")[1].split(" ")[0] + " { 10.0.2.3 }",
        "add element inet nftpolicy peer-" + tx.text().split("peer-")[1].split(" ")[0] + " { 10.0.2.99 }",
    ]


def test_a_new_policy_adds_its_chains_without_touching_the_base_chains() -> None:
    tx = plan(table(*BASE, ALLOW_B, DENY_ALL), table(*BASE, ALLOW_B))
    text = tx.text()
    assert "chain inet nftpolicy forward" not in text and "delete chain" in text  # the old isolation chain goes
    assert verbs(tx).index("flush chain") < verbs(tx).index("delete chain")


def test_unknown_contents_are_rebuilt_in_one_transaction() -> None:
    desired = table(*BASE, ALLOW_B)
    observed = Table(
        desired.family,
        desired.name,
        desired.comment,
        tuple(Chain(c.name, c.comment, c.hook, None) for c in desired.chains) + (Chain("stale", None, None, None),),
        tuple(Set(s.name, s.type, s.comment, s.flags, None, s.map_verdicts) for s in desired.sets),
    )
    v = verbs(plan(desired, observed))
    assert "add table" not in v and "delete chain" in v and v.count("flush chain") == len(desired.chains) + 1
    assert v.count("flush set") + v.count("flush map") == len(desired.sets)


STEPS = [
    [*BASE],
    [*BASE, ALLOW_B],
    [*BASE, ALLOW_B, DENY_ALL],
    [*BASE[:3], pod("x/b", "10.0.1.7", labels={"app": "b"}), BASE[4], ALLOW_B, DENY_ALL],
    [*BASE, DENY_ALL],
    [*BASE],
]


@pytest.mark.kernel
def test_planned_changes_leave_the_kernel_as_a_fresh_load_would() -> None:
    with netns() as ns, netns() as fresh:
        current = None
        for objects in STEPS:
            desired = table(*objects)
            result = nft(ns, "-f", "-", stdin=plan(desired, current).text())
            assert result.returncode == 0, result.stderr
            current = desired
            nft(fresh, "flush", "ruleset")
            assert nft(fresh, "-f", "-", stdin=create_transaction(desired).text()).returncode == 0
            assert table_state(ns) == table_state(fresh)


def _elements(tx) -> int:
    return sum(len(payload[1]) for verb, kind, payload in tx.ops if kind == "element")


def test_a_small_change_needs_no_preload() -> None:
    before, after = table(*BASE, ALLOW_B), table(*BASE, ALLOW_B, DENY_ALL)
    assert preload(after, before) == ([], before)


def test_large_new_sets_load_in_bounded_steps_that_create_no_rule_or_map() -> None:
    steps, after = preload(table(*BASE, ALLOW_B, DENY_ALL), None, budget=2)
    assert len(steps) > 1 and all(_elements(step) <= 2 for step in steps)
    assert all(kind in ("table", "set", "element") for step in steps for _, kind, _ in step.ops)
    assert after is not None and not after.chains and not any(s.map_verdicts for s in after.sets)


def _verdicts(ns: str) -> list:
    """Chains, rules and verdict maps: what decides a packet."""
    if nft(ns, "list", "table", "inet", "nftpolicy").returncode != 0:
        return []
    return [o for o in table_state(ns) if o[0] in ("chain", "rule", "map")]


@pytest.mark.kernel
def test_preloaded_steps_then_the_switch_leave_the_kernel_as_a_fresh_load_would() -> None:
    with netns() as ns, netns() as fresh:
        current = None
        for objects in STEPS:
            desired = table(*objects)
            rules_before = _verdicts(ns)
            steps, current = preload(desired, current, budget=2)
            for step in steps:
                assert nft(ns, "-f", "-", stdin=step.text()).returncode == 0
            # until the switch, every rule and map entry is the previous one
            assert _verdicts(ns) == rules_before
            result = nft(ns, "-f", "-", stdin=plan(desired, current).text())
            assert result.returncode == 0, result.stderr
            current = desired
            nft(fresh, "flush", "ruleset")
            assert nft(fresh, "-f", "-", stdin=create_transaction(desired).text()).returncode == 0
            assert table_state(ns) == table_state(fresh)


@pytest.mark.kernel
def test_long_random_sequences_of_changes_apply_cleanly() -> None:
    """Dozens of policy sets in a row: every planned transaction is accepted and leaves
    the table as a fresh load of the same state would."""
    rng = random.Random(42)
    pods = [namespace("z"), *BASE, pod("z/c", ["10.0.2.4", "fd00:2::4"], node="n2", labels={"app": "c"}, ports=[("http", 81)])]
    apply_in_turn([table(*pods, *(random_policy(rng, i) for i in range(rng.randint(0, 5)))) for _ in range(30)])


def apply_in_turn(tables: list[Table], every_step: bool = False) -> None:
    """Plan and apply each table in turn: the kernel and the fake kernel accept
    every transaction and agree, and the end (or, ``every_step``, each step)
    is what a fresh load of that table gives."""
    with netns() as ns, netns() as fresh:
        current, fake = None, FakeKernel()
        for step, desired in enumerate(tables):
            tx = plan(desired, current)
            result = nft(ns, "-f", "-", stdin=tx.text())
            assert result.returncode == 0, (step, result.stderr)
            fake.apply([tx])
            assert table_drift(fake.read("inet", "nftpolicy"), _read(ns)) == [], f"the fake kernel differs at step {step}"
            current = desired
            if every_step or step == len(tables) - 1:
                nft(fresh, "flush", "ruleset")
                assert nft(fresh, "-f", "-", stdin=create_transaction(desired).text()).returncode == 0
                assert table_state(ns) == table_state(fresh), f"step {step}"


def _refusals() -> list[tuple[str, Transaction]]:
    """Transactions nftables refuses, each after a valid start."""
    base = table(*BASE, ALLOW_B)
    peer = next(s for s in base.sets if s.name.startswith("peer-"))
    policy_chain = next(c.name for c in base.chains if c.name.startswith("policy-"))
    cases = []
    for name, build in [
        ("element into a set that does not exist", lambda tx: tx.add_elements(Set("no-such-set", ("ipv4_addr",)), ["10.9.9.9"])),
        (
            "delete an element that is not there",
            lambda tx: tx.delete_elements(peer, ["10.9.9.9" if "v4" in peer.name else "fd00:9::9"]),
        ),
        ("delete a chain still jumped to", lambda tx: (tx.flush_chain(policy_chain), tx.delete_chain(policy_chain))),
        ("delete a set still referenced", lambda tx: tx.delete_set(peer)),
        ("rule in a chain that does not exist", lambda tx: tx.add_rule("no-such-chain", Rule((ACCEPT,)))),
        ("a set redeclared with another type", lambda tx: tx.add_set(Set(peer.name, ("inet_service",)))),
    ]:
        tx = Transaction("inet", "nftpolicy")
        build(tx)
        cases.append((name, tx))
    return cases


@pytest.mark.kernel
@pytest.mark.parametrize("name, bad", _refusals(), ids=[name for name, _ in _refusals()])
def test_the_fake_kernel_refuses_what_the_kernel_refuses_and_keeps_the_table(name, bad) -> None:
    base = table(*BASE, ALLOW_B)
    with netns() as ns:
        assert nft(ns, "-f", "-", stdin=create_transaction(base).text()).returncode == 0
        fake = FakeKernel()
        fake.apply([create_transaction(base)])
        assert nft(ns, "-f", "-", stdin=bad.text()).returncode != 0, "the kernel accepted it"
        with pytest.raises(KernelError):
            fake.apply([bad])
        assert table_drift(base, fake.read("inet", "nftpolicy")) == [] == table_drift(base, _read(ns))


def test_a_set_of_our_name_but_another_type_gets_the_table_replaced_in_one_transaction() -> None:
    desired = table(*BASE, ALLOW_B)
    peer = next(s for s in desired.sets if s.name.startswith("peer-") and s.name.endswith("-v4"))
    planted = Set(peer.name, ("ipv6_addr",), None, (), None)
    observed = Table(
        desired.family,
        desired.name,
        desired.comment,
        desired.chains,
        tuple(planted if s.name == peer.name else s for s in desired.sets),
    )
    lines = plan(desired, observed).text().splitlines()
    assert lines[0] == "delete table inet nftpolicy" and lines[1].startswith("add table inet nftpolicy")
    assert not any(line.startswith("flush") for line in lines)


@pytest.mark.kernel
def test_hand_planted_objects_of_our_names_are_replaced_and_our_own_tables_never_are() -> None:
    desired = table(*BASE, ALLOW_B, DENY_ALL)
    peer = next(s.name for s in desired.sets if s.name.startswith("peer-") and s.name.endswith("-v4"))
    with netns() as ns, netns() as fresh:
        assert nft(ns, "-f", "-", stdin=create_transaction(desired).text()).returncode == 0
        observed = _observe(ns)
        assert "delete table" not in verbs(plan(desired, observed)), "our own table is taken over in place"
        nft(ns, "delete", "table", "inet", "nftpolicy")
        planted = (
            f"add table inet nftpolicy\nadd set inet nftpolicy {peer} {{ type ipv6_addr ; }}\n"
            "add chain inet nftpolicy forward { type filter hook input priority 10 ; }\n"
        )
        assert nft(ns, "-f", "-", stdin=planted).returncode == 0
        result = nft(ns, "-f", "-", stdin=plan(desired, _observe(ns)).text())
        assert result.returncode == 0, result.stderr
        assert nft(fresh, "-f", "-", stdin=create_transaction(desired).text()).returncode == 0
        assert table_state(ns) == table_state(fresh)


def _read(ns: str) -> Table | None:
    """The whole table as the enforcer's kernel edge reads it back inside the namespace."""
    code = (
        "import pickle, sys; from enforcer.kernel.nftables import NftablesKernel; "
        "sys.stdout.buffer.write(pickle.dumps(NftablesKernel().read('inet', 'nftpolicy')))"
    )
    return pickle.loads(
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, check=True).stdout
    )


def _observe(ns: str) -> Table | None:
    """What the enforcer sees of the table at start (names, types and hooks, no
    contents), read by the enforcer's own kernel edge inside the namespace."""
    code = (
        "import pickle, sys; from enforcer.kernel.nftables import NftablesKernel; "
        "sys.stdout.buffer.write(pickle.dumps(NftablesKernel().observe('inet', 'nftpolicy')))"
    )
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, check=True).stdout
    return pickle.loads(out)


EGRESS_CNP = cnp("out", "Admin", 1, {"namespaces": {}}, egress=[cnp_rule("Deny", [{"networks": ["192.0.2.0/24"]}], field="to")])
INGRESS_CNP = cnp("in", "Baseline", 1, {"namespaces": {}}, ingress=[cnp_rule("Pass", [{"namespaces": {}}])])
CNP_STEPS = [
    [],
    [EGRESS_CNP],  # the input chain and its maps come...
    [EGRESS_CNP, INGRESS_CNP, ALLOW_B],
    [INGRESS_CNP],  # ...and go, with the chains their elements go to
    [EGRESS_CNP, DENY_ALL],
    [],
]


@pytest.mark.kernel
def test_cluster_policy_tiers_and_the_input_path_come_and_go_cleanly() -> None:
    """Tier chains, the input chain and the maps that go to node-egress chains
    appear and disappear: every planned transaction is accepted, by the kernel
    and by the fake alike, and leaves the table as a fresh load would."""
    apply_in_turn([table(*BASE, *objects) for objects in CNP_STEPS], every_step=True)
