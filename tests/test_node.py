"""Behaviour of one node under attack, restart and neighbours: anti-spoofing,
node traffic, established connections, Services, restarts, fail-closed ADD,
IP reuse. Real packets on the bed of conftest.py (node-1: x/a, x/b, y/b;
node-2: y/a, z/c)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest

from builders import cnp, rule, policy
from cni.records import read_record
from enforcer.testbed.simulation import CONFIRM_TIMEOUT, PROBE_TIMEOUT, SimulatedPod, in_ns, wait_until

pytestmark = pytest.mark.kernel

DENY_X = policy("x/deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
DENY_ALL = [policy(f"{ns}/deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}) for ns in ("x", "y", "z")]
ALLOW_B_TO_A = policy(
    "x/a-from-b",
    {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]},
)


def tcp(src: SimulatedPod, host: str, port: int = 80, **kw) -> bool:
    """A connection that should work: it gets all the time a busy machine needs."""
    return src.connects(host, port, **kw)


def blocked(src: SimulatedPod, host: str, port: int = 80, **kw) -> bool:
    """A connection that should be denied gets nowhere in a probe's timeout."""
    return src.blocked(host, port, **kw)


def enforce(bed, *policies) -> None:
    bed.apply_policies(*policies)
    bed.wait_converged()


def test_a_pod_cannot_send_from_another_pods_ip(bed) -> None:
    enforce(bed, ALLOW_B_TO_A)
    a, b, y_b = bed.pod("x/a"), bed.pod("x/b"), bed.pod("y/b")
    assert tcp(b, a.ip(4)) and blocked(y_b, a.ip(4))
    in_ns(y_b.netns, "ip", "addr", "add", f"{b.ip(4)}/32", "dev", "eth0")
    try:
        assert blocked(y_b, a.ip(4), source=b.ip(4)), "a forged source must not borrow x/b's allowance"
    finally:
        in_ns(y_b.netns, "ip", "addr", "del", f"{b.ip(4)}/32", "dev", "eth0")
    dropped = bed.nodes[0].nft("list", "chain", "bridge", "nftpolicy", "from-pods")
    assert (
        "IPv4 source is not the pod's" in dropped and "counter packets 0 " not in dropped.split("IPv4 source")[0].splitlines()[-1]
    )


def mac_drops(node) -> int:
    chain = node.nft("list", "chain", "bridge", "nftpolicy", "from-pods")
    line = next(l for l in chain.splitlines() if "source MAC is not the port's pod's" in l)
    return int(line.split("counter packets ")[1].split()[0])


def test_a_pod_cannot_send_from_another_mac(bed) -> None:
    enforce(bed)
    a, b = bed.pod("x/a"), bed.pod("x/b")
    original = in_ns(b.netns, "cat", "/sys/class/net/eth0/address").stdout.strip()
    before = mac_drops(bed.nodes[0])
    in_ns(b.netns, "ip", "link", "set", "eth0", "address", "02:00:00:00:be:ef")
    try:
        assert blocked(b, a.ip(4))
        assert mac_drops(bed.nodes[0]) > before, "the forged frames were dropped by the MAC check"
    finally:
        in_ns(b.netns, "ip", "link", "set", "eth0", "address", original)
    assert tcp(b, a.ip(4))


CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]), source_address=(sys.argv[4], 0))"


def connects_from(netns: str, host: str, port: int, source: str, timeout: float) -> bool:
    """A TCP connection from a namespace that is no pod of the bed (no probe agent there)."""
    return (
        subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, "-c", CONNECT, host, str(port), str(timeout), source],
            capture_output=True,
        ).returncode
        == 0
    )


def plug(node, netns: str, port: str, bridge: str, address: str) -> None:
    """A new namespace whose eth0 is wired to ``port`` on ``bridge`` in the node."""
    in_ns(node.netns, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns)
    in_ns(node.netns, "ip", "link", "set", port, "master", bridge, "up")
    in_ns(netns, "ip", "addr", "add", address, "dev", "eth0")
    in_ns(netns, "ip", "link", "set", "eth0", "up")


def from_pods_counter(node, comment: str) -> int:
    chain = node.nft("list", "chain", "bridge", "nftpolicy", "from-pods")
    return int(next(l for l in chain.splitlines() if comment in l).split("counter packets ")[1].split()[0])


def test_every_port_of_the_pod_bridge_is_checked_whatever_its_name(bed) -> None:
    """A port that is not named like the bridge plugin's veths, attached to cni0
    by hand, cannot pass as a pod with a borrowed source: it is not registered."""
    enforce(bed, ALLOW_B_TO_A)
    node, a, b = bed.nodes[0], bed.pod("x/a"), bed.pod("x/b")
    rogue = f"{bed.prefix}-rogue"
    subprocess.run(["ip", "netns", "add", rogue], check=True)
    try:
        # Checked from its first frame: no need to wait for the enforcer to see it.
        plug(node, rogue, "tap-rogue", "cni0", f"{b.ip(4)}/24")  # x/b's address: x/a admits x/b
        before = from_pods_counter(node, "the port is not registered")
        assert not connects_from(rogue, a.ip(4), 80, b.ip(4), PROBE_TIMEOUT), "an unregistered port passed as x/b"
        assert from_pods_counter(node, "the port is not registered") > before, "its frames were dropped as an unregistered port's"
    finally:
        in_ns(node.netns, "ip", "link", "delete", "tap-rogue", check=False)
        subprocess.run(["ip", "netns", "delete", rogue], check=False)
    assert tcp(b, a.ip(4)), "control: the real x/b still gets through"


def test_ports_of_the_nodes_other_bridges_are_left_alone(bed) -> None:
    """Another bridge on the node (a VM network, a second runtime's) is not a pod
    bridge: its ports, veths included, pass as if nftpolicy were not there."""
    enforce(bed, *DENY_ALL)
    node = bed.nodes[0]
    one, two = f"{bed.prefix}-other1", f"{bed.prefix}-other2"
    in_ns(node.netns, "ip", "link", "add", "br-other", "type", "bridge")
    server = None
    try:
        in_ns(node.netns, "ip", "link", "set", "br-other", "up")
        for ns, port, address in ((one, "vethother1", "192.0.2.1/24"), (two, "vethother2", "192.0.2.2/24")):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            plug(node, ns, port, "br-other", address)
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                two,
                sys.executable,
                "-c",
                "import socket; s = socket.create_server(('192.0.2.2', 80)); [s.accept()[0].close() for _ in iter(int, 1)]",
            ]
        )
        wait_until(
            "the other bridge's ports among the foreign ports",
            lambda: all(
                p in node.nft("list", "set", "bridge", "nftpolicy", "foreign-ports") for p in ("vethother1", "vethother2")
            ),
        )
        assert wait_until(
            "a connection across the other bridge",
            lambda: connects_from(one, "192.0.2.2", 80, "192.0.2.1", CONFIRM_TIMEOUT),
            poll=0.2,
        )
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for ns in (one, two):
            subprocess.run(["ip", "netns", "delete", ns], check=False)
        in_ns(node.netns, "ip", "link", "delete", "br-other", check=False)
    wait_until(
        "the foreign ports to be forgotten",
        lambda: "vethother" not in node.nft("list", "set", "bridge", "nftpolicy", "foreign-ports"),
    )


def test_the_node_and_its_pods_always_reach_each_other(bed) -> None:
    node = bed.nodes[0]
    agent = SimulatedPod("node", node.name, node, node.netns, "", {}, [])
    agent.start_agent()
    try:
        enforce(bed, *DENY_ALL)
        a = bed.pod("x/a")
        for family, gateway in ((4, "10.244.1.1"), (6, "fd00:10:244:1::1")):
            assert tcp(agent, a.ip(family)), "kubelet probes reach the pod"
            assert tcp(a, gateway), "the pod reaches its node"
            assert tcp(a, a.ip(family)), "the pod reaches itself"
            # explain --live says what the packets just showed, and why: these flows never cross the policy table.
            for src, dst, why in (
                (gateway, a.ip(family), "from the node itself"),
                (a.ip(family), gateway, "to the node itself"),
                (a.ip(family), a.ip(family), "to its own address"),
            ):
                answer = explain_live(node, src, dst)
                assert answer["allowed"] and why in answer["reason"], (src, dst, answer)
        assert blocked(bed.pod("y/a"), a.ip(4)), "another node's pod stays out"
        denied = explain_live(node, bed.pod("y/a").ip(4), a.ip(4))
        assert not denied["allowed"] and denied["reason"] is None and denied["rule"]["chain"].startswith("isolate-ingress-")
    finally:
        agent.stop_agent()


def explain_live(node, src: str, dst: str, port: str = "80/tcp") -> dict:
    """``nftpolicy explain --live`` run on the node, as an operator would."""
    args = ("explain", "--live", "--from", src, "--to", dst, "--port", port, "--format", "json")
    return json.loads(in_ns(node.netns, sys.executable, "-m", "enforcer", *args, check=False).stdout)


def test_ipv6_neighbour_discovery_works_under_deny_all(bed) -> None:
    enforce(
        bed,
        *DENY_ALL,
        policy("x/allow-b", {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{}]}),
        policy("x/b-out", {"podSelector": {"matchLabels": {"app": "b"}}, "egress": [{}]}),
    )
    a, b = bed.pod("x/a"), bed.pod("x/b")
    in_ns(b.netns, "ip", "-6", "neigh", "flush", "dev", "eth0")
    in_ns(a.netns, "ip", "-6", "neigh", "flush", "dev", "eth0")
    assert tcp(b, a.ip(6))


def test_established_connections_are_cut_when_policy_denies_them(bed) -> None:
    enforce(bed)
    a, b = bed.pod("x/a"), bed.pod("x/b")
    assert b.connects(a.ip(4), 7, op="tcp-open", conn="long")
    assert b.connects(None, op="tcp-roundtrip", conn="long")
    enforce(bed, DENY_X)
    # The cut follows the commit, off the sync path: wait for it to happen.
    wait_until("the established connection to be cut", lambda: b.blocked(None, op="tcp-roundtrip", conn="long"))


def test_service_traffic_is_policed_on_the_pod_address_after_dnat(bed) -> None:
    node = bed.nodes[0]
    a, b, y_b = bed.pod("x/a"), bed.pod("x/b"), bed.pod("y/b")
    kube_proxy = (
        f"add table ip kube-proxy-test\n"
        f"add chain ip kube-proxy-test prerouting {{ type nat hook prerouting priority dstnat ; }}\n"
        f"add rule ip kube-proxy-test prerouting ip daddr 10.96.0.10 tcp dport 80 dnat to {a.ip(4)}:80\n"
    )
    in_ns(node.netns, "nft", "-f", "-", input=kube_proxy)
    before = node.nft("list", "table", "ip", "kube-proxy-test")
    enforce(bed, ALLOW_B_TO_A)
    assert tcp(b, "10.96.0.10") and blocked(y_b, "10.96.0.10")
    enforce(bed)
    assert tcp(y_b, "10.96.0.10")
    assert node.nft("list", "table", "ip", "kube-proxy-test") == before, "another table is never touched"
    node.nft("delete", "table", "ip", "kube-proxy-test")


def test_restart_takes_over_the_live_tables_without_recreating_base_chains(bed) -> None:
    node = bed.nodes[0]
    enforce(bed, DENY_X)
    handles = node.nft("-a", "list", "chain", "inet", "nftpolicy", "forward").splitlines()[1]
    node.stop_enforcer(signal.SIGKILL)
    a, y_b = bed.pod("x/a"), bed.pod("y/b")
    assert blocked(y_b, a.ip(4)), "rules stay in force while the enforcer is down"
    node.start_enforcer()
    node.wait_converged()
    assert blocked(y_b, a.ip(4))
    assert node.nft("-a", "list", "chain", "inet", "nftpolicy", "forward").splitlines()[1] == handles
    enforce(bed)
    assert tcp(y_b, a.ip(4))


def test_a_pod_added_while_the_enforcer_is_down_is_held_closed(bed) -> None:
    node = bed.nodes[1]
    enforce(bed)
    node.stop_enforcer()
    pod = node.add_pod("z/late", {"app": "late"}, publish=False)
    try:
        assert read_record(node.state_dir, pod.container_id).held
        assert "state DOWN" in in_ns(node.netns, "ip", "link", "show", pod.host_ifname).stdout
        assert blocked(bed.pod("y/a"), pod.ip(4))
        bed.publish()
        node.start_enforcer()
        node.wait_converged()
        wait_until("the held pod to be released", lambda: not read_record(node.state_dir, pod.container_id).held)
        assert tcp(bed.pod("y/a"), pod.ip(4))
    finally:
        node.delete_pod("z/late")
        bed.wait_converged()


def test_an_unregistered_pod_port_passes_nothing(bed) -> None:
    """A veth that only bridge has wired (nftpolicy not yet run) is closed both ways."""
    node = bed.nodes[0]
    enforce(bed)
    pod = node.add_pod("z/bare", publish=False)
    assert tcp(pod, bed.pod("x/a").ip(4))
    node.stop_enforcer()  # it would put the elements back: the port stays as bridge alone left it
    in_ns(node.netns, "nft", "delete", "element", "bridge", "nftpolicy", "pod-ports", f'{{ "{pod.host_ifname}" }}')
    in_ns(
        node.netns,
        "nft",
        "delete",
        "element",
        "bridge",
        "nftpolicy",
        "port-macs",
        f'{{ "{pod.host_ifname}" . {pod.result["interfaces"][-1]["mac"]} }}',
    )
    try:
        assert blocked(pod, bed.pod("x/a").ip(4)) and blocked(bed.pod("x/a"), pod.ip(4))
    finally:
        node.start_enforcer()
        node.delete_pod("z/bare")
        bed.wait_converged()


def test_a_reused_ip_never_inherits_the_previous_pods_allowances(bed) -> None:
    node = bed.nodes[0]
    enforce(bed, ALLOW_B_TO_A)
    a = bed.pod("x/a")
    old = node.add_pod("x/old", {"app": "b"}, cni_args="IP=10.244.1.200")
    node.wait_converged()
    assert old.ip(4) == "10.244.1.200" and tcp(old, a.ip(4))
    node.delete_pod("x/old")
    new = node.add_pod("x/new", {"app": "other"}, cni_args="IP=10.244.1.200")
    bed.forget_neighbour("10.244.1.200")  # caches still hold the deleted pod's MAC
    try:
        assert new.ip(4) == "10.244.1.200"
        assert tcp(new, bed.pod("y/b").ip(4)), "the new pod is wired"
        assert blocked(new, a.ip(4)), "the new pod at the old IP must not be allowed as app=b"
    finally:
        node.delete_pod("x/new")
        bed.wait_converged()


def test_an_invalid_source_file_keeps_what_is_enforced(bed) -> None:
    node = bed.nodes[0]
    enforce(bed, DENY_X)
    a, y_b = bed.pod("x/a"), bed.pod("y/b")
    bad = bed.source / "typo.yaml"
    bad.write_text(
        "kind: NetworkPolicy\nmetadata: {name: typo, namespace: x}\n"
        "spec: {podSelector: {}, ingress: [{ports: [{port: 90, endPort: 80}]}]}\n"
    )
    try:
        wait_until("the source error in the status", lambda: "typo" in (node.status().get("sourceError") or ""))
        assert "x/typo: spec.ingress[0].ports[0].endPort: must not be less than port" in node.log()
        assert blocked(y_b, a.ip(4)), "the last good state stays in force"
    finally:
        bad.unlink()
    enforce(bed)
    assert tcp(y_b, a.ip(4))


def test_health_and_readiness_endpoints(bed) -> None:
    enforce(bed)
    node = bed.nodes[0]
    for path in ("healthz", "readyz"):
        out = in_ns(node.netns, "curl", "-fsS", f"http://127.0.0.1:9964/{path}").stdout
        assert out.strip() == "ok", (path, out)
    bad = bed.source / "typo.yaml"
    bad.write_text("kind: NetworkPolicy\nmetadata: {name: typo, namespace: x}\nspec: {policyTypes: [Sideways]}\n")
    try:

        def unready():
            result = in_ns(node.netns, "curl", "-sS", "-w", " %{http_code}", "http://127.0.0.1:9964/readyz")
            return None if result.stdout.endswith(" 200") else result

        result = wait_until("readyz to turn 503", unready)
        assert result.stdout.endswith(" 503") and "x/typo: spec.policyTypes[0]" in result.stdout
    finally:
        bad.unlink()


def verify(bed, node) -> subprocess.CompletedProcess:
    return in_ns(
        node.netns,
        sys.executable,
        "-m",
        "enforcer",
        "verify",
        "--node",
        node.name,
        "--source",
        str(bed.source),
        "--state-dir",
        str(node.state_dir),
        check=False,
    )


def tamper(node) -> tuple[str, str]:
    """Delete a policy rule and add a peer element by hand, in one batch; returns (chain, set)."""
    chain = next(line.split()[1] for line in node.nft("list", "chains", "inet").splitlines() if "policy-ingress" in line)
    handle = node.nft("-a", "list", "chain", "inet", "nftpolicy", chain).split("# handle ")[-1].split()[0]
    peer_set = next(s.split()[1] for s in node.nft("list", "sets", "inet").splitlines() if s.strip().startswith("set peer-"))
    in_ns(
        node.netns,
        "nft",
        "-f",
        "-",
        input=f"delete rule inet nftpolicy {chain} handle {handle}\nadd element inet nftpolicy {peer_set} {{ 10.9.9.9 }}\n",
    )
    return chain, peer_set


def test_verify_reports_hand_made_changes_as_drift(bed) -> None:
    enforce(bed, ALLOW_B_TO_A)
    node = bed.nodes[0]
    clean = verify(bed, node)
    assert clean.returncode == 0 and "in sync" in clean.stdout, clean.stdout + clean.stderr
    node.stop_enforcer()  # nobody repairs while we look
    try:
        chain, peer_set = tamper(node)
        drift = verify(bed, node)
        assert drift.returncode == 3, drift.stdout + drift.stderr
        assert f"changed: table inet nftpolicy chain {chain}" in drift.stdout
        assert f"changed: table inet nftpolicy set {peer_set}" in drift.stdout and "+ unwanted, present: 10.9.9.9" in drift.stdout
        assert "Str(" not in drift.stdout and "Verdict(" not in drift.stdout, drift.stdout
    finally:
        node.start_enforcer()
        node.wait_converged()
    assert verify(bed, node).returncode == 0, "the restarted enforcer took the tables over and repaired them"


def test_the_enforcer_repairs_hand_made_changes_while_it_runs(bed) -> None:
    enforce(bed, ALLOW_B_TO_A)
    node = bed.nodes[0]
    tamper(node)
    # It reads its tables back every second (the bed's setting), then repairs them.
    wait_until(
        "the enforcer to repair its tables",
        lambda: verify(bed, node).returncode == 0,
        poll=0.2,
        detail=lambda: node.log()[-2000:],
    )
    assert "changed behind our back, repairing" in node.log()


def test_dump_shows_each_pods_live_rules_peers_and_counters(bed) -> None:
    enforce(bed, ALLOW_B_TO_A, DENY_X)
    node = bed.nodes[0]
    a, b, y_b = bed.pod("x/a"), bed.pod("x/b"), bed.pod("y/b")
    assert tcp(b, a.ip(4)) and blocked(y_b, a.ip(4))
    out = in_ns(
        node.netns,
        sys.executable,
        "-m",
        "enforcer",
        "dump",
        "--node",
        node.name,
        "--state-dir",
        str(node.state_dir),
        "-f",
        str(bed.source),
        "--pod",
        "x/a",
        "--format",
        "json",
    ).stdout
    report = json.loads(out)
    assert report["schemaVersion"] == "nftpolicy.dump/v2" and [p["pod"] for p in report["pods"]] == ["x/a"]
    ingress = report["pods"][0]["ingress"]
    assert ingress["isolated"] and sorted(ingress["policies"]) == ["x/a-from-b", "x/deny"]
    allow = next(
        r for r in ingress["rules"] if r["rule"].startswith("x/a-from-b ingress[0].from[0]") and r["match"].startswith("ip saddr")
    )
    assert allow["packets"] >= 1 and f"x/b ({b.ip(4)})" in allow["peers"][0]["members"]
    assert ingress["denied"]["packets"] >= 1
    assert not report["pods"][0]["egress"]["isolated"]
    table = in_ns(
        node.netns, sys.executable, "-m", "enforcer", "dump", "--state-dir", str(node.state_dir), "--policy", "x/deny"
    ).stdout
    assert "x/a" in table and "isolated by" in table
    # x/deny's chain serves every x pod here: its rule's figures say so, in the JSON and the text.
    everyone = json.loads(dump_json(node, "--namespace", "x"))["pods"]
    isolated_by_deny = sorted(p["pod"] for p in everyone if "x/deny" in p["ingress"]["policies"])
    deny_rules = [r for p in everyone for r in p["ingress"]["rules"] if r["rule"].startswith("x/deny ")]
    assert all(r["countedFor"] == isolated_by_deny for r in deny_rules)
    denied = ingress["denied"]["countedFor"]
    assert "x/a" in denied and all(p["ingress"]["policies"] == ingress["policies"] for p in everyone if p["pod"] in denied), (
        "a drop counter is labelled with pods of other isolation chains"
    )


def dump_json(node, *args: str) -> str:
    return in_ns(
        node.netns, sys.executable, "-m", "enforcer", "dump", "--state-dir", str(node.state_dir), "--format", "json", *args
    ).stdout


def test_dump_shows_a_named_port_as_the_number_it_resolves_to_on_the_pod(bed) -> None:
    enforce(
        bed,
        policy(
            "x/a-http-from-b",
            {
                "podSelector": {"matchLabels": {"app": "a"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}], "ports": [{"port": "http"}]}],
            },
        ),
    )
    a, b = bed.pod("x/a"), bed.pod("x/b")
    assert tcp(b, a.ip(4), 80) and blocked(b, a.ip(4), 8080)
    rules = json.loads(dump_json(bed.nodes[0], "--pod", "x/a"))["pods"][0]["ingress"]["rules"]
    resolved = {(n["name"], tuple(n["ports"])) for r in rules for n in r["namedPorts"] if not n["matchesNothingHere"]}
    assert resolved == {("http", (80,))}, rules
    assert all(not p["set"].startswith(("port-", "local-port-")) for r in rules for p in r["peers"])


@pytest.mark.parametrize("command", ["dump", "verify"])
def test_a_state_dir_without_enforcer_state_is_named(bed, command) -> None:
    node = bed.nodes[0]
    extra = ("--node", node.name, "--source", str(bed.source)) if command == "verify" else ()
    result = in_ns(node.netns, sys.executable, "-m", "enforcer", command, "--state-dir", "/nonexistent", *extra, check=False)
    assert result.returncode == 2 and "no pod records found: /nonexistent has no status.json" in result.stderr, result


def test_metrics_count_syncs_objects_and_per_policy_packets(bed) -> None:
    enforce(bed, ALLOW_B_TO_A)
    node = bed.nodes[0]
    a, b, y_b = bed.pod("x/a"), bed.pod("x/b"), bed.pod("y/b")
    assert tcp(b, a.ip(4)) and blocked(y_b, a.ip(4))
    text = in_ns(node.netns, "curl", "-fsS", "http://127.0.0.1:9964/metrics").stdout
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line and not line.startswith("#")
    }
    assert values["nftpolicy_syncs_total"] >= 1 and values["nftpolicy_source_up"] == 1
    assert values['nftpolicy_objects{table="inet nftpolicy",kind="chains"}'] > 2
    assert values['nftpolicy_policy_rule_packets_total{rule="x/a-from-b ingress[0].from[0]"}'] >= 1
    assert values['nftpolicy_denied_packets_total{direction="ingress",policies="x/a-from-b"}'] >= 1


def test_cluster_policy_denials_are_counted_and_logged_with_the_deciding_rule(bed) -> None:
    lockdown = cnp(
        "lockdown",
        "Admin",
        3,
        {"pods": {"podSelector": {"matchLabels": {"app": "a"}}}},
        ingress=[rule("Deny", [{"namespaces": {"matchLabels": {"team": "b"}}}], "no-team-b")],
    )
    enforce(bed, lockdown)
    node = bed.nodes[0]
    a, b, y_b = bed.pod("x/a"), bed.pod("x/b"), bed.pod("y/b")
    assert tcp(b, a.ip(4)) and blocked(y_b, a.ip(4), port=81)
    comment = "cnp/lockdown Admin/3 ingress[0].from[0] (no-team-b)"
    text = in_ns(node.netns, "curl", "-fsS", "http://127.0.0.1:9964/metrics").stdout
    assert re.search(rf'nftpolicy_cluster_policy_rule_packets_total{{rule="{re.escape(comment)}",action="Deny"}} [1-9]', text), (
        text
    )

    def denials() -> list[dict]:
        lines = [json.loads(l) for l in node.deny_log.read_text().splitlines()] if node.deny_log.exists() else []
        return [
            l for l in lines if l["src"]["ip"] == y_b.ip(4) and l["dst"]["ip"] == a.ip(4) and l["port"] == 81
        ]  # its own port: the log is shared by the tests

    hit = wait_until("the denied flow in the deny log", denials, poll=0.1)
    assert hit[0]["policies"] == ["cnp/lockdown"] and hit[0]["rule"] == f"{comment} Deny", hit[0]


def test_denied_flows_are_logged_with_pods_port_direction_and_policies(bed) -> None:
    enforce(bed, ALLOW_B_TO_A)
    node = bed.nodes[0]
    a, y_b = bed.pod("x/a"), bed.pod("y/b")
    assert blocked(y_b, a.ip(4), port=8080)

    def denials() -> list[dict]:
        lines = [json.loads(l) for l in node.deny_log.read_text().splitlines()] if node.deny_log.exists() else []
        return [l for l in lines if l["src"]["ip"] == y_b.ip(4) and l["dst"]["ip"] == a.ip(4) and l["port"] == 8080]

    hit = wait_until("the denied flow in the deny log", denials, poll=0.1)
    assert hit[0] | {"time": None} == {
        "time": None,
        "node": node.name,
        "direction": "ingress",
        "protocol": "TCP",
        "port": 8080,
        "src": {"ip": y_b.ip(4), "pod": "y/b"},
        "dst": {"ip": a.ip(4), "pod": "x/a"},
        "policies": ["x/a-from-b"],
    }
