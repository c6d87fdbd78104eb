"""The audit tools (dump, verify) on a fake kernel: what they say when pointed
at the wrong place, which counters they call shared, and how they show named
ports. The same tools on real packets are in test_node.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import namespace, pod, policy, state
from cni.records import PodRecord, write_record
from enforcer.audit.live import dump_live
from enforcer.audit.verify import VerifyError, drift
from enforcer.kernel.fake import FakeKernel
from enforcer.registrations import NoStateDir
from rules.model import PodInterface
from rules.nft import create_transaction
from rules.translate import desired_ruleset


def node(tmp_path: Path, *objects: dict, registered: tuple[str, ...] = ()) -> tuple[FakeKernel, Path]:
    """A fake kernel holding the node's tables, and a state dir with records for ``registered`` pods."""
    cluster = state(*objects)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "status.json").write_text("{}")
    interfaces = []
    for key in registered:
        p = next(p for p in cluster.pods if p.key == key)
        ns, name = key.split("/")
        record = PodRecord(f"c{name}".ljust(64, "0"), ns, name, "uid", f"veth{name}", "02:00:00:00:00:01", tuple(map(str, p.ips)))
        write_record(state_dir, record)
        interfaces.append(PodInterface(ns, name, record.container_id, record.host_ifname, record.mac, p.ips))
    kernel = FakeKernel()
    kernel.apply([create_transaction(t) for t in desired_ruleset(cluster, "n1", interfaces).tables])
    return kernel, state_dir


BASE = [namespace("x"), pod("x/a", "10.0.1.1", labels={"app": "a"}, ports=[("http", 8080)])]


@pytest.mark.parametrize("tool", ["dump", "verify"])
def test_a_wrong_state_dir_is_named_not_answered_as_a_node_without_pods(tmp_path, tool) -> None:
    kernel, _ = node(tmp_path, *BASE, registered=("x/a",))
    wrong = str(tmp_path / "elsewhere")
    with pytest.raises((NoStateDir, VerifyError), match="no pod records found: .*elsewhere has no status.json"):
        if tool == "dump":
            dump_live(kernel, "n1", wrong)
        else:
            drift(state(*BASE), "n1", wrong, kernel, lambda bridges: ())


def test_a_state_dir_with_no_pods_yet_is_a_node_without_pods(tmp_path) -> None:
    kernel, state_dir = node(tmp_path, *BASE)
    assert dump_live(kernel, "n1", str(state_dir))["pods"] == []


SHARED = [
    namespace("x"),
    pod("x/a", "10.0.1.1", labels={"app": "a"}, ports=[("http", 8080)]),
    pod("x/b", "10.0.1.2", labels={"app": "b"}, ports=[("http", 8081)]),
    pod("x/c", "10.0.1.3", labels={"app": "c"}),
    policy("x/deny", {"podSelector": {}}),
    policy("x/web", {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{"ports": [{"port": "http"}]}]}),
    policy("x/named", {"podSelector": {"matchLabels": {"app": "c"}}, "ingress": [{"ports": [{"port": "http"}]}]}),
    policy(
        "x/to-web",
        {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "http"}]}]},
    ),
]


def report(tmp_path: Path) -> dict:
    kernel, state_dir = node(tmp_path, *SHARED, registered=("x/a", "x/b", "x/c"))
    names = {"10.0.1.1": "x/a", "10.0.1.2": "x/b", "10.0.1.3": "x/c"}
    return {p["pod"]: p for p in dump_live(kernel, "n1", str(state_dir), state(*SHARED))["pods"]} | {"names": names}


def test_every_counter_says_whose_packets_it_counts(tmp_path) -> None:
    """x/b is isolated by x/deny alone: its drop counter is its own. x/deny's
    chain serves x/a, x/b and x/c alike: its figures are theirs together."""
    pods = report(tmp_path)
    assert pods["x/b"]["ingress"]["denied"]["countedFor"] == ["x/b"]
    assert pods["x/a"]["ingress"]["denied"]["countedFor"] == ["x/a"]
    web = [r for r in pods["x/a"]["ingress"]["rules"] if r["rule"].startswith("x/web ")]
    assert web and all(r["countedFor"] == ["x/a"] for r in web)


def test_a_shared_chain_is_labelled_shared_in_the_text(tmp_path) -> None:
    from rules.audit import as_table

    kernel, state_dir = node(
        tmp_path,
        namespace("x"),
        pod("x/a", "10.0.1.1"),
        pod("x/b", "10.0.1.2"),
        policy("x/deny", {"podSelector": {}}),
        registered=("x/a", "x/b"),
    )
    text = as_table(dump_live(kernel, "n1", str(state_dir)))
    assert "ingress: isolated by x/deny; denied 0 packets, shared with x/b" in text, text
    assert "ingress: isolated by x/deny; denied 0 packets, shared with x/a" in text, text


def test_named_ports_show_as_the_port_they_resolve_to_for_this_pod_or_nothing(tmp_path) -> None:
    pods = report(tmp_path)

    def named(key: str, direction: str) -> list[dict]:
        return [n for r in pods[key][direction]["rules"] for n in r["namedPorts"]]

    # One rule per address family: x/a has only IPv4, so its IPv6 variant matches nothing here.
    assert {(n["name"], tuple(n["ports"])) for n in named("x/a", "ingress")} == {("http", (8080,)), ("http", ())}
    assert all(n["matchesNothingHere"] for n in named("x/c", "ingress")), named("x/c", "ingress")
    assert all(not r["peers"] for r in pods["x/a"]["ingress"]["rules"] if r["namedPorts"]), "a named-port set listed as a peer"
    egress = named("x/b", "egress")
    assert egress and "x/a (10.0.1.1) port 8080" in egress[0]["destinations"], egress


def test_cluster_policy_tiers_show_with_their_rules_names_and_actions(tmp_path) -> None:
    from builders import cnp, rule

    lockdown = cnp(
        "lockdown", "Admin", 10, {"namespaces": {}}, ingress=[rule("Deny", [{"namespaces": {}}], "no-one", protocols=None)]
    )
    kernel, state_dir = node(tmp_path, *BASE, lockdown, registered=("x/a",))
    (entry,) = dump_live(kernel, "n1", str(state_dir))["pods"]
    ingress = entry["ingress"]
    assert not ingress["isolated"] and ingress["clusterTiers"] == ["Admin tier ingress: cnp/lockdown (10)"]
    assert [r["rule"] for r in ingress["rules"]] == ["cnp/lockdown Admin/10 ingress[0].from[0] (no-one) Deny"] * 2  # IPv4, IPv6
    assert entry["egress"] == {"isolated": False, "policies": [], "clusterTiers": [], "rules": []}
    # and verify finds the kernel as the state wants it
    assert drift(state(*BASE, lockdown), "n1", str(state_dir), kernel, lambda bridges: ()) == ([], [])


def test_verify_finds_a_cluster_policy_the_kernel_does_not_enforce(tmp_path) -> None:
    from builders import cnp, rule

    kernel, state_dir = node(tmp_path, *BASE, registered=("x/a",))  # programmed before the policy came
    lockdown = cnp("lockdown", "Baseline", 1, {"namespaces": {}}, egress=[rule("Deny", [{"namespaces": {}}], field="to")])
    differences, _ = drift(state(*BASE, lockdown), "n1", str(state_dir), kernel, lambda bridges: ())
    assert any("cnp-baseline-egress" in d for d in differences), differences
