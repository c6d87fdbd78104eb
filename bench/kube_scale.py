#!/usr/bin/env python3
"""Convergence, start-up and memory of the enforcer at scale, through a real
kube-apiserver (built by scripts/build-kube), on one simulated node.

    sudo .venv/bin/python bench/kube_scale.py [--pods 10000 --policies 1000 --namespaces 100 --rounds 30]

Set-up: a test bed node in a network namespace (real bridge CNI), etcd and
kube-apiserver in another (tests/kube.py). The cluster state of
tests/scale.py (deployments, a default deny per namespace, allows by
namespace and pod labels, ipBlocks, named ports; 20 pods on the node under
test, the rest on other nodes) is written by a bulk loader (bench/kube_bulk.py:
creates, then each pod's status.podIPs patched as a kubelet does). Two real
pods, probe/a (protected) and probe/b (client), are added on the node by CNI
afterwards. The enforcer runs with the DaemonSet's settings (the product
defaults: --verify-interval 60, no denied-flow log), not the test bed's
(--verify-interval 1, --log-group), against the API with the least-privilege
ServiceAccount of manifests/base/rbac.yaml.

Measured, with the issue's target beside each figure:
1. cold start: enforcer started on an empty kernel until its first commit
   (status.json written), wall time and its CPU seconds (/proc/PID/stat) at
   that moment; the size of that transaction.
2. memory: VmRSS after convergence and again after all the changes below,
   VmHWM (peak) at the end.
3. policy change: an allow policy selecting a local pod has a port toggled
   (merge patch); per change the enforcer's own "change seen -> committed"
   (the watch event reaching its cache to the kernel commit, from its log)
   and the API write's return to the commit (status.json shows the write's
   resourceVersion, which it writes right after the commit).
4. pod label change: a remote pod leaves and rejoins a peer set of that
   policy (its app label toggled); same two figures.
5. kubectl apply -> probe: probe/a's policy alternately allows and denies
   probe/b, by ``kubectl apply``; probe/b connects every 20 ms (a denied
   attempt takes its 20 ms timeout) until it sees the new verdict.
6. new remote pod IP: a remote pod that the policy names as a peer is
   created, then its IP patched in; the status patch's return to the
   element appearing in the kernel (``nft monitor`` in the node).
7. no-op changes: an annotation on a remote pod (the enforcer's cache keeps
   nothing that changed: no sync expected) and a new namespace no selector
   names (a full re-render whose plan must write nothing).
Then /metrics' nftpolicy_change_commit_seconds, and a restart with the
tables in place.

Baselines, same run, same state: for every kernel figure, the bare commit
of the very transaction the enforcer commits: rendered offline from a list
of the same API objects with the enforcer's own functions (rules.translate,
rules.plan), applied with libnftables into a scratch network namespace
holding the same ruleset (its command count is printed beside the
enforcer's, so a mismatch would show). That is the kernel's floor for each
change; the rest of the enforcer's time is its own (state build, render,
plan), also timed offline and printed under "where the time goes". For cold
start also the API list of all objects (paged, as the enforcer lists). For
apply -> probe, ``kubectl apply`` itself. For memory, a Python interpreter
with the enforcer's imports and nothing loaded.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from cni_overhead import p99  # noqa: E402
from kube_bulk import Api, load, netns_executor, status_patch  # noqa: E402
from enforcer.registrations import record_interfaces  # noqa: E402
from cni.records import read_all_records  # noqa: E402
from enforcer.testbed.simulation import HEALTH_PORT, PYTHON, SimulatedNode, SimulatedPod, Testbed, in_ns, sh  # noqa: E402
from kube import ApiCluster, ControlPlane  # noqa: E402
from rules.load import parse_namespace, parse_network_policy, parse_pod  # noqa: E402
from rules.model import ClusterState  # noqa: E402
from rules.nft import Ruleset  # noqa: E402
from rules.plan import plan, preload  # noqa: E402
from rules.translate import RenderMemo, desired_ruleset  # noqa: E402
from scale import NODE, scaled_objects  # noqa: E402

PROBE_NS = "probe"
NEW_IP_BASE = "10.200"  # remote pods made by the benchmark; the scale state uses 10.64.0.0/10
SYNC_LINE = re.compile(r"sync (\d+): (\d+) commands in ([\d.]+) ms(?:, change seen -> committed ([\d.]+) ms)?")


# --- the cluster state -----------------------------------------------------------


def cluster_objects(pods: int, policies: int, namespaces: int, node: str) -> list[dict]:
    """tests/scale.py's state with its local pods on ``node`` and remote ones on nodes called remote-N."""
    objects = scaled_objects(pods, policies, namespaces=namespaces)
    for obj in objects:
        if obj["kind"] == "Pod":
            name = obj["spec"]["nodeName"]
            obj["spec"]["nodeName"] = node if name == NODE else f"remote-{name}"
    return objects


@dataclass
class Scenario:
    """What the change measurements touch: an allow policy selecting a local pod,
    the app its first ingress peer names, and a remote pod of that app."""

    policy: dict
    peer_namespace: str
    peer_app: str
    remote_pod: dict


def scenario(objects: list[dict], node: str) -> Scenario:
    pods = [o for o in objects if o["kind"] == "Pod"]
    local_apps = {(p["metadata"]["namespace"], p["metadata"]["labels"]["app"]) for p in pods if p["spec"]["nodeName"] == node}
    policy = next(
        o
        for o in objects
        if o["kind"] == "NetworkPolicy"
        and o["metadata"]["name"].startswith("allow-")
        and (o["metadata"]["namespace"], o["spec"]["podSelector"]["matchLabels"]["app"]) in local_apps
    )
    peer_app = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app"]
    remote = next(p for p in pods if p["metadata"]["labels"]["app"] == peer_app and p["spec"]["nodeName"] != node)
    return Scenario(policy, remote["metadata"]["namespace"], peer_app, remote)


def with_port(policy: dict, port: int) -> dict:
    """A merge patch setting the policy's first ingress rule's numeric port to ``port``."""
    ingress = copy.deepcopy(policy["spec"]["ingress"])
    ingress[0]["ports"][1]["port"] = port
    return {"spec": {"ingress": ingress}}


def probe_policy(allowed_app: str) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": PROBE_NS, "name": "a-from"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "a"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": allowed_app}}}], "ports": [{"port": 80}]}],
        },
    }


# --- the enforcer under test ---------------------------------------------------------


@dataclass
class Sync:
    number: int
    commands: int
    ms: float
    seen_to_commit_ms: float | None


class EnforcerProcess:
    """The node's enforcer, started as the DaemonSet runs it; its log, status and /proc."""

    def __init__(self, node: SimulatedNode, verify_interval: float) -> None:
        self.node = node
        self.verify_interval = verify_interval
        self.log_path = node.dir / "enforcer.log"
        self.started_at = 0  # log offset where this run's lines begin
        self.started_wall = 0.0
        self._offset = 0  # log offset read up to

    def start(self) -> None:
        self.log_path.touch()
        self.started_at = self._offset = self.log_path.stat().st_size
        self.started_wall = time.time()
        with open(self.log_path, "a") as log:
            self.node.enforcer = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.node.netns,
                    PYTHON,
                    "-m",
                    "enforcer",
                    "enforce",
                    "--node",
                    self.node.name,
                    *self.node.bed.cluster.enforcer_args(),
                    "--state-dir",
                    str(self.node.state_dir),
                    "--socket",
                    str(self.node.socket),
                    "--health-port",
                    str(HEALTH_PORT),
                    "--verify-interval",
                    str(self.verify_interval),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        self.node.stop_enforcer(signal.SIGTERM)

    @property
    def pid(self) -> int:
        assert self.node.enforcer is not None
        return self.node.enforcer.pid  # ip netns exec execs the enforcer: the same process (status.json says so)

    def _status(self) -> dict:
        status = self.node.status()
        return status if status.get("pid") == self.pid else {}

    def wait_first_commit(self, timeout: float = 300) -> float:
        """Poll status.json until this process committed once; the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while self._status().get("syncs", 0) < 1:
            if time.monotonic() > deadline or self.node.enforcer.poll() is not None:
                raise RuntimeError(f"enforcer did not commit:\n{self.tail()}")
            time.sleep(0.005)
        return time.monotonic()

    def seen(self, kind: str) -> int:
        """The newest resourceVersion of ``kind`` that the status says is in force."""
        return json.loads(self._status().get("source") or "{}").get(kind, 0)

    def wait_seen(self, kind: str, rv: int, timeout: float = 60) -> float:
        """Poll status.json until it shows ``rv``; the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while self.seen(kind) < rv:
            if time.monotonic() > deadline:
                raise TimeoutError(f"enforcer did not show {kind} {rv}:\n{self.tail()}")
            time.sleep(0.002)
        return time.monotonic()

    def syncs(self) -> list[Sync]:
        """Sync lines logged since the last call (or the start)."""
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        data = data[: data.rfind(b"\n") + 1]
        self._offset += len(data)
        return [Sync(int(m[1]), int(m[2]), float(m[3]), float(m[4]) if m[4] else None) for m in SYNC_LINE.finditer(data.decode())]

    def timeline(self) -> list[tuple[float, str]]:
        """(seconds since start, message) for each log line of this run."""
        with open(self.log_path, "rb") as f:
            f.seek(self.started_at)
            lines = f.read().decode().splitlines()
        out = []
        for line in lines:
            try:
                at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
            out.append((at - self.started_wall, line[24:].strip()))
        return out

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def memory_mib(self) -> dict[str, float]:
        """VmRSS and VmHWM (peak RSS)."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values

    def tail(self) -> str:
        return self.log_path.read_text()[-3000:]

    def metrics(self) -> str:
        return in_ns(self.node.netns, "curl", "-s", "--max-time", "30", f"http://127.0.0.1:{HEALTH_PORT}/metrics").stdout


def baseline_rss_mib() -> float:
    """RSS of a Python interpreter that imported what the enforcer imports, with nothing loaded."""
    code = (
        "import enforcer.cli, enforcer.sources.kubernetes, enforcer.daemon, enforcer.observability.health, enforcer.node.cni_server, "
        "enforcer.node.conntrack, enforcer.node.netlink, enforcer.observability.metrics; "
        "from enforcer.kernel.nftables import NftablesKernel; NftablesKernel(); "
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0])"
    )
    return int(sh(PYTHON, "-c", code).stdout.strip()) / 1024


class KernelMonitor:
    """``nft monitor new elements`` in the node: when each new set element reached the kernel."""

    def __init__(self, netns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "nft", "monitor", "new", "elements"], stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def __enter__(self) -> "KernelMonitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        self.proc.wait()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append((time.monotonic(), line))
                self._cond.notify_all()

    def wait_for(self, ip: str, timeout: float = 30) -> float:
        """The monotonic time a line naming ``ip`` arrived."""
        pattern = re.compile(rf"(?<![\d.]){re.escape(ip)}(?![\d.])")
        with self._cond:
            found = self._cond.wait_for(
                lambda: next((t for t, line in self.lines if pattern.search(line)), None), timeout=timeout
            )
        if found is None:
            raise TimeoutError(f"{ip} did not reach the kernel")
        return found


# --- offline: the same render, plan and commit without the enforcer ---------------------------


PARSERS = {"Namespace": parse_namespace, "Pod": parse_pod, "NetworkPolicy": parse_network_policy}
Key = tuple[str, str, str]  # kind, namespace, name


def key_of(obj: dict) -> Key:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def parsed(objects: list[dict]) -> dict[Key, Any]:
    return {key_of(o): PARSERS[o["kind"]](o) for o in objects}


def build_state(cache: dict[Key, Any]) -> tuple[ClusterState, float]:
    """The state as the enforcer's API source builds it from its cache on each change; and seconds taken."""
    started = time.perf_counter()
    kinds: dict[str, list] = {kind: [] for kind in PARSERS}
    for (kind, _, _), obj in cache.items():
        kinds[kind].append(obj)
    state = ClusterState.build(kinds["Namespace"], kinds["Pod"], kinds["NetworkPolicy"])
    return state, time.perf_counter() - started


def cold_transactions(ruleset: Ruleset) -> list[str]:
    """What the enforcer commits on an empty kernel: preloads of large new sets, then the switch."""
    steps, switch = [], []
    for table in ruleset.tables:
        preloads, current = preload(table, None)
        steps += [step.text() for step in preloads]
        switch.append(plan(table, current).text())
    return steps + ["".join(switch)]


def change_transaction(before: Ruleset, after: Ruleset) -> str:
    old = {(t.family, t.name): t for t in before.tables}
    return "".join(plan(t, old.get((t.family, t.name))).text() for t in after.tables)


def _new_nft() -> Any:
    import nftables

    nft = nftables.Nftables()
    nft.set_handle_output(False)
    return nft


def _commit(nft: Any, script: str) -> float:
    started = time.perf_counter()
    rc, _, err = nft.cmd(script)
    elapsed = time.perf_counter() - started
    if rc != 0:
        raise RuntimeError(f"scratch commit failed: {err.strip()[:2000]}")
    return elapsed


@dataclass
class Floor:
    """A change done offline: its transaction's size, the bare commit of it, and the enforcer's own steps."""

    commands: int
    commit: list[float]
    build: list[float]
    render: list[float]
    plan: list[float]

    @property
    def own(self) -> list[float]:
        """State build + render + plan: the enforcer's work besides the commit."""
        return [sum(x) for x in zip(self.build, self.render, self.plan)]


class Offline:
    """The enforcer's state build, render and plan, run here on a list of the same
    API objects (parsed once: unchanged objects keep their identity across
    changes, as in the enforcer's cache, so the render memo hits as it
    does there); the transactions committed with libnftables into a scratch
    network namespace that holds the same ruleset."""

    def __init__(self, bed: Testbed, node: SimulatedNode, objects: list[dict]) -> None:
        self.node = node
        self.netns = f"{bed.prefix}-scratch"  # removed with the bed at the latest
        sh("ip", "netns", "add", self.netns)
        self.pool = netns_executor(self.netns, 1)
        self.nft = self.pool.submit(_new_nft).result()
        self.interfaces = record_interfaces(read_all_records(node.state_dir)[0])[0]
        self.cache = parsed(objects)
        self.memo = RenderMemo()
        self.state, self.build_seconds = build_state(self.cache)
        started = time.perf_counter()
        self.ruleset = self.render(self.state)
        self.render_seconds = time.perf_counter() - started

    def close(self) -> None:
        self.pool.shutdown()
        sh("ip", "netns", "delete", self.netns, check=False)

    def render(self, state: ClusterState) -> Ruleset:
        return desired_ruleset(state, self.node.name, self.interfaces, None, self.memo)

    def commit(self, script: str) -> float:
        return self.pool.submit(_commit, self.nft, script).result() if script else 0.0

    def cold(self) -> tuple[int, float]:
        """Load the ruleset into the empty scratch namespace: commands and seconds."""
        scripts = cold_transactions(self.ruleset)
        return sum(s.count("\n") for s in scripts), sum(self.commit(s) for s in scripts)

    def change(self, changed: list[dict], rounds: int) -> Floor:
        """Apply ``changed`` objects (new or replacing) and undo them, ``rounds`` times in all, as the enforcer would."""
        floor = Floor(0, [], [], [], [])
        caches = [{**self.cache, **parsed(changed)}, self.cache]
        current = self.ruleset
        for i in range(rounds):
            state, built = build_state(caches[i % 2])
            started = time.perf_counter()
            desired = self.render(state)
            rendered = time.perf_counter()
            script = change_transaction(current, desired)
            planned = time.perf_counter()
            floor.build.append(built)
            floor.render.append(rendered - started)
            floor.plan.append(planned - rendered)
            floor.commit.append(self.commit(script))
            floor.commands = max(floor.commands, script.count("\n"))
            current = desired
        if rounds % 2:
            self.commit(change_transaction(current, self.render(self.state)))
        return floor


def changed_copy(objects: list[dict], target: dict, change: Callable[[dict], None]) -> dict:
    """A changed copy of the listed object that is ``target`` (same kind, namespace and name)."""
    obj = copy.deepcopy(next(o for o in objects if key_of(o) == key_of(target)))
    change(obj)
    return obj


def new_remote_pod(s: Scenario, i: int) -> dict:
    """A remote pod that ``s.policy`` names as a peer, with a fresh IP."""
    return {
        "kind": "Pod",
        "metadata": {"namespace": s.peer_namespace, "name": f"bench-new-{i}", "labels": {"app": s.peer_app}},
        "spec": {"nodeName": "remote-bench", "containers": [{"name": "main"}]},
        "status": {"phase": "Running", "podIPs": [{"ip": f"{NEW_IP_BASE}.{i // 250}.{i % 250 + 1}"}]},
    }


def floors(offline: Offline, listed: list[dict], s: Scenario, rounds: int) -> dict[str, Floor]:
    """The bare commits (and offline steps) of each kind of change measured on the enforcer."""

    def set_port(obj: dict) -> None:
        obj["spec"]["ingress"][0]["ports"][1]["port"] = 9101

    def move(obj: dict) -> None:
        obj["metadata"]["labels"]["app"] = f"{s.peer_app}-moved"

    return {
        "policy": offline.change([changed_copy(listed, s.policy, set_port)], rounds),
        "label": offline.change([changed_copy(listed, s.remote_pod, move)], rounds),
        "new IP": offline.change([new_remote_pod(s, 9999)], rounds),
        "no-op": offline.change([{"kind": "Namespace", "metadata": {"name": "bench-noop-offline"}}], rounds),
    }


# --- measurements on the enforcer ----------------------------------------------------------


@dataclass
class Rounds:
    """Per change: the enforcer's own change seen -> committed, and the API write's return -> committed."""

    seen_to_commit: list[float]
    write_to_commit: list[float]
    commands: list[int]
    sync_ms: list[float]


def measure(
    enforcer: EnforcerProcess,
    kind: str,
    writes: list[Callable[[], tuple[int, float]]],
    committed: Callable[[int], float] | None = None,
) -> Rounds:
    """Make each write, wait until it is committed (status.json shows its
    resourceVersion, or ``committed``), read the sync it caused from the log."""
    out = Rounds([], [], [], [])
    for write in writes:
        enforcer.syncs()
        rv, returned = write()
        done = committed(rv) if committed else enforcer.wait_seen(kind, rv)
        enforcer.wait_seen(kind, rv)
        syncs = [s for s in enforcer.syncs() if s.seen_to_commit_ms is not None]
        if not syncs:
            raise RuntimeError(f"{kind} change {rv} committed without a sync line:\n{enforcer.tail()}")
        out.write_to_commit.append(done - returned)
        out.seen_to_commit.append(syncs[-1].seen_to_commit_ms / 1000)
        out.commands.append(syncs[-1].commands)
        out.sync_ms.append(syncs[-1].ms)
        time.sleep(0.05)
    return out


def policy_rounds(api: Api, enforcer: EnforcerProcess, s: Scenario, rounds: int) -> Rounds:
    writes = [lambda i=i: api.patch(s.policy, with_port(s.policy, 9101 if i % 2 == 0 else 9100)) for i in range(rounds)]
    result = measure(enforcer, "NetworkPolicy", writes)
    if rounds % 2:
        enforcer.wait_seen("NetworkPolicy", api.patch(s.policy, with_port(s.policy, 9100))[0])
    return result


def label_rounds(api: Api, enforcer: EnforcerProcess, s: Scenario, rounds: int) -> Rounds:
    def labelled(app: str) -> dict:
        return {"metadata": {"labels": {"app": app}}}

    writes = [
        lambda i=i: api.patch(s.remote_pod, labelled(f"{s.peer_app}-moved" if i % 2 == 0 else s.peer_app)) for i in range(rounds)
    ]
    result = measure(enforcer, "Pod", writes)
    if rounds % 2:
        enforcer.wait_seen("Pod", api.patch(s.remote_pod, labelled(s.peer_app))[0])
    return result


def new_ip_rounds(api: Api, enforcer: EnforcerProcess, s: Scenario, rounds: int) -> Rounds:
    """Create each pod (no IP yet) unmeasured, then time its IP patch to the element in the kernel."""
    pods = [new_remote_pod(s, i) for i in range(rounds)]
    with KernelMonitor(enforcer.node.netns) as monitor:

        def patch_ip(pod: dict) -> tuple[int, float]:
            enforcer.wait_seen("Pod", api.create(pod)[0])
            enforcer.syncs()
            return api.patch(pod, status_patch(pod), "status")

        def in_kernel(pod: dict) -> Callable[[int], float]:
            return lambda rv: monitor.wait_for(pod["status"]["podIPs"][0]["ip"])

        out = Rounds([], [], [], [])
        for pod in pods:
            one = measure(enforcer, "Pod", [lambda pod=pod: patch_ip(pod)], in_kernel(pod))
            for field in ("seen_to_commit", "write_to_commit", "commands", "sync_ms"):
                getattr(out, field).extend(getattr(one, field))
    return out


@dataclass
class Probes:
    apply: list[float]  # kubectl apply itself
    to_probe: list[float]  # apply started -> a probe saw the new verdict


def probe_rounds(cp: ControlPlane, a: SimulatedPod, b: SimulatedPod, rounds: int) -> Probes:
    """Alternately allow and deny b -> a:80 by kubectl apply; b probes every 20 ms until it sees the change."""
    out = Probes([], [])
    for i in range(rounds):
        opening = i % 2 == 0
        started = time.monotonic()
        cp.apply(probe_policy("b" if opening else "nobody"))
        out.apply.append(time.monotonic() - started)
        deadline = time.monotonic() + 30
        while b.result_of(b.send(op="tcp", host=a.ip(4), port=80, timeout=0.02)) != opening:
            if time.monotonic() > deadline:
                raise TimeoutError(f"b -> a never became {'allowed' if opening else 'denied'}")
        out.to_probe.append(time.monotonic() - started)
        time.sleep(0.05)
    if rounds % 2:
        cp.apply(probe_policy("nobody"))
    return out


@dataclass
class NoOps:
    syncs: list[int]  # syncs each change caused
    commands: list[int]  # commands each of those syncs wrote
    sync_ms: list[float]
    write_to_status: list[float]  # API write returned -> status.json shows it


def noop_rounds(enforcer: EnforcerProcess, writes: list[Callable[[], tuple[int, float]]], kind: str) -> NoOps:
    out = NoOps([], [], [], [])
    for write in writes:
        enforcer.syncs()
        rv, returned = write()
        out.write_to_status.append(enforcer.wait_seen(kind, rv) - returned)
        syncs = enforcer.syncs()
        out.syncs.append(len(syncs))
        out.commands += [s.commands for s in syncs]
        out.sync_ms += [s.ms for s in syncs]
        time.sleep(0.05)
    return out


def annotation_rounds(api: Api, enforcer: EnforcerProcess, s: Scenario, rounds: int) -> NoOps:
    return noop_rounds(
        enforcer,
        [lambda i=i: api.patch(s.remote_pod, {"metadata": {"annotations": {"bench/touch": str(i)}}}) for i in range(rounds)],
        "Pod",
    )


def namespace_rounds(api: Api, enforcer: EnforcerProcess, rounds: int) -> NoOps:
    return noop_rounds(
        enforcer,
        [lambda i=i: api.create({"kind": "Namespace", "metadata": {"name": f"bench-noop-{i}"}}) for i in range(rounds)],
        "Namespace",
    )


@dataclass
class Start:
    wall: float  # process start -> first commit
    cpu: float  # the enforcer's CPU seconds then
    commands: int  # size of the first sync's transactions
    sync_ms: float  # the first sync itself (render, plan, commit)
    memory: dict[str, float]
    timeline: list[tuple[float, str]]


def start(enforcer: EnforcerProcess) -> Start:
    """Start the enforcer and wait for its first commit."""
    started = time.monotonic()
    enforcer.start()
    committed = enforcer.wait_first_commit()
    cpu, memory = enforcer.cpu_seconds(), enforcer.memory_mib()
    first = enforcer.syncs()[0]
    return Start(committed - started, cpu, first.commands, first.ms, memory, enforcer.timeline())


# --- the report -------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def pcts(values: list[float]) -> str:
    return f"p50 {ms(statistics.median(values))}  p99 {ms(p99(values))}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


class Report:
    def __init__(self) -> None:
        self.targets: list[str] = []

    def section(self, title: str) -> None:
        print(f"\n== {title}")

    def line(self, text: str) -> None:
        print(f"  {text}")

    def target(self, what: str, measured: str, goal: str, ok: bool) -> None:
        self.line(f"target {goal}: {verdict(ok)}")
        self.targets.append(f"  {verdict(ok)}  {what:<50} {measured:<26} target {goal}")

    def rounds(self, title: str, short: str, r: Rounds, floor: Floor, targets: list[tuple[str, float, float]]) -> None:
        """``targets``: (which figure: "seen" or "write", quantile, seconds)."""
        self.section(f"{title}: {len(r.seen_to_commit)} changes")
        self.line(f"{'enforcer: change seen -> committed':<44} {pcts(r.seen_to_commit)}")
        self.line(f"{'API write returned -> committed':<44} {pcts(r.write_to_commit)}")
        self.line(f"{'enforcer sync (render + plan + commit)':<44} {pcts([x / 1000 for x in r.sync_ms])}")
        self.line(
            f"{'baseline: bare commit of the same transaction':<44} {pcts(floor.commit)}  "
            f"({floor.commands} commands offline, enforcer {sorted(set(r.commands))})"
        )
        self.line(
            f"ratio seen -> committed / bare commit: p50 {statistics.median(r.seen_to_commit) / statistics.median(floor.commit):.1f}x"
        )
        self.line(
            f"offline steps, p50: state build {ms(statistics.median(floor.build))}, render {ms(statistics.median(floor.render))}, "
            f"plan {ms(statistics.median(floor.plan))}, commit {ms(statistics.median(floor.commit))}"
        )
        for which, q, goal in targets:
            values = r.seen_to_commit if which == "seen" else r.write_to_commit
            got = statistics.median(values) if q == 0.5 else p99(values)
            label = "seen -> committed" if which == "seen" else "API write -> committed"
            self.target(f"{short}: {label} p{int(q * 100)}", ms(got).strip(), f"< {goal * 1000:.0f} ms", got < goal)

    def summary(self) -> None:
        self.section("targets")
        for line in self.targets:
            print(line)


def report_start(report: Report, title: str, s: Start, api_list: float | None, floor: tuple[int, float] | None) -> None:
    report.section(title)
    report.line(f"wall, process start -> first commit   {s.wall:6.2f} s")
    report.line(f"CPU seconds of the enforcer then      {s.cpu:6.2f} s")
    report.line(f"first sync: {s.commands} commands in {s.sync_ms:.0f} ms; RSS then {s.memory['VmRSS']:.0f} MiB")
    if api_list is not None and floor is not None:
        report.line(
            f"baselines: API list of every object {api_list:.2f} s; bare commit of the same transactions "
            f"{floor[1]:.2f} s ({floor[0]} commands); sum {api_list + floor[1]:.2f} s, ratio wall / sum {s.wall / (api_list + floor[1]):.1f}x"
        )
    report.line("timeline (s since start, from the enforcer's log, up to its first sync):")
    for at, message in s.timeline or [(0.0, "(no log lines)")]:
        report.line(f"  {at:6.2f}  {message[:110]}")
        if SYNC_LINE.search(message):
            break


# --- the run --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=24, help="threads of the bulk loader")
    parser.add_argument("--verify-interval", type=float, default=60.0, help="the enforcer's (the DaemonSet's default: 60)")
    args = parser.parse_args()
    report = Report()
    with tempfile.TemporaryDirectory() as tmp, Testbed(Path(tmp) / "bed", nodes=1) as bed:
        with (
            ControlPlane(Path(tmp) / "kube", bed.add_host("api", 2), "192.168.56.2") as cp,
            Api(cp.admin_kubeconfig, cp.netns, args.workers) as api,
        ):
            bed.cluster = ApiCluster(cp)
            run(args, bed, cp, api, report)
    report.summary()


def run(args: argparse.Namespace, bed: Testbed, cp: ControlPlane, api: Api, report: Report) -> None:
    node = bed.nodes[0]
    objects = cluster_objects(args.pods, args.policies, args.namespaces, node.name)
    s = scenario(objects, node.name)
    local = sum(1 for o in objects if o["kind"] == "Pod" and o["spec"]["nodeName"] == node.name)
    print(
        f"{args.pods} pods, {args.policies} policies, {args.namespaces} namespaces; {local} of the pods on {node.name}; "
        f"loading with {args.workers} threads",
        flush=True,
    )
    steps = load(api, objects)
    report.section("load")
    report.line(f"{sum(steps.values()):.1f} s: " + ", ".join(f"{what} {t:.1f} s" for what, t in steps.items()))

    loadavg = os.getloadavg()
    enforcer = EnforcerProcess(node, args.verify_interval)
    print("cold start", flush=True)
    cold = start(enforcer)
    listed, list_seconds = api.list_all()
    offline = Offline(bed, node, listed)
    try:
        cold_floor = offline.cold()
        print("offline baselines", flush=True)
        floor = floors(offline, listed, s, args.rounds)
    finally:
        offline.close()
    report_start(report, "cold start: empty kernel -> first commit of everything", cold, list_seconds, cold_floor)
    report.line(
        f"offline: state build {offline.build_seconds * 1000:.0f} ms, first render {offline.render_seconds * 1000:.0f} ms"
    )
    report.target("cold start wall", f"{cold.wall:.2f} s", "< 3 s", cold.wall < 3)
    report.target("cold start CPU", f"{cold.cpu:.2f} CPU-s", "< 2 CPU-s", cold.cpu < 2)

    print("real pods", flush=True)
    bed.namespace(PROBE_NS)
    a = node.add_pod(f"{PROBE_NS}/a", {"app": "a"})
    b = node.add_pod(f"{PROBE_NS}/b", {"app": "b"})
    cp.apply(probe_policy("nobody"))
    node.wait_converged(timeout=60)

    rss = {"cold start": cold.memory["VmRSS"], "real pods": enforcer.memory_mib()["VmRSS"]}

    def phase(name: str, measurement: Callable[[], Any]) -> Any:
        print(name, flush=True)
        result = measurement()
        rss[name] = enforcer.memory_mib()["VmRSS"]
        return result

    policy = phase("policy changes", lambda: policy_rounds(api, enforcer, s, args.rounds))
    label = phase("pod label changes", lambda: label_rounds(api, enforcer, s, args.rounds))
    probes = phase("kubectl apply -> probe", lambda: probe_rounds(cp, a, b, args.rounds))
    new_ip = phase("new remote pod IPs", lambda: new_ip_rounds(api, enforcer, s, args.rounds))
    annotations = phase("annotations", lambda: annotation_rounds(api, enforcer, s, args.rounds))
    namespaces = phase("namespaces", lambda: namespace_rounds(api, enforcer, args.rounds))
    steady = enforcer.memory_mib()
    metrics = [line for line in enforcer.metrics().splitlines() if line.startswith("nftpolicy_change_commit_seconds")]
    print("restart with the tables in place", flush=True)
    enforcer.stop()
    restart = start(enforcer)

    report.rounds(
        "policy change (port toggled)", "policy change", policy, floor["policy"], [("seen", 0.5, 0.05), ("seen", 0.99, 0.2)]
    )
    report.rounds(
        "pod label change (remote pod leaves/joins a peer set)", "pod label change", label, floor["label"], [("seen", 0.99, 0.05)]
    )
    report.rounds(
        "new remote pod IP (status patch -> element in the kernel)",
        "new remote pod IP",
        new_ip,
        floor["new IP"],
        [("write", 0.99, 0.5)],
    )

    report.section(f"kubectl apply -> probe sees it: {args.rounds} changes, alternately allowing and denying")
    report.line(f"{'baseline: kubectl apply itself':<44} {pcts(probes.apply)}")
    report.line(f"{'apply started -> probe sees the new verdict':<44} {pcts(probes.to_probe)}")
    report.line(
        f"ratio p50 {statistics.median(probes.to_probe) / statistics.median(probes.apply):.2f}x "
        "(denials are seen by a 20 ms probe timing out: up to 20 ms of each is the probe's)"
    )
    got = p99(probes.to_probe)
    report.target("kubectl apply -> probe p99", ms(got).strip(), "< 500 ms", got < 0.5)

    report.section(f"no-op changes: {args.rounds} each")
    report.line(
        f"annotation on a remote pod: syncs caused {sum(annotations.syncs)}; write -> status shows it {pcts(annotations.write_to_status)}"
    )
    report.line(
        f"new namespace no selector names: syncs {sum(namespaces.syncs)}, commands written {sorted(set(namespaces.commands))}; "
        f"sync {pcts([x / 1000 for x in namespaces.sync_ms])}"
    )
    report.line(
        f"baseline: the same done offline (state build + render + plan) {pcts(floor['no-op'].own)}, "
        f"{floor['no-op'].commands} commands"
    )
    worst = p99([x / 1000 for x in namespaces.sync_ms])
    report.target(
        "no-op resync p99",
        ms(worst).strip() + f", {max(namespaces.commands)} commands",
        "< 300 ms, 0 commands",
        worst < 0.3 and max(namespaces.commands) == 0,
    )

    report.section("machine")
    report.line(
        f"{os.cpu_count()} cores; load average (1 min) {loadavg[0]:.1f} before the cold start, "
        f"{os.getloadavg()[0]:.1f} at the end (other work on the machine shows here)"
    )

    report.section("memory (enforcer process)")
    rss_base = baseline_rss_mib()
    report.line(f"baseline: Python with the enforcer's imports, nothing loaded: {rss_base:.0f} MiB")
    report.line("VmRSS after each phase: " + ", ".join(f"{name} {mib:.0f}" for name, mib in rss.items()) + " MiB")
    report.line(f"VmRSS at the end {steady['VmRSS']:.0f} MiB ({steady['VmRSS'] / rss_base:.1f}x the baseline)")
    report.line(f"VmHWM (peak) {steady['VmHWM']:.0f} MiB")
    report.target("RSS steady", f"{steady['VmRSS']:.0f} MiB", "< 150 MiB", steady["VmRSS"] < 150)
    report.target("RSS peak", f"{steady['VmHWM']:.0f} MiB", "< 200 MiB", steady["VmHWM"] < 200)

    report.section("/metrics (nftpolicy_change_commit_seconds, every change this enforcer committed)")
    for line in metrics or ["(not reachable)"]:
        report.line(line)

    report_start(report, "restart with the tables in place (no target)", restart, None, None)


if __name__ == "__main__":
    main()
