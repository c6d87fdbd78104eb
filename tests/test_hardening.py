"""Faults injected into a running node: the enforcer killed at random points
while policies change, the kernel refusing transactions, CNI storms with
enforcer restarts. Nothing enforced may be lost and nothing may open: the
kernel holds the old ruleset or the new one, never a mixture; a continuous
probe at a protected pod never gets through.

Real enforcers and packets on the bed of conftest.py (node-1: x/a, x/b, y/b;
node-2: y/a, z/c). Counts are printed for README's results table.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import threading
import time
import uuid

import pytest

from builders import policy
from enforcer.registrations import record_interfaces
from cni.records import read_all_records
from enforcer.testbed.simulation import HEALTH_PORT, SimulatedPod, in_ns, sh, wait_until
from rules.drift import table_drift
from rules.load import state_from_objects
from rules.nft import Table
from rules.nft_json import table_from_json
from rules.translate import desired_ruleset

pytestmark = pytest.mark.kernel

KILLS = 24
PROTECT_A = policy(
    "x/protect-a",
    {
        "podSelector": {"matchLabels": {"app": "a"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}],
    },
)


def big_block_policy(i: int) -> dict:
    """An allow with a large ipBlock (thousands of intervals): its new set is
    preloaded in steps, so a kill can land between them or mid-switch."""
    excepts = [f"172.{16 + i % 8}.{j // 256}.{j % 256}/32" for j in range(0, 12000, 2)]
    return policy(
        f"x/big-{i}",
        {
            "podSelector": {"matchLabels": {"app": "a"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"ipBlock": {"cidr": f"172.{16 + i % 8}.0.0/16", "except": excepts}}], "ports": [{"port": 8000 + i}]}
            ],
        },
    )


def variant(i: int) -> list[dict]:
    """Policy sets that all keep y/b out of x/a port 80, and change a lot else."""
    extra = [big_block_policy(i)] if i % 2 == 0 else []
    ports = [{"port": 80}, {"port": 7000 + i}] if i % 3 else []
    return [
        PROTECT_A,
        *extra,
        policy(
            f"x/b-egress-{i % 3}",
            {
                "podSelector": {"matchLabels": {"app": "b"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {}}], **({"ports": ports} if ports else {})}],
            },
        ),
    ]


# --- reading the kernel ----------------------------------------------------------


def live_table(node, family: str) -> Table | None:
    listed = in_ns(node.netns, "nft", "-j", "list", "table", family, "nftpolicy")
    if listed.returncode != 0:
        return None
    return table_from_json(json.loads(listed.stdout)["nftables"], family, "nftpolicy")


def desired_tables(bed, node, policies: list[dict]) -> dict[str, Table]:
    """What the node's enforcer should commit for these policies, from the same inputs it reads."""
    objects = [o for o in bed.objects if o["kind"] != "NetworkPolicy"] + policies
    records, _ = read_all_records(node.state_dir)
    interfaces, _ = record_interfaces(records)
    ruleset = desired_ruleset(state_from_objects(objects), node.name, interfaces, log_group=100)
    return {t.family: t for t in ruleset.tables}


def unreferenced_extras(desired: Table, live: Table) -> list[str]:
    """Sets in the kernel that the desired table lacks and no rule refers to:
    preloaded for a switch that did not happen. They cannot change a verdict."""
    referenced = {name for chain in live.chains for rule in chain.rules for name in re.findall(r"@([\w./-]+)", rule.text())}
    return [
        line
        for line in table_drift(desired, live)
        if line.startswith("extra:") and line.split()[-2] in ("set", "map") and line.split()[-1] not in referenced
    ]


def verdict_drift(desired: Table, live: Table | None) -> list[str]:
    """Drift that can change a verdict."""
    if live is None:
        return ["missing table"]
    ignored = unreferenced_extras(desired, live)
    return [line for line in table_drift(desired, live) if line not in ignored]


class Prober:
    """Connects from ``src`` to ``dst``:80 again and again in the background; counts what got through."""

    def __init__(self, src: SimulatedPod, dst: SimulatedPod) -> None:
        self.src, self.dst = src, dst
        self.tries = self.successes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            ok = self.src.result_of(self.src.send(op="tcp", host=self.dst.ip(4), port=80, timeout=0.2))
            self.tries += 1
            self.successes += ok

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def tcp(src: SimulatedPod, host: str, port: int = 80) -> bool:
    """A connection that should work: it gets all the time a busy machine needs."""
    return src.connects(host, port)


def blocked(src: SimulatedPod, host: str, port: int = 80) -> bool:
    """A connection that should be denied gets nowhere in a probe's timeout."""
    return src.blocked(host, port)


# --- 1. crashes ------------------------------------------------------------------


def test_sigkill_at_random_points_leaves_the_old_or_the_new_ruleset_and_never_opens_a_protected_pod(bed) -> None:
    node = bed.nodes[0]
    a, b, y_b = bed.pod("x/a"), bed.pod("x/b"), bed.pod("y/b")
    rng = random.Random(8)
    bed.apply_policies(*variant(0))
    bed.wait_converged()
    previous = variant(0)
    outcomes = {"old": 0, "new": 0, "between preload and switch": 0}
    with Prober(y_b, a) as attacker:
        for i in range(1, KILLS + 1):
            policies = variant(i)
            bed.apply_policies(*policies)
            time.sleep(rng.uniform(0.05, 0.45))  # file poll 0.1 s, then parse, render, preload, switch
            node.stop_enforcer(signal.SIGKILL)
            old, new = desired_tables(bed, node, previous), desired_tables(bed, node, policies)
            live = {family: live_table(node, family) for family in ("inet", "bridge")}
            matches = [
                name for name, want in (("new", new), ("old", old)) if all(not verdict_drift(want[f], live[f]) for f in want)
            ]
            assert matches, f"kill {i}: the kernel holds neither the old nor the new ruleset:\n" + "\n".join(
                verdict_drift(new["inet"], live["inet"])
            )
            outcomes[matches[0]] += 1
            preloaded_only = matches[0] == "old" and unreferenced_extras(old["inet"], live["inet"])
            outcomes["between preload and switch"] += bool(preloaded_only)
            node.start_enforcer()
            node.wait_converged()
            previous = policies
    print(
        f"\nSIGKILL x{KILLS}: kernel held the new ruleset {outcomes['new']} times, the old one {outcomes['old']} times "
        f"({outcomes['between preload and switch']} of them killed between preloading sets and the switch), "
        f"a mixture 0 times; attacker probes {attacker.tries}, through {attacker.successes}"
    )
    assert attacker.tries > 20 and attacker.successes == 0
    assert tcp(b, a.ip(4)), "control: the allowed peer still gets through"


# --- 4. kernel refusals ---------------------------------------------------------


def metric(node, name: str) -> float:
    body = in_ns(node.netns, "curl", "-s", f"http://127.0.0.1:{HEALTH_PORT}/metrics").stdout
    return float(next(line.split()[-1] for line in body.splitlines() if line.startswith(name + " ")))


def ready(node) -> bool:
    return (
        in_ns(node.netns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{HEALTH_PORT}/readyz").stdout
        == "200"
    )


def test_a_transaction_the_kernel_refuses_is_retried_with_backoff_and_the_previous_ruleset_stays(bed) -> None:
    """Another process takes our bridge table name with the `owner` flag: the
    kernel refuses every transaction that touches it (EPERM) for as long as
    that process lives."""
    node = bed.nodes[0]
    a, b, y_b = bed.pod("x/a"), bed.pod("x/b"), bed.pod("y/b")
    bed.apply_policies(PROTECT_A)
    bed.wait_converged()
    inet_before = live_table(node, "inet")
    failures_before = metric(node, "nftpolicy_sync_failures_total")
    log_start = len(node.log())
    node.nft("delete", "table", "bridge", "nftpolicy")
    rogue = subprocess.Popen(
        ["ip", "netns", "exec", node.netns, "nft", "-i"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        rogue.stdin.write("add table bridge nftpolicy { flags owner ; }\n")
        rogue.stdin.flush()

        # Drift is found within a second, then retries back off: 0.2, 0.4, 0.8, 1.6 s...
        def refusals() -> list[str]:
            lines = node.log()[log_start:].splitlines()
            return [line for line in lines if "sync failed, previous ruleset stays in force" in line or "retrying in" in line]

        def four_refusals() -> list[str] | None:
            lines = refusals()
            return lines if sum("retrying in" in line for line in lines) >= 4 else None

        lines = wait_until("four refused syncs", four_refusals)
        failed = [line for line in lines if "sync failed" in line]
        # The kernel refuses writes to the owned table (EPERM), and nft 1.0.6 cannot even list it as JSON.
        assert all("bridge nftpolicy" in line or "Operation not permitted" in line for line in failed)
        delays = [float(line.rsplit("retrying in ", 1)[1].split()[0]) for line in lines if "retrying in" in line]
        assert delays[:4] == [0.2, 0.4, 0.8, 1.6], f"retries back off: {delays}"
        stamps = [time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000 for line in failed]
        gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
        # However busy the machine, no retry comes before its backoff (log stamps are to the millisecond).
        assert all(gap >= delay - 0.002 for gap, delay in zip(gaps, delays)), f"retry gaps {gaps} vs backoff {delays}"
        assert metric(node, "nftpolicy_sync_failures_total") >= failures_before + 3
        assert not ready(node)
        assert not verdict_drift(inet_before, live_table(node, "inet")), "the policy table stays as it was"
        assert blocked(y_b, a.ip(4)) and tcp(b, a.ip(4))
    finally:
        rogue.stdin.close()
        rogue.wait(5)
    node.wait_converged()
    wait_until("ready again once the kernel accepts", lambda: ready(node), poll=0.2)
    assert "pod-ports" in node.nft("list", "table", "bridge", "nftpolicy")
    print(
        f"\nkernel refusal (table owned by another process): {len(failed)} refused syncs, retry gaps "
        f"{', '.join(f'{g:.1f}' for g in gaps)} s; policy table unchanged; converged after release"
    )


def test_objects_planted_under_our_names_are_refused_once_then_replaced_atomically(bed) -> None:
    """A set of the name the next policy needs, but of another type, planted by hand."""
    node = bed.nodes[0]
    a, b, y_b = bed.pod("x/a"), bed.pod("x/b"), bed.pod("y/b")
    bed.apply_policies(PROTECT_A)
    bed.wait_converged()
    failures_before = metric(node, "nftpolicy_sync_failures_total")
    allow_y = policy(
        "x/allow-y",
        {
            "podSelector": {"matchLabels": {"app": "a"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}],
        },
    )
    wanted = desired_tables(bed, node, [PROTECT_A, allow_y])["inet"]
    before = {s.name for s in live_table(node, "inet").sets}
    new_set = next(s.name for s in wanted.sets if s.name not in before and s.name.endswith("-v4"))
    assert blocked(y_b, a.ip(4))
    node.nft("add", "set", "inet", "nftpolicy", new_set, "{ type ipv6_addr ; }")
    bed.apply_policies(PROTECT_A, allow_y)  # before the verifier's next look finds the plant
    bed.wait_converged()
    assert metric(node, "nftpolicy_sync_failures_total") >= failures_before + 1, node.log()[-2000:]
    assert not verdict_drift(wanted, live_table(node, "inet"))
    assert tcp(y_b, a.ip(4)) and tcp(b, a.ip(4))


# --- 3. CNI storms ---------------------------------------------------------------


def test_a_storm_of_200_concurrent_adds_and_dels_with_enforcer_restarts_leaks_nothing(bed) -> None:
    node = bed.nodes[0]
    bed.namespace("storm")
    deny = policy("storm/deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
    bed.apply_policies(deny)
    bed.wait_converged()
    pods = [
        SimulatedPod("storm", f"s{i}", node, f"{bed.prefix}-s{next(bed.counter)}", uuid.uuid4().hex, {"app": "storm"}, [])
        for i in range(200)
    ]
    for pod in pods:
        sh("ip", "netns", "add", pod.netns)
    errors: list[str] = []

    def add(pod: SimulatedPod) -> None:
        try:
            node.run_conflist("ADD", pod)
            node.pods[pod.key] = pod
        except Exception as e:  # noqa: BLE001 - collected and asserted on below
            errors.append(f"ADD {pod.key}: {e}")

    def delete(pod: SimulatedPod) -> None:
        try:
            node.run_conflist("DEL", pod)
            node.pods.pop(pod.key, None)
        except Exception as e:  # noqa: BLE001
            errors.append(f"DEL {pod.key}: {e}")

    def storm(action, batch: list[SimulatedPod]) -> None:
        threads = [threading.Thread(target=action, args=(p,)) for p in batch]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)

    try:
        storm(add, pods[:100])
        node.stop_enforcer(signal.SIGKILL)
        node.start_enforcer()
        storm(add, pods[100:])
        node.stop_enforcer(signal.SIGKILL)
        node.start_enforcer()
        storm(delete, pods[::2])  # 100 DELs while the restarted enforcer takes over
        assert not errors, errors[:5]
        live = [p for p in pods if p.key in node.pods]
        bed.publish()
        node.wait_converged()

        records, problems = read_all_records(node.state_dir)
        storm_records = {r.container_id for r in records if r.namespace == "storm"}
        assert not problems and storm_records == {p.container_id for p in live}, "one record per live container, no leak"
        bridge, inet = live_table(node, "bridge"), live_table(node, "inet")
        ports = {e.value for e in bridge.set("pod-ports").elements}
        gone = [p for p in pods if p not in live]
        assert {p.host_ifname for p in live} <= ports and not {p.host_ifname for p in gone} & ports, "no stale port"
        isolated = {str(key) for key, _ in inet.set("ingress-pods-v4").elements}
        live_ips = {p.ip(4) for p in live}
        assert live_ips <= isolated, "every live pod isolated"
        assert not {p.ip(4) for p in gone} - live_ips & isolated, "no element of a deleted pod stays"

        # GC: the runtime lists the containers it still has; records of the others go.
        ghost = read_all_records(node.state_dir)[0][0]._replace(
            container_id="ghost" + uuid.uuid4().hex[:8], namespace="storm", name="ghost"
        )
        from cni.records import write_record

        write_record(node.state_dir, ghost)
        valid = [
            {"containerID": r.container_id, "ifname": "eth0"} for r in read_all_records(node.state_dir)[0] if r.name != "ghost"
        ]
        gc = {
            "cniVersion": "1.1.0",
            "name": "podnet",
            "type": "nftpolicy",
            "stateDir": str(node.state_dir),
            "socket": str(node.socket),
            "cni.dev/valid-attachments": valid,
        }
        result = sh(
            "ip",
            "netns",
            "exec",
            node.netns,
            str(bed.cni_bin / "nftpolicy"),
            input=json.dumps(gc),
            env={"CNI_COMMAND": "GC", "CNI_PATH": str(bed.cni_bin), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ghost" not in {r.name for r in read_all_records(node.state_dir)[0]}
        print(
            f"\nCNI storm: 200 concurrent ADDs and 100 DELs across 2 SIGKILL restarts: {len(live)} live, "
            f"{len(storm_records)} records, 0 stale ports or elements; GC removed 1 ghost record"
        )
    finally:
        for pod in pods:
            if pod.key in node.pods:
                delete(pod)
            sh("ip", "netns", "delete", pod.netns, check=False)
        bed.apply_policies()
        bed.wait_converged()
