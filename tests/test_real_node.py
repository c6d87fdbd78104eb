"""What only a real node can show: containerd runs the CNI chain for a kubelet,
kube-proxy (nftables mode) is in front, and nftpolicy runs from its own image
as the DaemonSet of manifests/base.

The cluster bed is ``scripts/cluster`` (two nodes in network namespaces); the
module brings it up if it is not, and takes it down afterwards if it did.
Every wait is for a fact (a pod Ready, a rollout done, a log line), bounded
generously.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from enforcer.testbed.simulation import FACT_TIMEOUT, wait_until
from kube import REPO

# The first test may build the bed (binaries, images: ~15 minutes on a fresh machine).
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(3600)]

CLUSTER = REPO / "scripts" / "cluster"
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
ROOT = Path.home() / ".cache" / "nftpolicy" / "cluster"


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    result = subprocess.run([str(CLUSTER), "kubectl", *args], input=input, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def bed(*args: str) -> None:
    """A ``scripts/cluster`` command (restart, reboot); its log is the error if it fails."""
    result = subprocess.run([str(CLUSTER), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"scripts/cluster {' '.join(args)}: exit {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
        )


def apply(*objects: dict) -> None:
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def rollout_done() -> None:
    kubectl("-n", "nftpolicy-system", "rollout", "status", "ds/nftpolicy", f"--timeout={FACT_TIMEOUT:.0f}s")


@pytest.fixture(scope="module")
def cluster():
    was_up = (
        subprocess.run([str(CLUSTER), "status"], capture_output=True).returncode == 0 and (ROOT / "admin.kubeconfig").exists()
    )
    subprocess.run([str(CLUSTER), "up", "--no-smoke"], check=True, stdout=subprocess.DEVNULL)
    try:
        kubectl("apply", "-k", str(REPO / "manifests" / "base"))
        rollout_done()
        yield
    finally:
        if not was_up:
            subprocess.run([str(CLUSTER), "down"], stdout=subprocess.DEVNULL, check=False)


@pytest.fixture
def ns(cluster):
    """A namespace of its own per test, removed (and gone) after, so the next
    test's nodes hold only its own pods."""
    name = f"rn-{uuid.uuid4().hex[:6]}"
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    kubectl("delete", "namespace", name, f"--timeout={FACT_TIMEOUT:.0f}s")


def pod(ns: str, name: str, node: str, labels: dict, command: list[str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": AGNHOST, "imagePullPolicy": "IfNotPresent", "command": command}],
        },
    }


def server(ns: str, name: str, node: str, labels: dict) -> dict:
    return pod(ns, name, node, labels, ["/agnhost", "netexec", "--http-port=8080"])


def prober(ns: str, name: str, node: str, labels: dict, target: str, tries: int | None = None) -> dict:
    """Connects to ``target``:8080 from its first instant on, one line per try: THROUGH or BLOCKED."""
    loop = f"for i in $(seq 1 {tries})" if tries else "while true"
    script = f"{loop}; do if /agnhost connect {target}:8080 --timeout=1s >/dev/null 2>&1; then echo THROUGH; else echo BLOCKED; fi; done; echo DONE; sleep 3600"
    return pod(ns, name, node, labels, ["/bin/sh", "-c", script])


def deny_all_but(ns: str, selector: dict, friend: dict) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "only-friends", "namespace": ns},
        "spec": {"podSelector": {"matchLabels": selector}, "ingress": [{"from": [{"podSelector": {"matchLabels": friend}}]}]},
    }


def ready(ns: str, *names: str) -> None:
    kubectl("-n", ns, "wait", "--for=condition=Ready", *(f"pod/{n}" for n in names), f"--timeout={FACT_TIMEOUT:.0f}s")


def ip_of(ns: str, name: str) -> str:
    return kubectl("-n", ns, "get", "pod", name, "-o", "jsonpath={.status.podIP}")


def outcomes(ns: str, name: str) -> list[str]:
    """What the prober saw so far (nothing while its container is still being created)."""
    return re.findall(r"^(THROUGH|BLOCKED|DONE)$", kubectl("-n", ns, "logs", name, check=False), re.M)


def test_a_pod_that_sends_from_its_first_instant_under_deny_all_egress_gets_nothing_through(ns) -> None:
    """containerd's ADD returns only once the pod's rules are committed; the
    container starts after it, so its very first packet meets them."""
    apply(server(ns, "server", "node-1", {"app": "server"}))
    ready(ns, "server")
    target = ip_of(ns, "server")
    apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny-egress", "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"role": "denied"}}, "policyTypes": ["Egress"]},
        }
    )
    apply(
        *(
            prober(ns, f"{role}-{node}", node, {"role": role}, target, tries=10)
            for role in ("denied", "control")
            for node in ("node-1", "node-2")
        )
    )
    for node in ("node-1", "node-2"):
        done = wait_until(
            f"the denied prober on {node} to finish", lambda n=node: "DONE" in (o := outcomes(ns, f"denied-{n}")) and o
        )
        assert "THROUGH" not in done, f"a connection from the first instant got through on {node}: {done}"
        control = wait_until(
            f"the control prober on {node} to finish", lambda n=node: "DONE" in (o := outcomes(ns, f"control-{n}")) and o
        )
        assert control[0] == "THROUGH", f"control: an unselected pod connects from its first try on {node}: {control}"


def guarded_server_under_probes(ns: str) -> None:
    """A server on node-1 admitting only app=friend; from node-2 an attacker and
    a friend probe it without end. Returns once the friend got through."""
    apply(server(ns, "server", "node-1", {"app": "server"}), deny_all_but(ns, {"app": "server"}, {"app": "friend"}))
    ready(ns, "server")
    target = ip_of(ns, "server")
    apply(
        prober(ns, "attacker", "node-2", {"app": "attacker"}, target), prober(ns, "friend", "node-2", {"app": "friend"}, target)
    )
    ready(ns, "attacker", "friend")
    wait_until("the friend to get through", lambda: "THROUGH" in outcomes(ns, "friend"))


def test_a_rolling_restart_and_an_image_upgrade_let_no_denied_packet_through_and_hold_new_pods(ns) -> None:
    guarded_server_under_probes(ns)
    before = outcomes(ns, "friend").count("THROUGH")

    kubectl("-n", "nftpolicy-system", "rollout", "restart", "ds/nftpolicy")
    # A pod created while its node's enforcer is down is held until the new one programs it.
    restarting = wait_until("an enforcer pod to be down during the restart", _node_without_ready_enforcer, poll=0.1)
    apply(server(ns, "late", restarting, {"app": "server"}))
    rollout_done()
    ready(ns, "late")
    kubectl(
        "-n",
        "nftpolicy-system",
        "set",
        "image",
        "ds/nftpolicy",
        "enforcer=localhost/nftpolicy:dev",
        "install-cni=localhost/nftpolicy:dev",
    )
    rollout_done()

    attacker, friend = outcomes(ns, "attacker"), outcomes(ns, "friend")
    assert attacker.count("THROUGH") == 0, f"{attacker.count('THROUGH')} of {len(attacker)} denied tries got through"
    assert friend.count("THROUGH") > before, "control: the friend kept getting through during the restarts"
    late = ip_of(ns, "late")
    apply(
        prober(ns, "late-attacker", "node-2", {"app": "attacker"}, late, tries=3),
        prober(ns, "late-friend", "node-2", {"app": "friend"}, late, tries=3),
    )
    assert "THROUGH" not in wait_until(
        "the late pod's attacker probes", lambda: "DONE" in (o := outcomes(ns, "late-attacker")) and o
    )
    assert "THROUGH" in wait_until("the late pod's friend probes", lambda: "DONE" in (o := outcomes(ns, "late-friend")) and o)
    print(
        f"\nrolling restart + image upgrade: attacker tries {len(attacker)}, through 0; friend through {friend.count('THROUGH')}"
    )


def _node_without_ready_enforcer() -> str | None:
    pods = json.loads(kubectl("-n", "nftpolicy-system", "get", "pods", "-o", "json"))["items"]
    ready_nodes = {
        p["spec"].get("nodeName")
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))
    }
    return next((n for n in ("node-1", "node-2") if n not in ready_nodes), None)


def _tables(node: str) -> str:
    listed = subprocess.run(
        [str(CLUSTER), "exec", node, "nft", "list", "table", "inet", "nftpolicy"], capture_output=True, text=True
    ).stdout
    listed += subprocess.run(
        [str(CLUSTER), "exec", node, "nft", "list", "table", "bridge", "nftpolicy"], capture_output=True, text=True
    ).stdout
    return re.sub(r"counter packets \d+ bytes \d+", "counter", listed)


@pytest.mark.parametrize("component", ["containerd", "kubelet", "kube-proxy"])
def test_restarting_a_nodes_runtime_or_kubelet_changes_nothing_enforced(ns, component) -> None:
    guarded_server_under_probes(ns)
    tables = _tables("node-1")
    bed("restart", "node-1", component)
    kubectl("wait", "--for=condition=Ready", "node/node-1", f"--timeout={FACT_TIMEOUT:.0f}s")
    ready(ns, "server")
    through = outcomes(ns, "friend").count("THROUGH")
    wait_until("the friend to get through again", lambda: outcomes(ns, "friend").count("THROUGH") > through)
    assert _tables("node-1") == tables, f"restarting {component} changed what node-1 enforces"
    assert "THROUGH" not in outcomes(ns, "attacker")


def guarded_service(ns: str) -> str:
    """A server on node-1 admitting only app=friend, behind a ClusterIP Service; returns its address."""
    apply(
        server(ns, "server", "node-1", {"app": "server"}),
        deny_all_but(ns, {"app": "server"}, {"app": "friend"}),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "server", "namespace": ns},
            "spec": {"selector": {"app": "server"}, "ports": [{"port": 8080, "targetPort": 8080}]},
        },
    )
    ready(ns, "server")
    service = kubectl("-n", ns, "get", "service", "server", "-o", "jsonpath={.spec.clusterIP}")
    return service


def test_service_traffic_is_policed_on_the_backend_pod_behind_kube_proxy(ns) -> None:
    service = guarded_service(ns)
    apply(
        *(
            prober(ns, f"{role}-{node}", node, {"app": role}, service, tries=3)
            for role in ("attacker", "friend")
            for node in ("node-1", "node-2")
        )
    )
    for node in ("node-1", "node-2"):
        attacker = wait_until(f"the attacker on {node}", lambda n=node: "DONE" in (o := outcomes(ns, f"attacker-{n}")) and o)
        friend = wait_until(f"the friend on {node}", lambda n=node: "DONE" in (o := outcomes(ns, f"friend-{n}")) and o)
        assert "THROUGH" not in attacker and "THROUGH" in friend, (node, attacker, friend)


def _records(node: str) -> list[dict]:
    """The enforcer's CNI records on ``node`` (its state dir, on the node's disk)."""
    listed = subprocess.run(
        [str(CLUSTER), "exec", node, "sh", "-c", 'for f in /var/lib/nftpolicy/pods/*.json; do cat "$f"; echo; done'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [json.loads(line) for line in listed.splitlines() if line.startswith("{")]


def _enforcer_restarts(node: str) -> int | None:
    """How often the enforcer container on ``node`` was restarted, once it is Ready again (else None)."""
    pods = json.loads(kubectl("-n", "nftpolicy-system", "get", "pods", "-o", "json"))["items"]
    for p in pods:
        if p["spec"].get("nodeName") == node and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", [])
        ):
            return sum(c.get("restartCount", 0) for c in p["status"].get("containerStatuses", []))
    return None


def test_a_node_that_loses_power_and_boots_again_converges_and_lets_nothing_denied_through(ns) -> None:
    """At boot containerd runs the CNI chain before the enforcer is back: pods
    wait ("try again later"), and the ones that come up send from their first
    instant into rules already in force. Behind a Service, so the server's new
    address is found the way clients find it. The records of the pods that
    died with the node are gone; their addresses are free again."""
    service = guarded_service(ns)
    probers = [f"{role}-{node}" for role in ("attacker", "friend") for node in ("node-1", "node-2")]
    apply(*(prober(ns, name, name.split("-", 1)[1], {"app": name.split("-")[0]}, service) for name in probers))
    ready(ns, *probers)
    for node in ("node-1", "node-2"):
        wait_until(f"the friend on {node} to get through", lambda n=node: "THROUGH" in outcomes(ns, f"friend-{n}"))
        wait_until(f"the attacker on {node} to have tried twice", lambda n=node: len(outcomes(ns, f"attacker-{n}")) >= 2)
    restarts = _enforcer_restarts("node-1")
    through = outcomes(ns, "friend-node-2").count("THROUGH")
    # The log of node-1's attacker up to now: containerd's store is a tmpfs here, so after
    # the boot the kubelet knows no previous container to show the rest of.
    before_boot = outcomes(ns, "attacker-node-1")

    bed("reboot", "node-1")
    wait_until("node-1's enforcer to be Ready again", lambda: (_enforcer_restarts("node-1") or 0) > (restarts or 0))
    ready(ns, "server", "attacker-node-1", "friend-node-1")
    wait_until("the friend on node-1 to get through after the boot", lambda: "THROUGH" in outcomes(ns, "friend-node-1"))
    wait_until("the friend on node-2 to get through again", lambda: outcomes(ns, "friend-node-2").count("THROUGH") > through)
    wait_until("the attacker on node-1 to have tried 3 times since the boot", lambda: len(outcomes(ns, "attacker-node-1")) >= 3)

    for name, seen in (
        ("attacker-node-1 before the power cut", before_boot),
        ("attacker-node-1 after the boot", outcomes(ns, "attacker-node-1")),
        ("attacker-node-2 throughout", outcomes(ns, "attacker-node-2")),
    ):
        assert seen and "THROUGH" not in seen, f"{name}: {seen.count('THROUGH')} of {len(seen)} denied tries got through"
    on_node = json.loads(kubectl("get", "pods", "-A", "--field-selector=spec.nodeName=node-1", "-o", "json"))["items"]
    pod_network = sorted(
        f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in on_node if not p["spec"].get("hostNetwork")
    )
    records = _records("node-1")
    assert sorted(f"{r['namespace']}/{r['name']}" for r in records) == pod_network, (
        f"node-1's records after the boot: {[(r['namespace'], r['name'], r['ips']) for r in records]}; its pods: {pod_network}"
    )
