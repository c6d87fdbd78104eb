#!/usr/bin/env python3
"""A real Kubernetes cluster on this one machine, all of it inside network
namespaces this tool makes, so the host's own network is never touched:

  npcluster-underlay  a bridge (br0, 192.168.56.1/24) joining the others
  npcluster-cp        etcd, kube-apiserver (192.168.56.2:6443),
                      kube-controller-manager, kube-scheduler
  npcluster-node-N    containerd, kubelet and kube-proxy (nftables mode) of
                      node-N (192.168.56.1N), pods in 10.244.N.0/24 on cni0
                      (Debian's bridge + host-local plugins), routes to the
                      other nodes' pod CIDRs over the underlay

Each node's daemons share one private mount namespace (made by
``nsenter --net unshare --mount``, not ``ip netns exec``, which would hide
the cgroup mounts), in which bed-owned directories are bind-mounted over
/run, /var/lib, /var/log, /opt and /etc/cni/net.d, so the node sees the
standard paths (/etc/cni/net.d, /opt/cni/bin, /var/lib/kubelet,
/run/containerd/containerd.sock, hostPath volumes...) as its own, and over
the few host-wide /proc/sys files the kubelet insists on writing. From the
host these are under ``<root>/node-N/fs``; containerd's images and snapshots
are on a tmpfs mounted in that namespace (unless --containerd-on-disk), so
they vanish with it. Every process runs in cgroups
under ``nftpolicy-cluster`` (the kubelets' cgroupRoot is
``/nftpolicy-cluster/node-N``), which is how ``down`` finds and ends them.

Usage (as root; scripts/cluster is the wrapper):
  up [--nodes N] [--no-smoke] [--keep-on-failure] [--containerd-on-disk]
                           make it (or say it is up already), then run the
                           smoke test: a pod on each of two nodes, pod to pod
                           across nodes, a ClusterIP Service through
                           kube-proxy's nftables rules, the API from a pod
  smoke                    the smoke test again, on the running cluster
  restart NODE COMPONENT   SIGTERM a node's containerd, kubelet or kube-proxy
                           and start it again
  reboot NODE              a power cut and a cold boot of one node: its
                           processes, network and mount namespaces and /run
                           go; its disk (/etc, /opt, /var/lib) stays
  down                     remove everything (logs kept in <cache>/cluster-logs)
  status                   what runs; kubectl get nodes, pods
  kubectl ARGS...          kubectl with the admin kubeconfig, in npcluster-cp
  exec NODE|cp CMD...      a command in a node's network and mount namespace
                           (e.g. ``exec node-1 nft list ruleset``,
                           ``exec node-1 crictl ps``)

The admin kubeconfig is <root>/admin.kubeconfig, <root> being
${NFTPOLICY_KUBE_CACHE:-~/.cache/nftpolicy}/cluster. Its server,
https://192.168.56.2:6443, is reachable only from namespaces on the
underlay (npcluster-cp, the nodes, their pods): run kubectl with
``scripts/cluster kubectl ...`` or ``nsenter --net=/run/netns/npcluster-cp``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("NFTPOLICY_KUBE_CACHE") or Path.home() / ".cache" / "nftpolicy")
ROOT = CACHE / "cluster"
LOCK = CACHE / ".cluster.lock"
LAST_LOGS = CACHE / "cluster-logs"  # the logs of the last cluster, kept by `down`
PKI = ROOT / "pki"
CP_DIR = ROOT / "control-plane"
ADMIN_KUBECONFIG = ROOT / "admin.kubeconfig"
STATE = ROOT / "state.json"

NS_PREFIX = "npcluster-"
UNDERLAY_NS = NS_PREFIX + "underlay"
CP_NS = NS_PREFIX + "cp"
CGROUP = "nftpolicy-cluster"

UNDERLAY_PREFIX = 24
GATEWAY_IP = "192.168.56.1"  # br0 in the underlay namespace, which forwards nothing
CP_IP = "192.168.56.2"
API_PORT = 6443
API_URL = f"https://{CP_IP}:{API_PORT}"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
CLUSTER_CIDR = "10.244.0.0/16"

SYSTEM_CNI = Path("/usr/lib/cni")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Host paths a node's daemons write (whatever their own root dirs say) or
# its pods' hostPath volumes name: in the node's mount namespace, each is
# the node's own directory <node>/fs/<path>.
PRIVATE_PATHS = ("run", "var/lib", "var/log", "opt", "etc/cni/net.d")
# Host-wide sysctls the kubelet sets (pkg/kubelet/cm setupKernelTunables):
# the node sees files with these values instead, so the host keeps its own.
FAKE_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
NODE_BINARIES = (
    "kubelet",
    "kube-proxy",
    "kube-scheduler",
    "kube-controller-manager",
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
    "crictl",
)
KUBE_BINARIES = ("kube-apiserver", "kubectl", "etcd")

# Bounds on waits for facts; a quiet machine sees each in seconds.
T_PROCESS = 180.0  # a daemon to answer
T_NODES = 600.0  # nodes to register and be Ready
T_PODS = 600.0  # pods to be Running (sandbox, CNI, image unpack)
T_TRAFFIC = 120.0  # a connection expected to work to work
T_DOWN = 120.0  # graceful pod removal at `down`

HEALTHZ = {"kubelet": "http://127.0.0.1:10248/healthz", "kube-proxy": "http://127.0.0.1:10256/healthz"}

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[cluster {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


class Failure(Exception):
    pass


# --- small helpers ----------------------------------------------------------


def run(
    *args: str | Path, check: bool = True, input: str | None = None, timeout: float | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    argv = [str(a) for a in args]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        if check:
            raise Failure(f"{shlex.join(argv)}: no answer in {timeout:.0f} s") from e
        return subprocess.CompletedProcess(argv, 124, e.stdout or "", e.stderr or "")
    if check and result.returncode != 0:
        raise Failure(f"{shlex.join(argv)}: exit {result.returncode}: {result.stderr.strip()} {result.stdout.strip()}".strip())
    return result


def in_netns(ns: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", "--"]


def wait_for(
    what: str,
    fact: Callable[[], Any],
    timeout: float,
    poll: float = 1.0,
    detail: Callable[[], str] | None = None,
    quiet: bool = False,
) -> Any:
    """Wait for a fact, not for time: its first true value, or Failure naming it."""
    if not quiet:
        say(f"waiting for {what} (at most {timeout:.0f} s)")
    deadline = time.monotonic() + timeout
    while True:
        value = fact()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure(f"waited {timeout:.0f} s for {what}" + (f"\n{detail()}" if detail else ""))
        time.sleep(poll)


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"({path} does not exist)"
    return f"--- last lines of {path}:\n" + "\n".join(text[-lines:])


def netns_list() -> list[str]:
    out = run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def ours(ns: str) -> bool:
    return ns.startswith(NS_PREFIX)


# --- cgroups ------------------------------------------------------------------


def cgroup_mounts() -> list[tuple[Path, bool]]:
    """Every cgroup hierarchy mounted here: (mount point, has cpuset)."""
    found: dict[str, tuple[Path, bool]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        fstype, _source, options = right.split(" ", 2)
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mountpoint = left.split(" ")[4]
        root = left.split(" ")[3]
        if root != "/":  # a bind mount of a sub-cgroup: the hierarchy is seen elsewhere
            continue
        key = options if fstype == "cgroup" else "cgroup2"
        found.setdefault(key, (Path(mountpoint), "cpuset" in options.split(",")))
    return list(found.values())


def make_cgroup(rel: str) -> None:
    """``rel`` (e.g. nftpolicy-cluster/node-1) in every hierarchy, cpusets filled from the parent."""
    for mount, cpuset in cgroup_mounts():
        path = mount
        for part in rel.split("/"):
            parent, path = path, path / part
            path.mkdir(exist_ok=True)
            if cpuset:
                for f in ("cpuset.cpus", "cpuset.mems"):
                    if not (path / f).read_text().strip():
                        (path / f).write_text((parent / f).read_text())


def joiner(rel: str) -> Callable[[], None]:
    """A preexec_fn putting the child in cgroup ``rel`` of every hierarchy."""
    procs = [str(mount / rel / "cgroup.procs") for mount, _ in cgroup_mounts()]

    def join() -> None:
        pid = str(os.getpid()).encode()
        for p in procs:
            fd = os.open(p, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    return join


def cgroup_dirs(*tops: str) -> list[Path]:
    """Our cgroups (or those under ``tops``) in every hierarchy, deepest first."""
    dirs: list[Path] = []
    for mount, _ in cgroup_mounts():
        for rel in tops or (CGROUP,):
            if (mount / rel).is_dir():
                dirs += [Path(d) for d, _, _ in os.walk(mount / rel)]
    return sorted(dirs, key=lambda p: len(p.parts), reverse=True)


def cgroup_pids(*tops: str) -> set[int]:
    pids: set[int] = set()
    for d in cgroup_dirs(*tops):
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
    return pids


# --- processes ------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def spawn(name: str, argv: list[str | Path], cgroup: str, log: Path, env: dict | None = None) -> int:
    """Start a daemon, detached, in cgroup ``cgroup``, logging to ``log``; its pid is kept in <root>/pids."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=joiner(cgroup),
            cwd=str(ROOT),
            env=env or daemon_env(),
        )
    (ROOT / "pids").mkdir(exist_ok=True)
    (ROOT / "pids" / name).write_text(f"{proc.pid}\n{log}\n")
    return proc.pid


def daemon_env() -> dict[str, str]:
    return {"PATH": f"{node_bin()}:{kube_bin()}:{SYSTEM_PATH}", "HOME": str(Path.home()), "LANG": "C.UTF-8"}


def recorded_pids() -> dict[str, tuple[int, Path]]:
    found = {}
    for f in sorted((ROOT / "pids").glob("*")) if (ROOT / "pids").is_dir() else []:
        with contextlib.suppress(ValueError, IndexError):
            pid, log = f.read_text().splitlines()[:2]
            found[f.name] = (int(pid), Path(log))
    return found


def stop(pid: int, name: str, grace: float) -> None:
    if not alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    began = time.monotonic()
    while alive(pid) and time.monotonic() < began + grace:
        time.sleep(0.1)
    if time.monotonic() - began > 2:
        say(f"{name} took {time.monotonic() - began:.1f} s to end")
    if alive(pid):
        say(f"{name} (pid {pid}) did not end on SIGTERM in {grace:.0f} s: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(f"{name} (pid {pid}) to be gone", lambda: not alive(pid), 60, poll=0.1, quiet=True)


def kill_all(found: Callable[[], set[int]], timeout: float = 60) -> list[str]:
    """SIGKILL whatever ``found`` lists until it lists nothing; returns the survivors."""
    deadline = time.monotonic() + timeout
    while (left := found()) and time.monotonic() < deadline:
        say(f"killing {len(left)} processes: " + " ".join(sorted({comm(p) for p in left})))
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
    return [f"process {p} ({comm(p)}) survived SIGKILL" for p in found()]


def netns_pids(names: list[str]) -> set[int]:
    """Processes whose network namespace is one of ``names`` (by inode)."""
    inodes = set()
    for ns in names:
        with contextlib.suppress(OSError):
            inodes.add(f"net:[{os.stat(f'/run/netns/{ns}').st_ino}]")
    pids = set()
    if not inodes:
        return pids
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/net") in inodes:
                    pids.add(int(entry))
    return pids


# --- binaries and images ----------------------------------------------------


def _script_bin(script: str, args: list[str], fallback: Path) -> Path:
    path = REPO / "scripts" / script
    if not path.exists():
        return fallback
    say(f"scripts/{script} {' '.join(args)} (builds what is missing; the first time takes long)")
    result = subprocess.run(["bash", str(path), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise Failure(f"scripts/{script} failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


_BINS: dict[str, Path] = {}
DEFAULT_BINS = {
    "kube": CACHE / "kube-v1.37.2-etcd-v3.7.3" / "bin",
    "node": CACHE / "node-v1.37.2" / "bin",
    "images": CACHE / "images",
}


def _bin(kind: str, script: str, args: list[str], build: bool) -> Path:
    """Where scripts/<script> puts its output: built if missing when ``build``
    (up), else as the running cluster recorded it (status, down, kubectl, exec)."""
    if kind not in _BINS:
        if build:
            _BINS[kind] = _script_bin(script, args, DEFAULT_BINS[kind])
        else:
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                _BINS[kind] = Path(json.loads(STATE.read_text())["bins"][kind])
            _BINS.setdefault(kind, DEFAULT_BINS[kind])
    return _BINS[kind]


BUILD = False  # set by `up`: build what is missing


def kube_bin() -> Path:
    return _bin("kube", "build-kube", [], BUILD)


def node_bin() -> Path:
    return _bin("node", "build-node", [*NODE_BINARIES, "agnhost"], BUILD)


def images_dir() -> Path:
    # After build-node: the agnhost image is made from the binary build-node makes.
    node_bin()
    return _bin("images", "build-images", [], BUILD)


def image_list() -> dict[str, Path]:
    listing = images_dir() / "images.txt"
    if not listing.exists():
        raise Failure(f"no {listing}: run scripts/build-images")
    refs = {}
    for line in listing.read_text().splitlines():
        if line.strip():
            ref, tarball = line.split()
            refs[ref] = Path(tarball)
    return refs


def pause_image() -> str:
    path = images_dir() / "pause.image"
    if not path.exists():
        raise Failure(f"no {path}: run scripts/build-images")
    return path.read_text().strip()


def agnhost_image() -> str | None:
    path = node_bin() / "agnhost.image"
    wanted = path.read_text().strip() if path.exists() else None
    refs = image_list()
    if wanted and wanted in refs:
        return wanted
    return next((r for r in refs if "/agnhost:" in r), None)


def check_tools() -> None:
    """What `up` needs, built or installed if missing (as the scripts it calls do)."""
    images_dir()  # builds the kube and node binaries first
    if not shutil.which("runc", path=SYSTEM_PATH):
        say("installing runc (apt-get install runc)")
        run(
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "runc",
            timeout=900,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        )
    missing = [b for b in KUBE_BINARIES if not (kube_bin() / b).exists()]
    missing += [b for b in NODE_BINARIES if not (node_bin() / b).exists()]
    if missing:
        raise Failure(f"missing binaries: {', '.join(missing)} (scripts/build-kube, scripts/build-node)")
    for tool, hint in (
        ("runc", "apt-get install runc"),
        ("nft", "apt-get install nftables"),
        ("openssl", "apt-get install openssl"),
        ("curl", "apt-get install curl"),
        ("nsenter", "util-linux"),
        ("unshare", "util-linux"),
    ):
        if not shutil.which(tool, path=SYSTEM_PATH):
            raise Failure(f"{tool} not found ({hint})")
    if not (SYSTEM_CNI / "bridge").exists() or not (SYSTEM_CNI / "host-local").exists():
        raise Failure(f"no bridge/host-local CNI plugins in {SYSTEM_CNI} (apt-get install containernetworking-plugins)")
    for private in PRIVATE_PATHS:
        if ROOT.resolve().is_relative_to(Path("/") / private):
            raise Failure(f"{ROOT} is under /{private}, which each node sees privately: set NFTPOLICY_KUBE_CACHE elsewhere")


# --- certificates and kubeconfigs ---------------------------------------------


def openssl(*args: str | Path) -> None:
    run("openssl", *args)


EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def certificate(name: str, subject: str, ext: str) -> None:
    """<pki>/<name>.crt and .key, signed by the bed's CA."""
    (PKI / f"{name}.ext").write_text(ext + "\n")
    openssl("req", *EC_KEY, "-subj", subject, "-keyout", PKI / f"{name}.key", "-out", PKI / f"{name}.csr")
    openssl(
        "x509",
        "-req",
        "-in",
        PKI / f"{name}.csr",
        "-CA",
        PKI / "ca.crt",
        "-CAkey",
        PKI / "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        PKI / f"{name}.ext",
        "-out",
        PKI / f"{name}.crt",
    )


def kubeconfig(path: Path, user: str, cert: str) -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "nftpolicy", "cluster": {"server": API_URL, "certificate-authority-data": b64(PKI / "ca.crt")}}
                ],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate-data": b64(PKI / f"{cert}.crt"),
                            "client-key-data": b64(PKI / f"{cert}.key"),
                        },
                    }
                ],
                "contexts": [{"name": "nftpolicy", "context": {"cluster": "nftpolicy", "user": user}}],
                "current-context": "nftpolicy",
            }
        )
    )
    path.chmod(0o600)


CLIENT = "extendedKeyUsage=clientAuth"


def make_pki(nodes: list["Node"]) -> None:
    say("certificates (openssl, P-256) and kubeconfigs")
    PKI.mkdir(parents=True)
    openssl(
        "req",
        "-x509",
        *EC_KEY,
        "-days",
        "30",
        "-subj",
        "/CN=nftpolicy-cluster-ca",
        "-keyout",
        PKI / "ca.key",
        "-out",
        PKI / "ca.crt",
    )
    certificate(
        "apiserver",
        "/CN=kube-apiserver",
        f"subjectAltName=IP:{CP_IP},IP:127.0.0.1,IP:{KUBERNETES_SERVICE_IP},DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost\n"
        "extendedKeyUsage=serverAuth",
    )
    certificate("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", CLIENT)
    certificate("admin", "/O=system:masters/CN=cluster-admin", CLIENT)
    certificate("controller-manager", "/CN=system:kube-controller-manager", CLIENT)
    certificate("scheduler", "/CN=system:kube-scheduler", CLIENT)
    certificate("kube-proxy", "/CN=system:kube-proxy", CLIENT)
    run("openssl", "genrsa", "-out", PKI / "sa.key", "2048")
    run("openssl", "rsa", "-in", PKI / "sa.key", "-pubout", "-out", PKI / "sa.pub")
    for node in nodes:
        certificate(f"kubelet-{node.name}", f"/O=system:nodes/CN=system:node:{node.name}", CLIENT)
        certificate(
            f"kubelet-{node.name}-serving",
            f"/CN={node.name}",
            f"subjectAltName=IP:{node.ip},DNS:{node.name}\nextendedKeyUsage=serverAuth",
        )
    kubeconfig(ADMIN_KUBECONFIG, "cluster-admin", "admin")
    for name in ("controller-manager", "scheduler"):
        kubeconfig(CP_DIR / f"{name}.kubeconfig", f"system:kube-{name}", name)
    for node in nodes:
        kubeconfig(node.dir / "kubelet.kubeconfig", f"system:node:{node.name}", f"kubelet-{node.name}")
        kubeconfig(node.dir / "kube-proxy.kubeconfig", "system:kube-proxy", "kube-proxy")


# --- kubectl --------------------------------------------------------------------


def kubectl(*args: str, check: bool = True, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return run(
        *in_netns(CP_NS),
        kube_bin() / "kubectl",
        "--kubeconfig",
        ADMIN_KUBECONFIG,
        *args,
        check=check,
        input=input,
        timeout=timeout,
    )


def kubectl_json(*args: str) -> Any:
    result = kubectl(*args, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)


def apply(*objects: dict) -> None:
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


# --- the network --------------------------------------------------------------


def ip(ns: str, *args: str) -> None:
    run("ip", "-n", ns, *args)


def sysctl(ns: str, key: str, value: str) -> None:
    run(*in_netns(ns), "sysctl", "-qw", f"{key}={value}")


def add_netns(ns: str) -> None:
    run("ip", "netns", "add", ns)
    ip(ns, "link", "set", "lo", "up")


def attach(ns: str, port: str, address: str) -> None:
    """``ns``'s eth0 at ``address`` on the underlay bridge (the peer ``port`` in the underlay namespace)."""
    # Both ends are made in their namespaces: nothing appears in the host's.
    ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", UNDERLAY_NS)
    ip(UNDERLAY_NS, "link", "set", port, "master", "br0", "up")
    ip(ns, "addr", "add", f"{address}/{UNDERLAY_PREFIX}", "dev", "eth0")
    ip(ns, "link", "set", "eth0", "up")
    ip(ns, "route", "add", "default", "via", GATEWAY_IP)


def make_network(nodes: list["Node"]) -> None:
    say(
        f"network namespaces: {UNDERLAY_NS} (br0 {GATEWAY_IP}), {CP_NS} ({CP_IP}), "
        + ", ".join(f"{n.ns} ({n.ip}, pods {n.cidr})" for n in nodes)
    )
    add_netns(UNDERLAY_NS)
    ip(UNDERLAY_NS, "link", "add", "br0", "type", "bridge")
    ip(UNDERLAY_NS, "addr", "add", f"{GATEWAY_IP}/{UNDERLAY_PREFIX}", "dev", "br0")
    ip(UNDERLAY_NS, "link", "set", "br0", "up")
    add_netns(CP_NS)
    attach(CP_NS, "cp", CP_IP)
    for node in nodes:
        make_node_network(node, nodes)
        # The control plane answers pods (the kubernetes Service's endpoint) directly.
        ip(CP_NS, "route", "add", node.cidr, "via", node.ip)


MADE_MOUNT_POINTS = ROOT / "made-mount-points"  # host directories `up` made, for `down` to remove


def make_mount_points() -> None:
    """The host paths the nodes' private mounts cover must exist to be mounted
    over (a mount namespace shares the filesystem). A fresh host may lack
    /etc/cni/net.d: make what is missing, and remember it for ``down``."""
    made = []
    for p in PRIVATE_PATHS:
        path = Path("/") / p
        missing = []
        while not path.exists():
            missing.append(path)
            path = path.parent
        for d in reversed(missing):
            d.mkdir()
            made.append(str(d))
    if made:
        say("made host mount points (removed at `down`): " + ", ".join(made))
        MADE_MOUNT_POINTS.write_text("\n".join(made) + "\n")


def remove_mount_points() -> list[str]:
    """Remove the host directories ``make_mount_points`` made, deepest first, if empty."""
    try:
        made = MADE_MOUNT_POINTS.read_text().split()
    except FileNotFoundError:
        return []
    problems = []
    for d in reversed(made):
        try:
            Path(d).rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            problems.append(f"host directory {d} (made by `up`): {e.strerror}")
    return problems


def make_node_network(node: "Node", nodes: list["Node"]) -> None:
    """The node's own namespace as a machine has it at boot: eth0 on the underlay,
    forwarding on, static routes to the other nodes' pod CIDRs."""
    add_netns(node.ns)
    attach(node.ns, node.name, node.ip)
    sysctl(node.ns, "net.ipv4.ip_forward", "1")
    for other in nodes:
        if other.index != node.index:
            ip(node.ns, "route", "add", other.cidr, "via", other.ip)


# --- the control plane ----------------------------------------------------------


def start_control_plane() -> None:
    make_cgroup(f"{CGROUP}/control-plane")
    cg = f"{CGROUP}/control-plane"
    logs = CP_DIR / "logs"
    kb = kube_bin()
    say("etcd")
    client = "http://127.0.0.1:2379"
    pid = spawn(
        "etcd",
        [
            *in_netns(CP_NS),
            kb / "etcd",
            "--name",
            "cluster",
            "--data-dir",
            CP_DIR / "etcd",
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "cluster=http://127.0.0.1:2380",
            "--listen-metrics-urls",
            "",
            # A throwaway bed on a shared disk: no fsync.
            "--unsafe-no-fsync",
        ],
        cg,
        logs / "etcd.log",
    )
    wait_for(
        "etcd /health",
        lambda: answered(pid, "etcd", [*in_netns(CP_NS), "curl", "-fsS", f"{client}/health"]),
        T_PROCESS,
        poll=0.3,
        detail=lambda: tail(logs / "etcd.log"),
    )

    say("kube-apiserver")
    pid = spawn(
        "kube-apiserver",
        [
            *in_netns(CP_NS),
            kb / "kube-apiserver",
            "--etcd-servers",
            client,
            "--bind-address",
            "0.0.0.0",
            "--secure-port",
            str(API_PORT),
            "--advertise-address",
            CP_IP,
            "--tls-cert-file",
            PKI / "apiserver.crt",
            "--tls-private-key-file",
            PKI / "apiserver.key",
            "--client-ca-file",
            PKI / "ca.crt",
            "--cert-dir",
            CP_DIR / "apiserver-certs",
            "--kubelet-client-certificate",
            PKI / "apiserver-kubelet-client.crt",
            "--kubelet-client-key",
            PKI / "apiserver-kubelet-client.key",
            "--kubelet-certificate-authority",
            PKI / "ca.crt",
            "--kubelet-preferred-address-types",
            "InternalIP",
            "--service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file",
            PKI / "sa.pub",
            "--service-account-signing-key-file",
            PKI / "sa.key",
            "--authorization-mode",
            "Node,RBAC",
            "--enable-admission-plugins",
            "NodeRestriction",
            "--service-cluster-ip-range",
            SERVICE_CIDR,
            "--allow-privileged=true",
            "--profiling=false",
        ],
        cg,
        logs / "kube-apiserver.log",
    )
    wait_for(
        "kube-apiserver /readyz",
        lambda: answered(
            pid,
            "kube-apiserver",
            [
                *in_netns(CP_NS),
                "curl",
                "-fsS",
                "--cacert",
                PKI / "ca.crt",
                "--cert",
                PKI / "admin.crt",
                "--key",
                PKI / "admin.key",
                f"{API_URL}/readyz",
            ],
        ),
        T_PROCESS,
        poll=0.5,
        detail=lambda: tail(logs / "kube-apiserver.log"),
    )

    say("kube-controller-manager, kube-scheduler")
    cm = spawn(
        "kube-controller-manager",
        [
            *in_netns(CP_NS),
            node_bin() / "kube-controller-manager",
            "--kubeconfig",
            CP_DIR / "controller-manager.kubeconfig",
            "--bind-address",
            "127.0.0.1",
            "--cert-dir",
            CP_DIR / "controller-manager-certs",
            "--leader-elect=false",
            "--service-account-private-key-file",
            PKI / "sa.key",
            "--root-ca-file",
            PKI / "ca.crt",
            "--use-service-account-credentials=true",
            "--service-cluster-ip-range",
            SERVICE_CIDR,
            "--cluster-cidr",
            CLUSTER_CIDR,
            "--allocate-node-cidrs=false",
            "--profiling=false",
        ],
        cg,
        logs / "kube-controller-manager.log",
    )
    sched = spawn(
        "kube-scheduler",
        [
            *in_netns(CP_NS),
            node_bin() / "kube-scheduler",
            "--kubeconfig",
            CP_DIR / "scheduler.kubeconfig",
            "--bind-address",
            "127.0.0.1",
            "--cert-dir",
            CP_DIR / "scheduler-certs",
            "--leader-elect=false",
            "--profiling=false",
        ],
        cg,
        logs / "kube-scheduler.log",
    )
    for pid, name, port in ((cm, "kube-controller-manager", 10257), (sched, "kube-scheduler", 10259)):
        wait_for(
            f"{name} /healthz",
            lambda: answered(pid, name, [*in_netns(CP_NS), "curl", "-fsSk", f"https://127.0.0.1:{port}/healthz"]),
            T_PROCESS,
            poll=0.5,
            detail=lambda name=name: tail(logs / f"{name}.log"),
        )


def answered(pid: int, name: str, probe: list) -> bool:
    if not alive(pid):
        raise Failure(f"{name} (pid {pid}) exited")
    return run(*probe, check=False, timeout=30).returncode == 0


# --- nodes -------------------------------------------------------------------------


@dataclass
class Node:
    index: int
    containerd_tmpfs: bool = True

    @property
    def name(self) -> str:
        return f"node-{self.index}"

    @property
    def ns(self) -> str:
        return NS_PREFIX + self.name

    @property
    def ip(self) -> str:
        return f"192.168.56.{10 + self.index}"

    @property
    def cidr(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def dir(self) -> Path:
        return ROOT / self.name

    @property
    def fs(self) -> Path:
        """What the node sees at / for PRIVATE_PATHS."""
        return self.dir / "fs"

    @property
    def socket(self) -> Path:
        return self.fs / "run/containerd/containerd.sock"

    @property
    def crictl_config(self) -> Path:
        return self.dir / "crictl.yaml"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def cgroup_root(self) -> str:
        return f"/{CGROUP}/{self.name}"

    @property
    def system_cgroup(self) -> str:
        return f"{CGROUP}/{self.name}-system"

    def holder_pid(self) -> int | None:
        rec = recorded_pids().get(f"{self.name}-mounts")
        return rec[0] if rec and alive(rec[0]) else None

    def enter(self) -> list[str]:
        """Into the node's network and mount namespaces (those of its mount holder)."""
        pid = self.holder_pid()
        if pid is None:
            raise Failure(f"{self.name}'s namespace holder is not running")
        return ["nsenter", f"--target={pid}", "--mount", "--net", "--"]

    # --- files ---------------------------------------------------------------

    def write_files(self) -> None:
        for p in PRIVATE_PATHS:
            (self.fs / p).mkdir(parents=True, exist_ok=True)
        for p in (
            "var/lib/kubelet",
            "var/lib/containerd",
            "var/log/pods",
            "var/log/containers",
            "var/lib/cni/networks",
            "run/containerd",
        ):
            (self.fs / p).mkdir(parents=True, exist_ok=True)
        cni_bin = self.fs / "opt/cni/bin"
        cni_bin.mkdir(parents=True)
        for plugin in sorted(SYSTEM_CNI.iterdir()):
            # Copies: a DaemonSet writing into /opt/cni/bin must not write through to /usr/lib/cni.
            shutil.copy2(plugin, cni_bin / plugin.name)
        (self.fs / "etc/cni/net.d/10-podnet.conflist").write_text(json.dumps(self.conflist(), indent=2) + "\n")
        sysctls = self.dir / "sysctl"
        sysctls.mkdir()
        for key, value in FAKE_SYSCTLS.items():
            (sysctls / key.replace("/", ".")).write_text(value + "\n")
        (self.dir / "machine-id").write_text(f"{self.index:032x}\n")
        (self.dir / "containerd.toml").write_text(self.containerd_config())
        (self.dir / "kubelet.yaml").write_text(yaml.safe_dump(self.kubelet_config(), sort_keys=False))
        (self.dir / "kube-proxy.yaml").write_text(yaml.safe_dump(self.kube_proxy_config(), sort_keys=False))
        (self.dir / "mounts.sh").write_text(self.mounts_script())
        # For crictl, inside the node or out: the socket's path as the host sees it.
        self.crictl_config.write_text(
            yaml.safe_dump(
                {"runtime-endpoint": f"unix://{self.socket}", "image-endpoint": f"unix://{self.socket}", "timeout": 30}
            )
        )

    def conflist(self) -> dict:
        return {
            "cniVersion": "1.0.0",
            "name": "podnet",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": "/var/lib/cni/networks",
                        "ranges": [[{"subnet": self.cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                }
            ],
        }

    def containerd_config(self) -> str:
        # Paths as the node sees them: /run, /var/lib, /opt and /etc/cni/net.d are its own.
        return f"""version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
oom_score = 0

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "{pause_image()}"
  [plugins.'io.containerd.cri.v1.runtime']
    # No CAP_SYS_RESOURCE in the bounding set: never set an oom_score_adj below containerd's own.
    restrict_oom_score_adj = true
    enable_selinux = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          SystemdCgroup = false
          BinaryName = "{shutil.which("runc", path=SYSTEM_PATH)}"
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["/opt/cni/bin"]
      conf_dir = "/etc/cni/net.d"
      max_conf_num = 1
"""

    def kubelet_config(self) -> dict:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "cgroupsPerQOS": True,
            "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
            "failSwapOn": False,
            "oomScoreAdj": 0,
            "protectKernelDefaults": False,
            "makeIPTablesUtilChains": False,
            "volumePluginDir": "/var/lib/kubelet/volumeplugins",
            "resolvConf": "",
            "clusterDomain": "cluster.local",
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "tlsCertFile": str(PKI / f"kubelet-{self.name}-serving.crt"),
            "tlsPrivateKeyFile": str(PKI / f"kubelet-{self.name}-serving.key"),
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(PKI / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            # No registry is reachable: never collect images, and evict only when really short.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "serializeImagePulls": False,
        }

    def kube_proxy_config(self) -> dict:
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "nftables",
            "clientConnection": {"kubeconfig": str(self.dir / "kube-proxy.kubeconfig")},
            "hostnameOverride": self.name,
            "clusterCIDR": CLUSTER_CIDR,
            "detectLocalMode": "ClusterCIDR",
            "oomScoreAdj": 0,
            # 0: leave the conntrack sysctls (hashsize is host-wide) alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": "0.0.0.0:10256",
        }

    def mounts_script(self) -> str:
        lines = ["set -eu"]
        for p in PRIVATE_PATHS:
            lines.append(f"mount --bind {shlex.quote(str(self.fs / p))} /{p}")
        if self.containerd_tmpfs:
            # containerd's images and snapshots (~1 GB a node, 30,000 files) in memory: quick
            # to import, and gone with the mount namespace instead of slowly deleted from disk.
            lines.append("mount -t tmpfs -o size=8g,mode=0711 npcluster-containerd /var/lib/containerd")
        for key in FAKE_SYSCTLS:
            lines.append(f"mount --bind {shlex.quote(str(self.dir / 'sysctl' / key.replace('/', '.')))} /proc/sys/{key}")
        if Path("/etc/machine-id").exists():
            lines.append(f"mount --bind {shlex.quote(str(self.dir / 'machine-id'))} /etc/machine-id")
        lines.append(f"touch {shlex.quote(str(self.dir / 'mounts.ready'))}")
        lines.append("exec sleep infinity")
        return "\n".join(lines) + "\n"

    # --- daemons -------------------------------------------------------------

    def start_runtime(self) -> None:
        make_cgroup(self.cgroup_root.lstrip("/"))
        make_cgroup(self.system_cgroup)
        # The mount namespace lives as long as this holder (and whatever joined it).
        holder = spawn(
            f"{self.name}-mounts",
            [*in_netns(self.ns), "unshare", "--mount", "--propagation", "slave", "--", "/bin/sh", self.dir / "mounts.sh"],
            self.system_cgroup,
            self.logs / "mounts.log",
        )
        wait_for(
            f"{self.name}'s mount namespace",
            lambda: (self.dir / "mounts.ready").exists() or gone(holder, "mounts"),
            T_PROCESS,
            poll=0.1,
            quiet=True,
            detail=lambda: tail(self.logs / "mounts.log"),
        )
        self.start_containerd()

    def start_containerd(self) -> None:
        say(f"{self.name}: containerd")
        pid = spawn(
            f"{self.name}-containerd",
            [*self.enter(), node_bin() / "containerd", "--config", self.dir / "containerd.toml"],
            self.system_cgroup,
            self.logs / "containerd.log",
        )
        wait_for(
            f"{self.name}'s containerd",
            lambda: answered(pid, "containerd", self.ctr("version")),
            T_PROCESS,
            poll=0.5,
            detail=lambda: tail(self.logs / "containerd.log"),
        )

    def ctr(self, *args: str) -> list:
        return [node_bin() / "ctr", "--address", self.socket, "--namespace", "k8s.io", *args]

    def import_images(self, tarballs: list[Path]) -> None:
        for tarball in tarballs:
            run(*self.ctr("images", "import", tarball), timeout=900)

    def start_kubelet(self) -> None:
        say(f"{self.name}: kubelet, kube-proxy")
        self.start_daemon("kubelet")
        self.start_daemon("kube-proxy")

    def start_daemon(self, component: str) -> None:
        """The kubelet or kube-proxy, in the node's namespaces."""
        argv = {
            "kubelet": [
                "--config",
                self.dir / "kubelet.yaml",
                "--kubeconfig",
                self.dir / "kubelet.kubeconfig",
                "--hostname-override",
                self.name,
                "--node-ip",
                self.ip,
            ],
            "kube-proxy": ["--config", self.dir / "kube-proxy.yaml"],
        }[component]
        spawn(
            f"{self.name}-{component}",
            [*self.enter(), node_bin() / component, *argv, "--v=2"],
            self.system_cgroup,
            self.logs / f"{component}.log",
        )

    def restart(self, component: str) -> None:
        """Stop one of the node's daemons (SIGTERM, as systemd would) and start it again.
        The pods and their network stay: only the daemon's process is new."""
        rec = recorded_pids().get(f"{self.name}-{component}")
        if rec is not None:
            stop(rec[0], f"{self.name} {component}", grace=60)
        if component == "containerd":
            self.start_containerd()
            return
        port = {"kubelet": 10250, "kube-proxy": 10256}[component]
        wait_for(
            f"{self.name}'s port {port} to be free",
            lambda: not run(*in_netns(self.ns), "ss", "-Hltn", f"sport = :{port}", check=False).stdout.strip(),
            T_PROCESS,
            poll=0.2,
        )
        self.start_daemon(component)
        self.wait_healthy(component, HEALTHZ[component])

    def reboot(self, nodes: list["Node"]) -> None:
        """A power cut and a cold boot. Every process of the node ends at once
        (SIGKILL: pods, shims, containerd, kubelet, the enforcer), and what a
        machine keeps only in memory goes with them: the network namespace
        (links, routes, nft tables, conntrack), the mount namespace (with the
        pods' network namespaces and containerd's tmpfs) and /run. What is on
        disk stays: /etc/cni/net.d, /opt/cni/bin, /var/lib (kubelet, host-local
        leases, nftpolicy's state dir). Then the node boots as a machine would:
        containerd (images imported again where its store was a tmpfs), the
        kubelet and kube-proxy, which bring its pods back."""
        say(f"{self.name}: power cut")
        tops = (self.system_cgroup, self.cgroup_root.lstrip("/"))
        if survivors := kill_all(lambda: cgroup_pids(*tops) | netns_pids([self.ns])):
            raise Failure(f"{self.name}: " + "; ".join(survivors))
        # Its underlay port first: a namespace is destroyed lazily, and the port
        # with it, after `ip netns delete` returns; the boot makes the port anew.
        ip(UNDERLAY_NS, "link", "delete", self.name)
        run("ip", "netns", "delete", self.ns)
        shutil.rmtree(self.fs / "run")
        (self.fs / "run").mkdir()
        (self.dir / "mounts.ready").unlink(missing_ok=True)
        say(f"{self.name}: boot")
        make_node_network(self, nodes)
        self.start_runtime()
        if self.containerd_tmpfs:
            import_images([self], image_list())
        self.start_kubelet()
        for component, url in HEALTHZ.items():
            self.wait_healthy(component, url)

    def wait_healthy(self, component: str, url: str) -> None:
        pid = recorded_pids()[f"{self.name}-{component}"][0]
        wait_for(
            f"{self.name}'s {component} to answer {url}",
            lambda: answered(pid, component, [*in_netns(self.ns), "curl", "-fsS", "-o", "/dev/null", url]),
            T_PROCESS,
            poll=0.5,
            detail=lambda: tail(self.logs / f"{component}.log"),
        )


def gone(pid: int, name: str) -> bool:
    if not alive(pid):
        raise Failure(f"{name} (pid {pid}) exited")
    return False


def nodes_of(count: int, containerd_tmpfs: bool = True) -> list[Node]:
    return [Node(i + 1, containerd_tmpfs) for i in range(count)]


def saved_nodes() -> list[Node]:
    try:
        state = json.loads(STATE.read_text())
        return nodes_of(state["nodes"], state.get("containerd_tmpfs", True))
    except (FileNotFoundError, ValueError, KeyError):
        return [Node(int(ns.rsplit("-", 1)[1])) for ns in netns_list() if ns.startswith(NS_PREFIX + "node-")]


def node_ready(obj: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))


def wait_nodes(nodes: list[Node]) -> None:
    def ready() -> bool:
        for node in nodes:
            for name in ("kubelet", "kube-proxy", "containerd"):
                rec = recorded_pids().get(f"{node.name}-{name}")
                if rec and not alive(rec[0]):
                    raise Failure(f"{node.name}'s {name} exited\n{tail(rec[1])}")
        listing = kubectl_json("get", "nodes")
        names = {n["metadata"]["name"] for n in (listing or {}).get("items", []) if node_ready(n)}
        return names >= {n.name for n in nodes}

    wait_for(
        "nodes " + ", ".join(n.name for n in nodes) + " to be Ready",
        ready,
        T_NODES,
        poll=2,
        detail=lambda: (
            kubectl("get", "nodes", "-o", "wide", check=False).stdout + "\n".join(tail(n.logs / "kubelet.log", 20) for n in nodes)
        ),
    )
    for node in nodes:
        obj = kubectl_json("get", "node", node.name)
        if obj and not obj["spec"].get("podCIDR"):
            # What host-local hands out there, for anything that reads it from the API.
            kubectl(
                "patch",
                "node",
                node.name,
                "--type=merge",
                "-p",
                json.dumps({"spec": {"podCIDR": node.cidr, "podCIDRs": [node.cidr]}}),
                check=False,
            )
        addresses = {a["type"]: a["address"] for a in (obj or {}).get("status", {}).get("addresses", [])}
        if addresses.get("InternalIP") != node.ip:
            raise Failure(f"{node.name}'s InternalIP is {addresses.get('InternalIP')}, not {node.ip}")
    for node in nodes:
        wait_for(
            f"kube-proxy's nftables table on {node.name}",
            lambda node=node: run(*in_netns(node.ns), "nft", "list", "table", "ip", "kube-proxy", check=False).returncode == 0,
            T_PROCESS,
            poll=1,
            detail=lambda node=node: tail(node.logs / "kube-proxy.log"),
        )


# --- up -------------------------------------------------------------------------------


def remnants() -> list[str]:
    found = [f"netns {ns}" for ns in netns_list() if ours(ns)]
    found += [f"cgroup {d}" for d in cgroup_dirs()[-1:]]
    if ROOT.exists():
        found.append(f"directory {ROOT}")
    return found


def healthy() -> bool:
    try:
        state = json.loads(STATE.read_text())
    except (FileNotFoundError, ValueError):
        return False
    if state.get("phase") != "up":
        return False
    for name, (pid, _) in recorded_pids().items():
        if not alive(pid):
            say(f"{name} (pid {pid}) is not running")
            return False
    listing = kubectl_json("get", "nodes")
    ready = {n["metadata"]["name"] for n in (listing or {}).get("items", []) if node_ready(n)}
    return ready >= {n.name for n in nodes_of(state["nodes"])}


def up(args: argparse.Namespace) -> int:
    global BUILD
    nodes = nodes_of(args.nodes, containerd_tmpfs=not args.containerd_on_disk)
    if healthy():
        if len(saved_nodes()) == len(nodes):
            say("the cluster is already up; nothing to do")
            status(args)
            return 0
        say(f"the cluster is up with {len(saved_nodes())} nodes, not {len(nodes)}: making it anew")
    if found := remnants():
        say("an earlier cluster is partly there (" + "; ".join(found) + "): removing it first")
        for p in teardown():
            say(f"PROBLEM: {p}")
    # Binaries and images first (they may take long to build); nothing is made before.
    BUILD = True
    check_tools()
    refs = image_list()
    pause = pause_image()
    if pause not in refs:
        raise Failure(f"the sandbox image {pause} is not in {images_dir() / 'images.txt'}")
    started = time.monotonic()
    ROOT.mkdir(parents=True)
    bins = {"kube": str(kube_bin()), "node": str(node_bin()), "images": str(images_dir())}
    saved = {"nodes": len(nodes), "containerd_tmpfs": not args.containerd_on_disk, "bins": bins}
    STATE.write_text(json.dumps({"phase": "starting", **saved}))
    CP_DIR.mkdir()
    for node in nodes:
        node.dir.mkdir()
    try:
        make_pki(nodes)
        for node in nodes:
            node.write_files()
        make_mount_points()
        make_network(nodes)
        start_control_plane()
        for node in nodes:
            node.start_runtime()
            node.start_kubelet()
        import_images(nodes, refs)
        wait_nodes(nodes)
        STATE.write_text(json.dumps({"phase": "up", **saved}))
        say(f"cluster up in {time.monotonic() - started:.0f} s")
        if not args.no_smoke:
            smoke(nodes)
    except BaseException as e:
        say(f"FAILED: {e}")
        dump_logs()
        if args.keep_on_failure:
            say("left as it is (--keep-on-failure); `scripts/cluster down` removes it")
        else:
            say("removing what was made (--keep-on-failure keeps it)")
            for p in teardown():
                say(f"PROBLEM: {p}")
        if isinstance(e, Failure):
            return 1
        raise
    print(kubectl("get", "nodes", "-o", "wide").stdout, end="", flush=True)
    say(
        f"done in {time.monotonic() - started:.0f} s. Admin kubeconfig: {ADMIN_KUBECONFIG} (server {API_URL},"
        f" reachable from {CP_NS} and the nodes): scripts/cluster kubectl get pods -A"
    )
    return 0


def import_images(nodes: list[Node], refs: dict[str, Path]) -> None:
    """Every archive of images.txt into every node's containerd, nodes in parallel."""
    tarballs = sorted(set(refs.values()))
    say(f"importing {len(tarballs)} image archives into each node: {', '.join(t.name for t in tarballs)}")
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(lambda node: node.import_images(tarballs), nodes))
    for node in nodes:
        have = set(run(*node.ctr("images", "list", "-q")).stdout.split())
        if missing := sorted(set(refs) - have):
            raise Failure(f"{node.name}: after the import, containerd lacks {', '.join(missing)}")
    say("images imported: " + ", ".join(sorted(refs)))


def dump_logs() -> None:
    for name, (pid, log) in recorded_pids().items():
        if not alive(pid) or name.endswith("kubelet") or name.endswith("containerd"):
            print(tail(log, 15), flush=True)


# --- the smoke test -----------------------------------------------------------------


SMOKE_NS = "cluster-smoke"


def smoke(nodes: list[Node]) -> None:
    """Two pods on two nodes: pod IPs, pod to pod across nodes, a ClusterIP Service
    through kube-proxy's nftables rules, the API from a pod by its ServiceAccount
    token, kubectl exec and logs; then it all goes."""
    a, b = nodes[0], nodes[-1]
    image = agnhost_image()
    say(f"smoke test: pods on {a.name} and {b.name} ({image or 'no agnhost image: pause'})")
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SMOKE_NS}})
    wait_for(
        "the default ServiceAccount of the smoke namespace (controller-manager)",
        lambda: kubectl_json("get", "serviceaccount", "default", "-n", SMOKE_NS),
        T_PROCESS,
        poll=1,
    )

    def pod(name: str, node: Node) -> dict:
        container = {"name": "main", "image": image or pause_image(), "imagePullPolicy": "Never"}
        if image:
            container |= {
                "args": ["netexec", "--http-port=8080"],
                "ports": [{"containerPort": 8080, "name": "http"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 2},
            }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": SMOKE_NS, "labels": {"app": name}},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node.name},
                "terminationGracePeriodSeconds": 1,
                "containers": [container],
            },
        }

    apply(
        pod("smoke-a", a),
        pod("smoke-b", b),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "smoke-b", "namespace": SMOKE_NS},
            "spec": {"selector": {"app": "smoke-b"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )

    def running() -> dict | None:
        pods = kubectl_json("get", "pods", "-n", SMOKE_NS)
        found = {p["metadata"]["name"]: p for p in (pods or {}).get("items", [])}
        if set(found) != {"smoke-a", "smoke-b"}:
            return None
        for p in found.values():
            st = p.get("status", {})
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))
            if st.get("phase") != "Running" or not st.get("podIP") or not ready:
                return None
        return found

    pods = wait_for(
        "the smoke pods to be Running and Ready with IPs",
        running,
        T_PODS,
        poll=2,
        detail=lambda: kubectl("get", "pods,events", "-n", SMOKE_NS, "-o", "wide", check=False).stdout,
    )
    ips = {name: p["status"]["podIP"] for name, p in pods.items()}
    for name, node in (("smoke-a", a), ("smoke-b", b)):
        actual = pods[name]["spec"]["nodeName"]
        prefix = node.cidr.rsplit(".", 2)[0] + "."
        if actual != node.name or not ips[name].startswith(prefix):
            raise Failure(f"{name} runs on {actual} with IP {ips[name]}; expected {node.name}, {node.cidr}")
        say(f"ok: {name} Running on {actual} with IP {ips[name]} (bridge cni0, {node.cidr})")
    if not image:
        say("no agnhost image: traffic checks skipped")
    else:
        svc = kubectl_json("get", "service", "smoke-b", "-n", SMOKE_NS)["spec"]["clusterIP"]
        checks = [
            (
                f"pod to pod across nodes: smoke-a ({a.name}) -> smoke-b {ips['smoke-b']}:8080 ({b.name}), kubectl exec",
                lambda: (
                    exec_ok("smoke-a", "curl", "-fsS", "--max-time", "5", f"http://{ips['smoke-b']}:8080/hostname") == "smoke-b"
                ),
            ),
            (
                f"node to pod across nodes: {a.ns} -> smoke-b {ips['smoke-b']}:8080",
                lambda: (
                    run(
                        *in_netns(a.ns), "curl", "-fsS", "--max-time", "5", f"http://{ips['smoke-b']}:8080/hostname", check=False
                    ).stdout.strip()
                    == "smoke-b"
                ),
            ),
            (
                f"ClusterIP Service (kube-proxy nftables): smoke-a -> smoke-b via {svc}:80",
                lambda: exec_ok("smoke-a", "curl", "-fsS", "--max-time", "5", f"http://{svc}/hostname") == "smoke-b",
            ),
            (
                f"ClusterIP Service from a node: {a.ns} -> {svc}:80",
                lambda: (
                    run(*in_netns(a.ns), "curl", "-fsS", "--max-time", "5", f"http://{svc}/hostname", check=False).stdout.strip()
                    == "smoke-b"
                ),
            ),
            (
                f"the API from a pod with its ServiceAccount token via the kubernetes Service ({KUBERNETES_SERVICE_IP}:443)",
                lambda: api_from_pod("smoke-b") == f"system:serviceaccount:{SMOKE_NS}:default",
            ),
            ("kubectl logs", lambda: kubectl("logs", "-n", SMOKE_NS, "smoke-b", check=False).returncode == 0),
        ]
        for what, check in checks:
            wait_for(what, check, T_TRAFFIC, poll=2, detail=lambda: "\n".join(tail(n.logs / "kube-proxy.log", 10) for n in nodes))
            say(f"ok: {what}")
    kubectl("delete", "namespace", SMOKE_NS, "--wait=true", "--timeout=300s", timeout=360)
    say("smoke test passed; its namespace is deleted")


def exec_ok(pod: str, *cmd: str) -> str | None:
    result = kubectl("exec", "-n", SMOKE_NS, pod, "--", *cmd, check=False, timeout=60)
    return result.stdout.strip() if result.returncode == 0 else None


def api_from_pod(pod: str) -> str | None:
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    review = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    out = exec_ok(
        pod,
        "sh",
        "-c",
        f'curl -fsS --max-time 10 --cacert {sa}/ca.crt -H "Authorization: Bearer $(cat {sa}/token)" '
        f"-H Content-Type:application/json -X POST -d '{review}' "
        '"https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/apis/authentication.k8s.io/v1/selfsubjectreviews"',
    )
    try:
        return json.loads(out or "")["status"]["userInfo"]["username"]
    except (ValueError, KeyError, TypeError):
        return None


# --- down -----------------------------------------------------------------------------


def teardown() -> list[str]:
    """Remove everything; returns what could not be removed."""
    nodes = saved_nodes()
    pids = recorded_pids()
    # Kubelets first, so that nothing restarts the pods removed next.
    for node in nodes:
        for name in ("kubelet", "kube-proxy"):
            if rec := pids.get(f"{node.name}-{name}"):
                stop(rec[0], f"{node.name}'s {name}", 20)
    for node in nodes:
        rec = pids.get(f"{node.name}-containerd")
        if rec and alive(rec[0]) and node.socket.exists():
            say(f"{node.name}: removing pod sandboxes (CNI DEL) through containerd")
            crictl = [node_bin() / "crictl", "--config", node.crictl_config, "--timeout", "60s"]
            result = run(*crictl, "rmp", "--all", "--force", check=False, timeout=T_DOWN)
            if result.returncode != 0:
                say(f"{node.name}: crictl rmp: {result.stderr.strip()[-500:]} (their processes are killed below)")
    for node in nodes:
        if rec := pids.get(f"{node.name}-containerd"):
            stop(rec[0], f"{node.name}'s containerd", 15)
    # The control plane in dependency order (an apiserver whose etcd is gone is slow to stop).
    order = ["kube-controller-manager", "kube-scheduler", "kube-apiserver", "etcd"]
    for name in order + sorted(set(pids) - set(order)):
        if rec := pids.get(name):
            stop(rec[0], name, 10)
    # Whatever is left in our cgroups (shims, containers, mount holders) or our network namespaces.
    ours_ns = [ns for ns in netns_list() if ours(ns)]
    problems = kill_all(lambda: cgroup_pids() | netns_pids(ours_ns))
    for d in cgroup_dirs():
        for _ in range(50):
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
        else:
            problems.append(f"cgroup {d} could not be removed")
    for ns in ours_ns:
        result = run("ip", "netns", "delete", ns, check=False)
        if result.returncode != 0:
            problems.append(f"netns {ns}: {result.stderr.strip()}")
    # Mounts were made only in the nodes' own mount namespaces, gone with their processes;
    # still, nothing under ROOT may be mounted here before it is removed.
    for mount in reversed(host_mounts_under(ROOT)):
        run("umount", "-l", mount, check=False)
    problems += remove_mount_points()
    if ROOT.exists():
        keep_logs()
        say(f"removing {ROOT} (containerd's images and snapshots, kubelet state, certificates)")
        shutil.rmtree(ROOT, ignore_errors=True)
        if ROOT.exists():
            problems.append(f"{ROOT} could not be removed")
    return problems


def host_mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split(" ")[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def keep_logs() -> None:
    shutil.rmtree(LAST_LOGS, ignore_errors=True)
    for logs in ROOT.glob("*/logs"):
        shutil.copytree(logs, LAST_LOGS / logs.parent.name, dirs_exist_ok=True)


def down(args: argparse.Namespace) -> int:
    if not remnants():
        say("no cluster here; nothing to remove")
        return 0
    say("removing the cluster")
    problems = teardown()
    if left := remnants():
        problems += [f"still there: {x}" for x in left]
    for p in problems:
        say(f"PROBLEM: {p}")
    if not problems:
        say(f"removed: processes, pods, network namespaces, cgroups, {ROOT} (last logs kept in {LAST_LOGS})")
    return 1 if problems else 0


# --- status -----------------------------------------------------------------------------


def status(args: argparse.Namespace) -> int:
    found = remnants()
    if not found:
        print("no cluster (scripts/cluster up makes one)")
        return 1
    try:
        phase = json.loads(STATE.read_text()).get("phase", "?")
    except (FileNotFoundError, ValueError):
        phase = "unknown"
    print(f"cluster: {phase}; root {ROOT}; admin kubeconfig {ADMIN_KUBECONFIG} (server {API_URL})")
    print("network namespaces: " + " ".join(ns for ns in netns_list() if ours(ns)))
    print("processes:")
    for name, (pid, log) in recorded_pids().items():
        print(f"  {name:34} pid {pid:<8} {'running' if alive(pid) else 'NOT RUNNING'}  {log}")
    pods = cgroup_pids()
    print(f"processes in cgroup {CGROUP}: {len(pods)}")
    if CP_NS in netns_list() and ADMIN_KUBECONFIG.exists():
        for what in (["get", "nodes", "-o", "wide"], ["get", "pods", "-A", "-o", "wide"]):
            result = kubectl(*what, check=False, timeout=30)
            print(f"$ kubectl {' '.join(what)}\n{result.stdout}{result.stderr}", end="")
    return 0 if phase == "up" else 1


# --- kubectl / exec passthrough ------------------------------------------------------------


def passthrough_kubectl(args: argparse.Namespace) -> int:
    return subprocess.call([*in_netns(CP_NS), str(kube_bin() / "kubectl"), "--kubeconfig", str(ADMIN_KUBECONFIG), *args.rest])


def passthrough_exec(args: argparse.Namespace) -> int:
    if args.where == "cp":
        prefix = in_netns(CP_NS)
    else:
        prefix = Node(int(args.where.rsplit("-", 1)[-1])).enter()
    env = dict(os.environ, PATH=f"{node_bin()}:{kube_bin()}:{SYSTEM_PATH}")
    if args.where != "cp":
        env["CRI_CONFIG_FILE"] = str(Node(int(args.where.rsplit("-", 1)[-1])).crictl_config)
        env["CONTAINERD_ADDRESS"] = "/run/containerd/containerd.sock"
        env["CONTAINERD_NAMESPACE"] = "k8s.io"
    else:
        env["KUBECONFIG"] = str(ADMIN_KUBECONFIG)
    return subprocess.call([*prefix, *args.rest], env=env)


# --- main -----------------------------------------------------------------------------------


@contextlib.contextmanager
def locked() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another `scripts/cluster up/down` is running; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/cluster", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="make the cluster (reuses a healthy one)")
    p.add_argument("--nodes", type=int, default=2, choices=range(1, 10), metavar="N")
    p.add_argument("--no-smoke", action="store_true", help="skip the smoke test")
    p.add_argument("--keep-on-failure", action="store_true", help="leave a failed cluster for inspection")
    p.add_argument(
        "--containerd-on-disk",
        action="store_true",
        help="keep containerd's images and snapshots under <root>/node-N/fs/var/lib/containerd "
        "instead of a tmpfs in the node's mount namespace (saves ~1 GB of memory a node; "
        "import and `down` are slower)",
    )
    sub.add_parser("smoke", help="run the smoke test on the running cluster")
    p = sub.add_parser("restart", help="restart a node's containerd, kubelet or kube-proxy")
    p.add_argument("node", help="node-N")
    p.add_argument("component", choices=("containerd", "kubelet", "kube-proxy"))
    p = sub.add_parser("reboot", help="cut a node's power and boot it again (see Node.reboot)")
    p.add_argument("node", help="node-N")
    sub.add_parser("down", help="remove everything the cluster made")
    sub.add_parser("status", help="what runs, and kubectl get nodes/pods")
    p = sub.add_parser("kubectl", help="kubectl as admin, from the control-plane namespace")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("exec", help="a command in a node's (or cp's) namespaces")
    p.add_argument("where", help="node-N or cp")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["kubectl"]:  # everything after goes to the command, options included
        args = argparse.Namespace(command="kubectl", rest=argv[1:])
    elif argv[:1] == ["exec"] and len(argv) > 2:
        args = argparse.Namespace(command="exec", where=argv[1], rest=argv[2:])
    else:
        args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("scripts/cluster: needs root (network namespaces, mounts, cgroups)", file=sys.stderr)
        return 2
    if args.command == "kubectl":
        return passthrough_kubectl(args)
    if args.command == "exec":
        return passthrough_exec(args)
    if args.command == "status":
        return status(args)
    if args.command == "smoke":
        try:
            smoke(saved_nodes())
        except Failure as e:
            say(f"FAILED: {e}")
            return 1
        return 0
    with locked():
        try:
            if args.command in ("restart", "reboot"):
                nodes = saved_nodes()
                node = next((n for n in nodes if n.name == args.node), None)
                if node is None:
                    raise Failure(f"no node {args.node} in the cluster")
                node.restart(args.component) if args.command == "restart" else node.reboot(nodes)
                return 0
            return up(args) if args.command == "up" else down(args)
        except Failure as e:
            say(f"FAILED: {e}")
            return 1


if __name__ == "__main__":
    sys.exit(main())
