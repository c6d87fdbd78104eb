"""Simulated nodes in network namespaces, wired as a container
runtime wires pods: the conflist's plugins (the real ``bridge`` and
``host-local``, then ``nftpolicy``) run in order for ADD, each given the
previous result, and in reverse for DEL.

Each node is a netns with its own ``cni0``, pod CIDRs, CNI state, and an
enforcer process (``nftpolicy enforce``) inside it. Nodes are joined by an
underlay bridge in a netns of its own, with routes to each other's pod CIDRs.
Pods are namespaces with a probe agent (``probe_agent.py``) in each. The
cluster state the enforcers read is a directory of YAML the bed writes, as a
kubelet would patch pod IPs into the API. Every namespace is removed at exit.

Addresses: node i has pods in 10.244.i.0/24 and fd00:10:244:i::/64 and the
underlay address 192.168.56.1i / fd00:56::1i.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from enforcer.node.cni_install import SHIM, active_conf, install
from cni.records import records_signature
from enforcer.sources.directory import DirectorySource, signature_digest
from rules.evaluate import tiered_verdict
from rules.load import state_from_objects
from rules.matrix import Matrix

SYSTEM_CNI = Path("/usr/lib/cni")
PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]
AGENT = Path(__file__).resolve().parent / "probe_agent.py"
TCP_PORTS = (80, 81, 8080)
# Debian's plugins (1.1.1) stop at spec 1.0.0, whose result format 1.1.0 keeps:
# in a 1.1.0 conflist they are run at 1.0.0, and nftpolicy at 1.1.0.
NEWEST_VERSION = {"bridge": "1.0.0", "portmap": "1.0.0", "bandwidth": "1.0.0", "firewall": "1.0.0"}
HEALTH_PORT = 9964  # each enforcer's, inside its node's namespace
UDP_PORTS = (53,)


def sh(*args: str, check: bool = True, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, input=input, env=env)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.returncode}: {result.stderr.strip()} {result.stdout.strip()}")
    return result


def in_ns(ns: str, *args: str, **kw: Any) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *args, **kw)


def build_shim() -> Path:
    """The CNI shim executable (cni/shim), built by scripts/build-shim into its cache: instant once built."""
    return Path(sh(str(REPO / "scripts" / "build-shim")).stdout.strip().splitlines()[-1])


FACT_TIMEOUT = 120.0  # the most a test waits for a fact (a commit, a status, a reply) that a quiet machine sees in milliseconds


def wait_until(
    what: str, fact: Callable[[], Any], timeout: float = FACT_TIMEOUT, poll: float = 0.05, detail: Callable[[], str] = lambda: ""
) -> Any:
    """Wait for a fact, not for time: return its first true value, or fail
    naming it. The bound is generous; a quiet machine never comes near it."""
    deadline = time.monotonic() + timeout
    while not (value := fact()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}" + (f"\n{detail()}" if detail() else ""))
        time.sleep(poll)
    return value


@dataclass
class SimulatedPod:
    namespace: str
    name: str
    node: "SimulatedNode"
    netns: str
    container_id: str
    labels: dict[str, str]
    ports: list[tuple[str, int, str]]
    result: dict = field(default_factory=dict)
    plugin_results: list = field(default_factory=list)  # each plugin's ADD output, in order
    agent: subprocess.Popen | None = None
    cni_args: str = ""  # extra CNI_ARGS, e.g. IP=10.244.1.9 for host-local
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _replies: dict = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ips(self) -> list[str]:
        return [ip["address"].split("/")[0] for ip in self.result.get("ips", [])]

    def ip(self, version: int) -> str:
        return next(ip for ip in self.ips if ipaddress.ip_address(ip).version == version)

    @property
    def host_ifname(self) -> str:
        return [i for i in self.result["interfaces"] if not i.get("sandbox")][-1]["name"]

    def as_object(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": self.namespace, "name": self.name, "labels": self.labels, "uid": self.container_id},
            "spec": {
                "nodeName": self.node.name,
                "containers": [
                    {"name": "main", "ports": [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in self.ports]}
                ],
            },
            "status": {"phase": "Running", "podIPs": [{"ip": ip} for ip in self.ips]},
        }

    # --- probes through the agent -----------------------------------------

    @property
    def tcp_ports(self) -> list[int]:
        """The ports every agent serves, and this pod's declared TCP container ports."""
        return sorted(set(TCP_PORTS) | {p for _, p, proto in self.ports if proto == "TCP"})

    def start_agent(self) -> None:
        self.agent = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                PYTHON,
                "-IS",
                str(AGENT),
                "--tcp",
                ",".join(map(str, self.tcp_ports)),
                "--udp",
                ",".join(map(str, UDP_PORTS)),
                "--sctp",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read_replies, daemon=True).start()
        self._wait(0, FACT_TIMEOUT)

    def _read_replies(self) -> None:
        assert self.agent and self.agent.stdout
        for line in self.agent.stdout:
            reply = json.loads(line)
            with self._cond:
                self._replies[reply["id"]] = reply
                self._cond.notify_all()

    def _wait(self, request_id: int, timeout: float) -> dict:
        with self._cond:
            if not self._cond.wait_for(lambda: request_id in self._replies, timeout=timeout):
                raise TimeoutError(f"probe agent of {self.key} did not answer request {request_id}")
            return self._replies.pop(request_id)

    def send(self, **request: Any) -> int:
        request_id = next(self._ids)
        assert self.agent and self.agent.stdin
        with self._cond:
            self.agent.stdin.write(json.dumps({"id": request_id, **request}) + "\n")
            self.agent.stdin.flush()
        return request_id

    def connects(self, host: str | None, port: int = 80, op: str = "tcp", **kw: Any) -> bool:
        """Whether a connection expected to work does: it gets CONFIRM_TIMEOUT,
        since on a busy machine a late reply is slow, not denied."""
        return self.result_of(
            self.send(op=op, host=host, port=port, timeout=CONFIRM_TIMEOUT, **kw), CONFIRM_TIMEOUT + REPLY_GRACE
        )

    def blocked(self, host: str | None, port: int = 80, op: str = "tcp", **kw: Any) -> bool:
        """Whether a connection expected to be denied gets nowhere within PROBE_TIMEOUT."""
        return not self.result_of(
            self.send(op=op, host=host, port=port, timeout=PROBE_TIMEOUT, **kw), PROBE_TIMEOUT + REPLY_GRACE
        )

    def result_of(self, request_id: int, timeout: float = 60) -> bool:
        return self._wait(request_id, timeout)["ok"]

    def stop_agent(self) -> None:
        if self.agent:
            self.agent.kill()
            self.agent.wait()
            self.agent = None


class _NoAliasDumper(yaml.SafeDumper):
    """Objects that share a dict are written out in full: the source refuses YAML aliases."""

    def ignore_aliases(self, data: object) -> bool:
        return True


class FileCluster:
    """Cluster state as a directory of YAML, which ``nftpolicy enforce --source`` reads."""

    def __init__(self, source: Path) -> None:
        self.source = source
        source.mkdir(parents=True, exist_ok=True)

    def enforcer_args(self) -> list[str]:
        return ["--source", str(self.source)]

    def write(self, objects: list[dict]) -> None:
        tmp = self.source / ".cluster.yaml.tmp"
        tmp.write_text(yaml.dump_all(objects, Dumper=_NoAliasDumper))
        os.replace(tmp, self.source / "cluster.yaml")

    def in_force(self, status: dict) -> bool:
        """Whether an enforcer's status says it committed what was written last."""
        return status.get("source") == DirectorySource(self.source).digest()


class SimulatedNode:
    def __init__(self, bed: "Testbed", index: int) -> None:
        self.bed = bed
        self.index = index
        self.name = f"node-{index}"
        self.netns = f"{bed.prefix}-n{index}"
        self.dir = bed.root / self.name
        self.state_dir = self.dir / "state"
        self.socket = self.dir / "cni.sock"
        self.cidr4 = f"10.244.{index}.0/24"
        self.cidr6 = f"fd00:10:244:{index}::/64"
        self.underlay4 = f"192.168.56.{10 + index}"
        self.underlay6 = f"fd00:56::{10 + index}"
        self.enforcer: subprocess.Popen | None = None
        self.pods: dict[str, SimulatedPod] = {}

    @property
    def conf_dir(self) -> Path:
        return self.dir / "net.d"

    def base_conflist(self) -> dict[str, Any]:
        """The node's pod network before nftpolicy: bridge with host-local IPAM,
        then the bed's ``extra_plugins`` (portmap, bandwidth, ...)."""
        return {
            "cniVersion": "1.0.0",
            "name": "podnet",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(self.dir / "ipam"),
                        "ranges": [[{"subnet": self.cidr4}], [{"subnet": self.cidr6}]],
                        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                    },
                },
                *self.bed.extra_plugins,
            ],
        }

    def install_cni(self) -> None:
        """Chain nftpolicy after bridge with the product's installer, as an operator would."""
        install(
            self.conf_dir,
            self.bed.cni_bin,
            python=PYTHON,
            form=self.bed.cni_form,
            shim=self.bed.shim or SHIM,
            entry={"stateDir": str(self.state_dir), "socket": str(self.socket), "timeoutSeconds": 5},
        )

    def conflist(self, version: str = "1.0.0") -> dict[str, Any]:
        """The conflist in force (as a runtime reads it from the conf dir), at a given spec version."""
        return {**json.loads(active_conf(self.conf_dir).read_text()), "cniVersion": version}

    def create(self) -> None:
        sh("ip", "netns", "add", self.netns)
        self.conf_dir.mkdir(parents=True)
        (self.conf_dir / "10-podnet.conflist").write_text(json.dumps(self.base_conflist(), indent=2))
        self.install_cni()
        for sysctl in (
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ):
            in_ns(self.netns, "sysctl", "-qw", sysctl)
        in_ns(self.netns, "ip", "link", "set", "lo", "up")

    # --- the container runtime's part -------------------------------------

    def run_plugin(
        self, plugin: dict, command: str, pod: SimulatedPod, prev: dict | None, version: str, bin_dir: Path | None = None
    ) -> tuple[int, dict | None]:
        """One plugin of the chain, from ``bin_dir`` (default: the bed's CNI bin dir)."""
        if version == "1.1.0":
            version = NEWEST_VERSION.get(plugin["type"], version)
        conf = {"cniVersion": version, "name": "podnet", **plugin}
        if prev is not None:
            conf["prevResult"] = prev
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": pod.container_id,
            "CNI_NETNS": f"/var/run/netns/{pod.netns}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.bed.cni_bin),
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};K8S_POD_NAME={pod.name};K8S_POD_UID={pod.container_id}"
            + (f";{pod.cni_args}" if pod.cni_args else ""),
            "PATH": os.environ["PATH"],
        }
        result = sh(
            "ip",
            "netns",
            "exec",
            self.netns,
            str((bin_dir or self.bed.cni_bin) / plugin["type"]),
            input=json.dumps(conf),
            env=env,
            check=False,
        )
        if result.returncode != 0 and not result.stdout.strip():
            raise RuntimeError(f"{command} {pod.key}: {plugin['type']} crashed: {result.stderr}")
        out = json.loads(result.stdout) if result.stdout.strip() else None
        return result.returncode, out

    def run_conflist(self, command: str, pod: SimulatedPod, version: str = "1.0.0") -> dict | None:
        """ADD in order, each plugin given the previous result; DEL and CHECK in reverse with the cached result."""
        plugins = self.conflist(version)["plugins"]
        if command == "ADD":
            prev = None
            pod.plugin_results = []
            for plugin in plugins:
                code, prev = self.run_plugin(plugin, "ADD", pod, prev, version)
                if code != 0:
                    raise RuntimeError(f"ADD {pod.key}: {plugin['type']} failed: {prev}")
                pod.plugin_results.append(prev)
            pod.result = prev or {}
            return prev
        for plugin in reversed(plugins):
            code, out = self.run_plugin(plugin, command, pod, pod.result, version)
            if code != 0:
                raise RuntimeError(f"{command} {pod.key}: {plugin['type']} failed: {out}")
        return None

    def add_pod(
        self,
        key: str,
        labels: dict[str, str] | None = None,
        ports: list | None = None,
        publish: bool = True,
        version: str = "1.0.0",
        cni_args: str = "",
    ) -> SimulatedPod:
        namespace, name = key.split("/")
        pod = SimulatedPod(
            namespace, name, self, f"{self.bed.prefix}-p{next(self.bed.counter)}", uuid.uuid4().hex, labels or {}, ports or []
        )
        sh("ip", "netns", "add", pod.netns)
        for sysctl in ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"):
            in_ns(pod.netns, "sysctl", "-qw", sysctl)
        in_ns(pod.netns, "ip", "link", "set", "lo", "up")
        self.pods[key] = pod
        pod.cni_args = cni_args
        self.run_conflist("ADD", pod, version)
        pod.start_agent()
        if publish:
            self.bed.publish()
        return pod

    def delete_pod(self, key: str, version: str = "1.0.0", publish: bool = True) -> None:
        pod = self.pods.pop(key)
        pod.stop_agent()
        self.run_conflist("DEL", pod, version)
        sh("ip", "netns", "delete", pod.netns, check=False)
        if publish:
            self.bed.publish()

    # --- the enforcer -------------------------------------------------------

    def start_enforcer(self) -> None:
        log = open(self.dir / "enforcer.log", "a")
        self.enforcer = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                PYTHON,
                "-m",
                "enforcer",
                "enforce",
                "--node",
                self.name,
                *self.bed.cluster.enforcer_args(),
                "--state-dir",
                str(self.state_dir),
                "--socket",
                str(self.socket),
                "--poll-interval",
                "0.1",
                "--health-port",
                str(HEALTH_PORT),
                "--verify-interval",
                "1",
                "--log-group",
                "100",
                "--deny-log",
                str(self.deny_log),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        enforcer = self.enforcer
        wait_until(f"the enforcer of {self.name} to listen", lambda: self.socket.exists() or enforcer.poll() is not None)
        if enforcer.poll() is not None:
            raise RuntimeError(f"enforcer of {self.name} did not start:\n{self.log()}")

    @property
    def deny_log(self) -> Path:
        return self.dir / "denied.jsonl"

    def stop_enforcer(self, sig: int = signal.SIGTERM) -> None:
        if self.enforcer:
            self.enforcer.send_signal(sig)
            self.enforcer.wait(FACT_TIMEOUT)
            self.enforcer = None

    def log(self) -> str:
        path = self.dir / "enforcer.log"
        return path.read_text() if path.exists() else ""

    def status(self) -> dict:
        try:
            return json.loads((self.state_dir / "status.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def converged(self) -> bool:
        """Whether this node's enforcer has committed the current cluster state and records."""
        records = signature_digest(records_signature(self.state_dir))
        status = self.status()
        current = self.enforcer is None or status.get("pid") == self.enforcer.pid  # not a previous enforcer's
        return current and status.get("records") == records and self.bed.cluster.in_force(status)

    def wait_converged(self, timeout: float = FACT_TIMEOUT) -> None:
        wait_until(
            f"{self.name} to commit the current state",
            self.converged,
            timeout,
            detail=lambda: f"{self.status()}\n{self.log()[-3000:]}",
        )

    def nft(self, *args: str) -> str:
        return in_ns(self.netns, "nft", *args).stdout


class Testbed:
    __test__ = False  # not a pytest test class

    def __init__(
        self,
        root: Path,
        nodes: int = 1,
        cluster=None,
        extra_plugins: tuple[dict, ...] = (),
        cni_form: str = "python",
        shim: Path | None = None,
    ) -> None:
        """``cluster``: where the state goes (``write``), how enforcers read it
        (``enforcer_args``) and whether they have (``in_force``); by default a
        ``FileCluster`` in ``root/source``. ``cni_form``: the form of the plugin
        the installer puts in ``cni_bin`` (``python``, or ``shim``: then
        ``shim`` is the executable, built by scripts/build-shim if not given)."""
        self.root = root
        self.cni_form = cni_form
        self.shim = shim
        self.prefix = f"np{uuid.uuid4().hex[:6]}"
        self.counter = itertools.count(1)
        self.source = root / "source"
        self.extra_plugins = list(extra_plugins)
        self.cluster = cluster
        self.cni_bin = root / "cni-bin"
        self.nodes = [SimulatedNode(self, i + 1) for i in range(nodes)]
        self.namespaces: dict[str, dict[str, str]] = {}
        self.policies: list[dict] = []
        self.objects: list[dict] = []  # what was last published
        self.underlay = f"{self.prefix}-u"

    def __enter__(self) -> "Testbed":
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _create(self) -> None:
        if self.cluster is None:
            self.cluster = FileCluster(self.source)
        if self.cni_form == "shim" and self.shim is None:
            self.shim = build_shim()
        self.cni_bin.mkdir()
        for plugin in ("bridge", "host-local", "portmap", "bandwidth", "firewall"):
            (self.cni_bin / plugin).symlink_to(SYSTEM_CNI / plugin)
        self.publish()
        sh("ip", "netns", "add", self.underlay)
        in_ns(self.underlay, "ip", "link", "add", "br0", "type", "bridge")
        in_ns(self.underlay, "ip", "link", "set", "br0", "up")
        for node in self.nodes:
            node.create()
            sh(
                "ip",
                "link",
                "add",
                f"{self.prefix}a{node.index}",
                "netns",
                node.netns,
                "type",
                "veth",
                "peer",
                "name",
                f"{self.prefix}b{node.index}",
                "netns",
                self.underlay,
            )
            in_ns(self.underlay, "ip", "link", "set", f"{self.prefix}b{node.index}", "master", "br0", "up")
            dev = f"{self.prefix}a{node.index}"
            in_ns(node.netns, "ip", "link", "set", dev, "name", "eth0")
            in_ns(node.netns, "ip", "addr", "add", f"{node.underlay4}/24", "dev", "eth0")
            in_ns(node.netns, "ip", "addr", "add", f"{node.underlay6}/64", "dev", "eth0", "nodad")
            in_ns(node.netns, "ip", "link", "set", "eth0", "up")
        for node in self.nodes:
            for other in self.nodes:
                if other is not node:
                    in_ns(node.netns, "ip", "route", "add", other.cidr4, "via", other.underlay4)
                    in_ns(node.netns, "ip", "-6", "route", "add", other.cidr6, "via", other.underlay6)

    def add_host(self, name: str, index: int) -> str:
        """Another network namespace on the underlay (e.g. a control plane), at
        192.168.56.<index> and fd00:56::<index>; removed with the bed."""
        ns, dev = f"{self.prefix}-{name}", f"{self.prefix}h{index}"
        sh("ip", "netns", "add", ns)
        in_ns(ns, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", f"{dev}a", "netns", ns, "type", "veth", "peer", "name", f"{dev}b", "netns", self.underlay)
        in_ns(self.underlay, "ip", "link", "set", f"{dev}b", "master", "br0", "up")
        in_ns(ns, "ip", "addr", "add", f"192.168.56.{index}/24", "dev", f"{dev}a")
        in_ns(ns, "ip", "addr", "add", f"fd00:56::{index}/64", "dev", f"{dev}a", "nodad")
        in_ns(ns, "ip", "link", "set", f"{dev}a", "up")
        return ns

    def close(self) -> None:
        for node in self.nodes:
            for pod in node.pods.values():
                pod.stop_agent()
            node.stop_enforcer(signal.SIGKILL)
        listed = sh("ip", "netns", "list", check=False).stdout.split()
        for ns in listed:
            if ns.startswith(self.prefix):
                sh("ip", "netns", "delete", ns, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    # --- cluster state ------------------------------------------------------

    def forget_neighbour(self, ip: str) -> None:
        """Drop every node's and pod's neighbour entry for an address, as after a
        reused IP's new owner announced itself (no kubelet here does)."""
        for ns in [n.netns for n in self.nodes] + [p.netns for p in self.pods()]:
            in_ns(ns, "ip", "neigh", "flush", "to", ip, check=False)

    def namespace(self, name: str, **labels: str) -> None:
        self.namespaces[name] = labels

    def publish(self) -> None:
        """Write the cluster state as the API would show it: namespaces, pods with IPs, policies."""
        objects: list[dict] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": labels}}
            for n, labels in sorted(self.namespaces.items())
        ]
        objects += [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": n.name},
                "status": {
                    "addresses": [{"type": "InternalIP", "address": n.underlay4}, {"type": "InternalIP", "address": n.underlay6}]
                },
            }
            for n in self.nodes
        ]
        objects += [p.as_object() for n in self.nodes for p in n.pods.values()]
        objects += self.policies
        self.objects = objects
        self.cluster.write(objects)

    def apply_policies(self, *policies: dict) -> None:
        self.policies = list(policies)
        self.publish()

    def pods(self) -> list[SimulatedPod]:
        return [p for n in self.nodes for p in n.pods.values()]

    def pod(self, key: str) -> SimulatedPod:
        return next(p for p in self.pods() if p.key == key)

    def wait_converged(self) -> None:
        for node in self.nodes:
            if node.enforcer:
                node.wait_converged()


# --- probing every pair of pods ---------------------------------------------


REPLY_GRACE = 60.0  # how long past a probe's own timeout its agent may take to say how it ended
PROBE_TIMEOUT = 1.0  # a first look at every pair at once: what has not connected by then counts as denied...
CONFIRM_TIMEOUT = 20.0  # ...unless it was expected to connect: then it gets this long, on a busy machine too


def send_probe(src: SimulatedPod, dst_ip: str, port: int, protocol: str, timeout: float = PROBE_TIMEOUT) -> int:
    """Start a probe: a request id to wait on (for SCTP, the INIT's tag to look for)."""
    if protocol == "SCTP":
        tag = random.randrange(1, 2**31)
        src.result_of(src.send(op="sctp-send", host=dst_ip, port=port, tag=tag))
        return tag
    return src.send(op=protocol.lower(), host=dst_ip, port=port, timeout=timeout)


Port = int | Callable[[SimulatedPod], int]  # one port, or each destination's own


def _port(port: Port, dst: SimulatedPod) -> int:
    return port(dst) if callable(port) else port


def observed(bed: Testbed, port: Port, protocol: str = "TCP", family: int = 4, expect: Matrix | None = None) -> Matrix:
    """Every pod to every other pod at once, with real packets.

    A probe that connects is a fact; one that does not is only "nothing came
    within the timeout". So a pair ``expect`` says is allowed but that did not
    connect is probed again with a long timeout: on a busy machine a slow
    reply is not a denial, and a real denial still shows."""
    pods = sorted(bed.pods(), key=lambda p: p.key)
    pairs = [(s.key, d.key) for s in pods for d in pods if s is not d]
    results = _probe_pairs(bed, pairs, port, protocol, family, PROBE_TIMEOUT)
    if expect is not None:
        doubtful = [k for k in pairs if expect.cells.get(k) and not results[k]]
        results.update(_probe_pairs(bed, doubtful, port, protocol, family, CONFIRM_TIMEOUT))
    return Matrix(tuple(p.key for p in pods), results)


def _probe_pairs(
    bed: Testbed, pairs: list[tuple[str, str]], port: Port, protocol: str, family: int, timeout: float
) -> dict[tuple[str, str], bool]:
    started = {
        (s, d): send_probe(bed.pod(s), bed.pod(d).ip(family), _port(port, bed.pod(d)), protocol, timeout) for s, d in pairs
    }
    if protocol == "SCTP":
        seen = {k: bed.pod(k[1]).send(op="sctp-seen", tag=tag, timeout=timeout) for k, tag in started.items()}
        return {k: bed.pod(k[1]).result_of(rid, timeout + REPLY_GRACE) for k, rid in seen.items()}
    return {k: bed.pod(k[0]).result_of(rid, timeout + REPLY_GRACE) for k, rid in started.items()}


def expected(bed: Testbed, port: Port, protocol: str = "TCP", family: int = 4) -> Matrix:
    """The reference evaluator (all tiers) on the state the enforcers read."""
    state = state_from_objects(bed.objects)
    pods = sorted(bed.pods(), key=lambda p: p.key)

    def allowed(src: str, dst: str) -> bool:
        d = bed.pod(dst)
        return tiered_verdict(state, bed.pod(src).ip(family), d.ip(family), _port(port, d), protocol)[0]

    return Matrix.probe([p.key for p in pods], allowed)
