"""End to end with a real kube-apiserver: pods created through the API and
wired by the conflist on two simulated nodes, policies applied with
``kubectl apply``, enforcers watching the API with the least-privilege
identity of manifests/base/rbac.yaml, every expectation checked with real
packets against the reference evaluator."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

import yaml

from builders import cnp, policy, rule
from test_cluster_policy import INVALID_CLUSTER_POLICIES, with_change
from test_load import INVALID_POLICIES
from enforcer.testbed.simulation import Testbed, in_ns, wait_until
from kube import REPO, ApiCluster, ControlPlane
from probes import assert_matrix

pytestmark = pytest.mark.kernel

DENY_X = policy("x/deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
FROM_TEAM_B = policy(
    "x/from-team-b",
    {
        "podSelector": {"matchLabels": {"app": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}], "ports": [{"port": "http"}]}],
    },
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Testbed(tmp_path_factory.mktemp("bed"), nodes=2) as bed:
        with ControlPlane(tmp_path_factory.mktemp("kube"), bed.add_host("api", 2), "192.168.56.2") as cp:
            bed.cluster = ApiCluster(cp)
            bed.namespace("x", team="a")
            bed.namespace("y", team="b")
            n1, n2 = bed.nodes
            n1.add_pod("x/a", {"app": "a"}, ports=[("http", 80, "TCP")])  # before any enforcer or policy
            for node in bed.nodes:
                node.start_enforcer()
            n2.add_pod("y/a", {"app": "a"})
            n1.add_pod("y/b", {"app": "b"}, ports=[("http", 8080, "TCP")])
            bed.wait_converged()
            yield cp, bed


def converge(bed: Testbed, *policies: dict) -> None:
    bed.apply_policies(*policies)
    bed.wait_converged()


def matrices(bed: Testbed) -> None:
    for port in (80, 8080):
        assert_matrix(bed, port, "TCP", 4)
    assert_matrix(bed, 80, "TCP", 6)


def test_kubectl_applied_policies_are_enforced_on_every_node(cluster) -> None:
    _, bed = cluster
    converge(bed, DENY_X, FROM_TEAM_B)
    matrices(bed)


def test_a_pod_created_after_the_policies_is_protected(cluster) -> None:
    _, bed = cluster
    converge(bed, DENY_X, FROM_TEAM_B)
    bed.nodes[1].add_pod("x/late", {"app": "a"}, ports=[("http", 80, "TCP")])
    bed.wait_converged()
    try:
        matrices(bed)
    finally:
        bed.nodes[1].delete_pod("x/late")
        bed.wait_converged()


def test_pod_and_namespace_label_changes_move_pods_in_and_out(cluster) -> None:
    _, bed = cluster
    converge(bed, FROM_TEAM_B)
    bed.pod("y/a").labels["app"] = "changed"
    bed.namespaces["x"]["team"] = "b"  # now x's own pods are "from team b"
    bed.publish()
    bed.wait_converged()
    try:
        matrices(bed)
    finally:
        bed.pod("y/a").labels["app"] = "a"
        bed.namespaces["x"]["team"] = "a"
        bed.publish()
        bed.wait_converged()


def test_policy_update_and_delete(cluster) -> None:
    _, bed = cluster
    converge(bed, DENY_X)
    matrices(bed)
    converge(bed, policy("x/deny", {"podSelector": {"matchLabels": {"app": "nothing"}}, "policyTypes": ["Ingress"]}))
    matrices(bed)
    converge(bed)
    matrices(bed)


def test_a_deleted_pods_ip_reused_by_another_pod_carries_none_of_its_allowances(cluster) -> None:
    _, bed = cluster
    n1 = bed.nodes[0]
    converge(bed, FROM_TEAM_B)
    old = n1.add_pod("y/old", {"app": "old"}, cni_args="IP=10.244.1.200")
    bed.wait_converged()
    matrices(bed)
    n1.delete_pod("y/old")
    bed.namespace("z")
    new = n1.add_pod("z/new", {"app": "new"}, cni_args="IP=10.244.1.200")
    bed.forget_neighbour("10.244.1.200")  # caches still hold the deleted pod's MAC
    bed.wait_converged()
    try:
        assert old.ip(4) == new.ip(4) == "10.244.1.200"
        matrices(bed)  # z is not team b: the reused address is refused where y/old was allowed
    finally:
        n1.delete_pod("z/new")
        bed.wait_converged()


def test_the_enforcer_identity_can_only_read_pods_namespaces_and_policies(cluster) -> None:
    cp, _ = cluster
    sa = "system:serviceaccount:nftpolicy-system:nftpolicy"
    for verb, resource in (
        ("list", "pods"),
        ("watch", "namespaces"),
        ("get", "networkpolicies.networking.k8s.io"),
        ("watch", "clusternetworkpolicies.policy.networking.k8s.io"),
        ("list", "nodes"),
    ):
        assert cp.kubectl("auth", "can-i", verb, resource, "--as", sa).strip() == "yes"
    for verb, resource in (
        ("create", "pods"),
        ("get", "secrets"),
        ("patch", "nodes"),
        ("patch", "networkpolicies.networking.k8s.io"),
        ("create", "clusternetworkpolicies.policy.networking.k8s.io"),
    ):
        assert cp.kubectl("auth", "can-i", verb, resource, "--as", sa, check=False).splitlines()[0] == "no"


def test_enforcer_restart_converges_without_opening(cluster) -> None:
    _, bed = cluster
    converge(bed, DENY_X)
    node = bed.nodes[0]
    node.stop_enforcer()
    matrices(bed)  # rules stay while it is down
    node.start_enforcer()
    node.wait_converged()
    matrices(bed)


def test_rules_stay_while_the_api_server_is_down_and_converge_after(cluster) -> None:
    cp, bed = cluster
    converge(bed, DENY_X)
    cp.stop_apiserver()
    try:
        wait_until(
            "every node to report the API unreachable",
            lambda: all("unreachable" in (n.status().get("sourceError") or "") for n in bed.nodes),
            poll=0.2,
            detail=lambda: str([n.status() for n in bed.nodes]),
        )
        matrices(bed)  # the last known state stays enforced
    finally:
        cp.start_apiserver()
    converge(bed, FROM_TEAM_B)
    matrices(bed)
    assert all(n.status().get("sourceError") is None for n in bed.nodes)


OUTAGE_SECONDS = float(os.environ.get("NFTPOLICY_OUTAGE_SECONDS", "60"))  # longer by hand: minutes


def _verdict_tables(node) -> list[str]:
    """Chains, rules, sets and maps of both tables as the kernel lists them, without counters."""
    listed = node.nft("list", "table", "inet", "nftpolicy") + node.nft("list", "table", "bridge", "nftpolicy")
    return [re.sub(r"counter packets \d+ bytes \d+", "counter", line) for line in listed.splitlines()]


def test_a_long_api_outage_and_expired_watches_lose_nothing_and_converge_after(cluster) -> None:
    """The API server stopped for a minute (NFTPOLICY_OUTAGE_SECONDS), restarted,
    and the nodes' watches resumed only after compaction passed their
    resourceVersion (410 Gone): meanwhile every table stays as it was and a pod
    started during the outage is protected; afterwards the nodes converge."""
    cp, bed = cluster
    converge(bed, DENY_X)
    before = {n.name: _verdict_tables(n) for n in bed.nodes}
    log_start = {n.name: len(n.log()) for n in bed.nodes}
    block = (
        "add table inet test-api-block\n"
        "add chain inet test-api-block out { type filter hook output priority 0 ; }\n"
        "add rule inet test-api-block out ip daddr 192.168.56.2 tcp dport 6443 drop\n"
    )
    for node in bed.nodes:  # the nodes lose the API a little longer than the API is down
        in_ns(node.netns, "nft", "-f", "-", input=block)
    checks = 0
    try:
        known = cp.resource_version()  # the newest version the nodes can have seen
        cp.stop_apiserver()
        late = bed.nodes[0].add_pod("x/late", {"app": "late"}, publish=False)  # CNI works without the API
        before[bed.nodes[0].name] = _verdict_tables(bed.nodes[0])  # now with the new pod's port and address
        y_b = bed.pod("y/b")
        deadline = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < deadline:
            for node in bed.nodes:
                assert _verdict_tables(node) == before[node.name], f"{node.name}: no rule lost or changed"
            assert y_b.blocked(late.ip(4), 80), "the new pod is protected"
            checks += 1
            time.sleep(5)
        cp.start_apiserver()
        bed.publish()  # the kubelet reports the pod, and policies change, while the nodes cannot see it
        bed.apply_policies(
            FROM_TEAM_B, *(policy(f"x/churn-{i}", {"podSelector": {"matchLabels": {"gen": str(i)}}}) for i in range(3))
        )
        wait_until(
            f"etcd to compact resourceVersion {known} away", lambda: cp.compacted(known), poll=1
        )  # the nodes' versions are gone
    finally:
        if cp.apiserver is None:
            cp.start_apiserver()
        for node in bed.nodes:
            in_ns(node.netns, "nft", "delete", "table", "inet", "test-api-block")
    for node in bed.nodes:  # after a long outage the watches retry every 30 s at most
        node.wait_converged()
    expired = sum("watch expired (410 Gone)" in n.log()[log_start[n.name] :] for n in bed.nodes)
    assert expired == len(bed.nodes), "each node's watches came back to a compacted resourceVersion and relisted"
    converge(bed, FROM_TEAM_B)
    matrices(bed)
    bed.nodes[0].delete_pod("x/late")
    bed.wait_converged()
    print(
        f"\nAPI outage {OUTAGE_SECONDS:.0f} s: {checks} checks of both nodes' tables and of a pod started meanwhile, "
        f"all unchanged and closed; {expired} nodes relisted after 410; converged"
    )


def test_an_expired_watch_is_answered_by_a_relist(cluster) -> None:
    """Resuming from a resourceVersion the API server no longer has gets 410 Gone,
    which the source answers by listing again (``_watch`` returns None)."""
    cp, bed = cluster
    for generation in range(3):  # history to compact away
        converge(bed, policy("x/churn", {"podSelector": {"matchLabels": {"gen": str(generation)}}}))
    wait_until("etcd to compact resourceVersion 1 away", lambda: cp.compacted(1), poll=1)  # the script resumes from it
    script = (
        "import threading\n"
        "from enforcer.sources.kubernetes import ApiSource, api_client\n"
        f"source = ApiSource(api_client({str(cp.enforcer_kubeconfig)!r}))\n"
        "kind = next(k for k in source.kinds if k.kind == 'NetworkPolicy')\n"
        "print('fresh', source._watch(kind, source._relist(kind), threading.Event()) is not None)\n"
        "print('expired', source._watch(kind, '1', threading.Event()))\n"
    )
    out = in_ns(cp.netns, sys.executable, "-c", script, env={**os.environ, "NFTPOLICY_WATCH_SECONDS": "1"}).stdout
    assert "expired None" in out, out


@pytest.mark.parametrize("target", ["manifests/base", "manifests/overlays/fail-open"])
def test_the_manifests_validate_against_the_api_server(cluster, target: str) -> None:
    cp, _ = cluster
    out = cp.kubectl("apply", "--dry-run=server", "-k", str(REPO / target))
    assert "daemonset.apps/nftpolicy" in out and "clusterrole.rbac.authorization.k8s.io/nftpolicy" in out, out
    rendered = cp.kubectl("kustomize", str(REPO / target))
    assert ("--fail-open" in rendered) == target.endswith("fail-open")


def test_the_examples_validate_against_the_api_server(cluster) -> None:
    cp, _ = cluster
    examples = REPO / "manifests" / "examples"
    cp.apply(*(o for o in yaml.safe_load_all((examples / "cluster.yaml").read_text()) if o and o["kind"] == "Namespace"))
    for path in sorted(examples.glob("*.yaml")):
        if path.name != "cluster.yaml":
            cp.kubectl("apply", "--dry-run=server", "-f", str(path))


@pytest.mark.parametrize("spec", [s for _, s, _ in INVALID_POLICIES], ids=[n for n, _, _ in INVALID_POLICIES])
def test_what_the_loader_rejects_the_api_server_rejects_too(cluster, spec: dict) -> None:
    cp, _ = cluster
    out = cp.kubectl("apply", "--dry-run=server", "-f", "-", check=False, input=json.dumps(policy("x/invalid", spec)))
    assert any(m in out for m in ("is invalid", "unknown field", "cannot unmarshal")), out


@pytest.mark.parametrize("change", [c for c, _ in INVALID_CLUSTER_POLICIES], ids=[m for _, m in INVALID_CLUSTER_POLICIES])
def test_what_the_loader_rejects_of_cluster_network_policies_the_api_server_rejects_too(cluster, change: dict) -> None:
    cp, _ = cluster
    out = cp.kubectl("apply", "--dry-run=server", "-f", "-", check=False, input=json.dumps(with_change(change)))
    assert any(m in out for m in ("is invalid", "unknown field", "cannot unmarshal")), out


def test_cluster_network_policies_applied_with_kubectl_are_enforced_on_every_node(cluster) -> None:
    """An admin Accept opens what a NetworkPolicy isolates (port 80 only); a baseline
    Deny closes y, which no NetworkPolicy isolates; then both go and x is isolated again."""
    _, bed = cluster
    team_a, team_b = ({"namespaces": {"matchLabels": {"team": t}}} for t in ("a", "b"))
    admin = cnp(
        "let-b-in",
        "Admin",
        10,
        team_a,
        ingress=[rule("Accept", [team_b], protocols=[{"tcp": {"destinationPort": {"number": 80}}}])],
    )
    baseline = cnp("close-y", "Baseline", 10, team_b, ingress=[rule("Deny", [{"namespaces": {}}], "deny-all")])
    converge(bed, DENY_X, admin, baseline)
    matrices(bed)
    converge(bed, DENY_X)
    matrices(bed)


def test_a_cluster_policy_the_api_accepts_but_nftpolicy_cannot_use_keeps_its_last_good_version(cluster) -> None:
    """The CRD leaves label selector operators unchecked: an ``In`` without values
    passes the API server. The enforcers say which object and field, keep the
    version they had, and keep enforcing it."""
    cp, bed = cluster
    team_b = {"namespaces": {"matchLabels": {"team": "b"}}}
    tcp_80 = [{"tcp": {"destinationPort": {"number": 80}}}]
    good = cnp("let-b-in", "Admin", 10, {"namespaces": {}}, ingress=[rule("Accept", [team_b], protocols=tcp_80)])
    converge(bed, DENY_X, good)
    a, y_b = bed.pod("x/a"), bed.pod("y/b")
    assert y_b.connects(a.ip(4), 80) and y_b.blocked(a.ip(4), 8080)
    bad = json.loads(json.dumps(good))
    bad["spec"]["ingress"][0]["from"] = [{"namespaces": {"matchExpressions": [{"key": "team", "operator": "In"}]}}]
    cp.apply(bad)
    try:
        for node in bed.nodes:
            wait_until(
                f"{node.name} reports the unusable policy", lambda: "cnp/let-b-in" in (node.status().get("sourceError") or "")
            )
            assert "spec.ingress[0].from[0].namespaces" in node.status()["sourceError"], node.status()["sourceError"]
        assert y_b.connects(a.ip(4), 80) and y_b.blocked(a.ip(4), 8080), "the last good version stays in force"
    finally:
        cp.kubectl("delete", "clusternetworkpolicy", "let-b-in")
        converge(bed, DENY_X)
    assert y_b.blocked(a.ip(4), 80)


def test_the_operator_guide_on_the_test_bed(cluster, tmp_path) -> None:
    """The guide's steps that can run without a kubelet: apply the kustomize base,
    install and uninstall the plugin with the CLI on a node's conflist, and explain
    a flow from what ``kubectl get -o yaml`` prints."""
    cp, bed = cluster
    cp.kubectl("apply", "-k", str(REPO / "manifests" / "base"))
    assert "nftpolicy" in cp.kubectl("-n", "nftpolicy-system", "get", "daemonset", "nftpolicy", "-o", "name")

    node = bed.nodes[0]
    conf, bin_ = tmp_path / "net.d", tmp_path / "bin"
    conf.mkdir(), bin_.mkdir()
    (conf / "10-podnet.conflist").write_text(json.dumps(node.base_conflist()))
    cli = [sys.executable, "-m", "enforcer", "cni"]
    installed = subprocess.run([*cli, "install", "--conf-dir", str(conf), "--bin-dir", str(bin_)], capture_output=True, text=True)
    assert installed.returncode == 0 and "chained after bridge" in installed.stdout, installed.stderr
    assert [p["type"] for p in json.loads((conf / "10-podnet.conflist").read_text())["plugins"]] == ["bridge", "nftpolicy"]
    removed = subprocess.run([*cli, "uninstall", "--conf-dir", str(conf), "--bin-dir", str(bin_)], capture_output=True, text=True)
    assert removed.returncode == 0 and json.loads((conf / "10-podnet.conflist").read_text()) == node.base_conflist()

    converge(bed, DENY_X, FROM_TEAM_B)
    state = tmp_path / "state.yaml"
    state.write_text(cp.kubectl("get", "namespaces,pods,networkpolicies", "-A", "-o", "yaml"))
    explain = subprocess.run(
        [
            sys.executable,
            "-m",
            "enforcer",
            "explain",
            "-f",
            str(state),
            "--from",
            "y/b",
            "--to",
            "x/a",
            "--port",
            "80/tcp",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
    )
    assert explain.returncode == 0 and json.loads(explain.stdout)["deciding_rules"] == ["x/from-team-b ingress[0]"], (
        explain.stdout + explain.stderr
    )
