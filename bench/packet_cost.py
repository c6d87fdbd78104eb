#!/usr/bin/env python3
"""Per-packet cost of the enforcer's ruleset, against a same-run baseline.

    sudo .venv/bin/python bench/packet_cost.py [--rounds 5] [--seconds 2] [--cpu 1]

What: TCP stream throughput (Mbit/s), request/response rate (1-byte ping-pong
on one connection, transactions/s) and new-connection rate (connect, 1-byte
request, 1-byte response, close; connections/s) between two pods bridged on
one node, under these rulesets of the node:

- baseline: conntrack on, no enforcer: one forward chain holding only
  `ct state established,related accept`;
- nftpolicy-N: the ruleset `rules.translate.desired_ruleset` renders for the
  node under test in a cluster of 10,000 pods and N policies (tests/scale.py),
  plus the two bench pods in namespace `bench` (default deny for ingress and
  egress, client may reach server on the bench ports, server admits every pod
  of the cluster on them: its peer set holds all 10,000 remote pod IPs);
- linear-N: what older iptables-style enforcers generate, written with nft so
  the comparison is the ruleset's shape, not the tool: after the conntrack
  accept, the server pod's chain holds one rule per policy and allowed peer
  IP (10 remote pod IPs per policy, so 10 N rules), the client's rules last,
  so every new connection walks all of them, then drop.

How: a node netns with a Linux bridge `cni0` and two pod netns on veths; the
bridge forwards client -> server and, since br_netfilter is on
(bridge-nf-call-iptables=1), every packet also passes the node's inet forward
hook, where the rulesets are loaded with `nft -f`. The load generator is
bench/packet_load.c, compiled at start.

Client and server are pinned to one CPU, so the veth and bridge work
(softirq on the sending CPU) runs there too: the test is bound by that one
core, and every nanosecond a rule costs shows. Left to the scheduler on this
2-vCPU machine, the rr rate jumps between about 17,000 and 150,000
transactions/s depending on whether client and server land on one vCPU or
two; pinned, it repeats within a few percent, as long as nothing else wants
that CPU. Other work on the shared machine does: so each run also measures
the CPU time of client, server and that CPU's ksoftirqd (this kernel has no
IRQ time accounting, so softirq work is charged to the task it runs in).
Their sum over the wall time is the "cpu share" the test got (1.00: the CPU
was all ours), and work per CPU-second is a second, contention-robust
estimate of the rate on a core of its own. The targets are judged on the
wall-clock rates the issue names; the per-CPU-second ratios are printed
beside them, to tell a real cost from a noisy neighbour.

With --cluster-policies, the configurations are instead baseline,
nftpolicy-100, and nftpolicy-100 with 100 Admin and 100 Baseline
ClusterNetworkPolicies loaded: either all selecting other namespaces
(cnp-200-elsewhere: none on the bench path; the cost must not move) or all
selecting every pod, with rules that match no bench traffic
(cnp-200-selecting: every new connection walks the 100 Admin policies' rules;
the Baseline ones are never reached, as NetworkPolicy isolates both bench
pods), measured on new connections only (crr).

Before measuring each loaded ruleset, a probe checks that it enforces (a
connection to the allowed port opens, one to a port no policy allows is
dropped; both open under baseline), and after measuring, the counters on the
allow rules must have counted packets. The configurations run in
interleaved rounds: each round runs one test under every configuration, then
the next test, in an order reversed every other round, so the slow drift of
a noisy machine falls on all alike. The table gives the median per
configuration and test, its spread (max - min over median) and the ratio of
medians to the baseline's, then the targets of the per-packet cost issue. Everything lives
in namespaces named pc-<random>-*, removed on exit, also on Ctrl-C; the
host's links and ruleset are never touched.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH.parent / "tests"))

from scale import NODE, scaled_objects  # noqa: E402

from rules.load import state_from_objects  # noqa: E402
from rules.nft import Verdict, render_text  # noqa: E402
from rules.trace import Packet, Tracer  # noqa: E402
from rules.translate import desired_ruleset  # noqa: E402

PODS = 10_000
NAMESPACES = 100
POLICY_COUNTS = (10, 100, 1000)
PEERS_PER_POLICY = 10  # linear rules per policy
BRIDGE_IP = "10.244.0.1"
CLIENT_IP = "10.244.0.10"
SERVER_IP = "10.244.0.20"
STREAM_PORT = 5001  # discard server
RR_PORT = 5002  # echo server, for rr and crr
DENIED_PORT = 5003  # echo server no policy allows
LINEAR_PEER_PORT = 9100
PROBE_TIMEOUT_MS = 200  # the bed's round trip is microseconds
TESTS = {"stream": ("Mbit/s", STREAM_PORT), "rr": ("trans/s", RR_PORT), "crr": ("conn/s", RR_PORT)}
TARGETS = {"stream": 0.95, "rr": 0.90, "crr": 0.85}
CRR_FLATNESS = 0.03
BIG, SMALL = max(POLICY_COUNTS), min(POLICY_COUNTS)

Results = dict[str, dict[str, list["Sample"]]]  # config -> test -> one sample per round
Counted = list[tuple[str, str, int]]  # (chain, comment, packets) of rules that counted


def run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


# --- rulesets ---------------------------------------------------------------


@dataclass
class Config:
    name: str
    path: Path
    rules: int  # rules in the loaded ruleset
    enforcing: bool  # False for the baseline: every port opens
    allow_comments: tuple[str, ...]  # rules that must count the bench traffic to {port}


def baseline_text() -> str:
    return (
        "table inet baseline {\n"
        "  chain forward {\n"
        "    type filter hook forward priority 0; policy accept;\n"
        "    ct state established,related accept\n"
        "  }\n"
        "}\n"
    )


def bench_objects() -> list[dict[str, Any]]:
    """Namespace `bench`, its client and server pods on the node under test, and their policies."""
    ports = [{"port": STREAM_PORT, "protocol": "TCP"}, {"port": RR_PORT, "protocol": "TCP"}]

    def pod(name: str, ip: str) -> dict[str, Any]:
        return {
            "kind": "Pod",
            "metadata": {"namespace": "bench", "name": name, "labels": {"app": name}},
            "spec": {"nodeName": NODE, "containers": [{"name": "main"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": ip}]},
        }

    def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "NetworkPolicy", "metadata": {"namespace": "bench", "name": name}, "spec": spec}

    return [
        {"kind": "Namespace", "metadata": {"name": "bench"}},
        pod("client", CLIENT_IP),
        pod("server", SERVER_IP),
        policy("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        policy(
            "client-egress",
            {
                "podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "server"}}}], "ports": ports}],
            },
        ),
        # From every pod of the cluster: the server's peer set holds all 10,000 remote pod IPs.
        policy(
            "server-ingress",
            {
                "podSelector": {"matchLabels": {"app": "server"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"namespaceSelector": {}}], "ports": ports}],
            },
        ),
    ]


CLUSTER_POLICIES_PER_TIER = 100


def cluster_policies(selecting: bool) -> list[dict[str, Any]]:
    """100 Admin and 100 Baseline ClusterNetworkPolicies, one Deny rule each in
    both directions, whose peers are pods of a namespace that does not exist:
    they match no bench traffic. ``selecting``: their subject is every pod;
    otherwise pods of namespaces that do not exist either."""
    subject = {"namespaces": {}} if selecting else {"namespaces": {"matchLabels": {"bench-cnp": "nowhere"}}}
    nowhere = [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "nowhere"}}}]
    return [
        {
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": f"{tier.lower()}-{i}"},
            "spec": {
                "tier": tier,
                "priority": i % 1000,
                "subject": subject,
                "ingress": [{"name": "deny-nowhere", "action": "Deny", "from": nowhere}],
                "egress": [{"name": "deny-nowhere", "action": "Deny", "to": nowhere}],
            },
        }
        for tier in ("Admin", "Baseline")
        for i in range(CLUSTER_POLICIES_PER_TIER)
    ]


def nftpolicy_config(policies: int, directory: Path, extra: list[dict[str, Any]] | None = None, name: str = "") -> Config:
    objects = scaled_objects(pods=PODS, policies=policies, namespaces=NAMESPACES) + bench_objects() + (extra or [])
    name = name or f"nftpolicy-{policies}"
    start = time.perf_counter()
    ruleset = desired_ruleset(state_from_objects(objects), NODE)
    path = directory / f"{name}.nft"
    path.write_text(render_text(ruleset) + "\n")
    counts = ruleset.object_count()
    print(
        f"  {name}: {counts['chains']} chains, {counts['sets']} sets, {counts['maps']} maps, "
        f"{counts['rules']} rules, {counts['elements']} elements; state and render {time.perf_counter() - start:.2f} s"
    )
    return Config(name, path, counts["rules"], True, ("bench/client-egress egress[0]", "bench/server-ingress ingress[0]"))


def cluster_pod_ips() -> list[str]:
    """The IPs of the scaled cluster's pods, the peers of the linear rules."""
    pods = [o for o in scaled_objects(pods=PODS, policies=0, namespaces=NAMESPACES) if o["kind"] == "Pod"]
    return [p["status"]["podIPs"][0]["ip"] for p in pods]


def linear_text(policies: int, pod_ips: list[str]) -> str:
    """One rule per (policy, peer IP) in the server's chain, the client's rules last."""
    peers = pod_ips[: policies * PEERS_PER_POLICY]
    rules = [f"    ip saddr {ip} ip daddr {SERVER_IP} tcp dport {LINEAR_PEER_PORT} accept" for ip in peers]
    rules += [
        f'    ip saddr {CLIENT_IP} ip daddr {SERVER_IP} tcp dport {port} counter accept comment "bench client port {port}"'
        for port in (STREAM_PORT, RR_PORT)
    ]
    return (
        "table inet linear {\n"
        "  chain forward {\n"
        "    type filter hook forward priority 0; policy accept;\n"
        "    ct state established,related accept\n"
        f"    ip daddr {SERVER_IP} jump server-ingress\n"
        "  }\n"
        "  chain server-ingress {\n" + "\n".join(rules) + "\n"
        '    counter drop comment "denied"\n'
        "  }\n"
        "}\n"
    )


def linear_config(policies: int, pod_ips: list[str], directory: Path) -> Config:
    path = directory / f"linear-{policies}.nft"
    path.write_text(linear_text(policies, pod_ips))
    rules = policies * PEERS_PER_POLICY + 2 + 3  # peers', the client's, and conntrack accept, jump, drop
    print(f"  linear-{policies}: {rules} rules")
    return Config(f"linear-{policies}", path, rules, True, ("bench client port {port}",))


def build_configs(directory: Path) -> list[Config]:
    baseline = directory / "baseline.nft"
    baseline.write_text(baseline_text())
    pod_ips = cluster_pod_ips()
    return (
        [Config("baseline", baseline, 1, False, ())]
        + [nftpolicy_config(n, directory) for n in POLICY_COUNTS]
        + [linear_config(n, pod_ips, directory) for n in POLICY_COUNTS]
    )


def build_cluster_policy_configs(directory: Path) -> list[Config]:
    baseline = directory / "baseline.nft"
    baseline.write_text(baseline_text())
    configs = [Config("baseline", baseline, 1, False, ()), nftpolicy_config(100, directory)]
    for selecting, name in ((False, "cnp-200-elsewhere"), (True, "cnp-200-selecting")):
        extra = cluster_policies(selecting)
        configs.append(nftpolicy_config(100, directory, extra, name))
        # What the bench connection's first packet walks, traced through the rendered table:
        # the Admin tier chains must be on it exactly when the policies select the bench pods.
        table = desired_ruleset(state_from_objects(scaled_objects(PODS, 100, NAMESPACES) + bench_objects() + extra), NODE)
        packet = Packet(ipaddress.ip_address(CLIENT_IP), ipaddress.ip_address(SERVER_IP), "tcp", RR_PORT)
        steps = Tracer(table.tables[0]).trace(packet).steps
        jumped = {v.target for step in steps for v in step.rule.statements if isinstance(v, Verdict) and v.kind == "jump"}
        tiers = sorted(c for c in jumped if c.startswith("cnp-admin-"))
        if bool(tiers) != selecting:
            raise RuntimeError(f"{name}: the bench connection walks tier chains {tiers}")
        print(f"    the bench connection walks {len(tiers)} Admin tier chains (one per direction when selecting)")
    return configs


# --- the bed ----------------------------------------------------------------


@dataclass
class Sample:
    """One run of one test: its rate, wall time, and the CPU time it used on the pinned CPU."""

    rate: float
    wall: float
    cpu: float

    @property
    def share(self) -> float:
        """The part of the pinned CPU the test got: 1.0 when no one else ran there."""
        return self.cpu / self.wall

    @property
    def per_cpu(self) -> float:
        """Work per CPU-second: the rate the test would reach with the CPU to itself."""
        return self.rate / self.share


def cpu_seconds(pid: int) -> float:
    """CPU time a task has run so far (/proc/PID/schedstat, nanoseconds)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


class Bed:
    """A node netns with bridge cni0, and client and server pod netns on veths."""

    def __init__(self, load: Path, cpu: int) -> None:
        self.prefix = f"pc-{secrets.token_hex(3)}"
        self.node, self.client, self.server = (f"{self.prefix}-{r}" for r in ("node", "client", "server"))
        self.load = load
        self.cpu = str(cpu)
        self.softirq_pid = next(
            int(p.parent.name) for p in Path("/proc").glob("[0-9]*/comm") if p.read_text().strip() == f"ksoftirqd/{cpu}"
        )
        self.servers: dict[int, subprocess.Popen] = {}

    def __enter__(self) -> Bed:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        for ns in (self.node, self.client, self.server):
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", self.node, "link", "add", "cni0", "type", "bridge")
        run("ip", "-n", self.node, "addr", "add", f"{BRIDGE_IP}/24", "dev", "cni0")
        run("ip", "-n", self.node, "link", "set", "cni0", "up")
        for ns, ip, port in ((self.client, CLIENT_IP, "veth-client"), (self.server, SERVER_IP, "veth-server")):
            run("ip", "-n", self.node, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            run("ip", "-n", self.node, "link", "set", port, "master", "cni0", "up")
            run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            run("ip", "-n", ns, "route", "add", "default", "via", BRIDGE_IP)
        self._bridge_netfilter_on()
        for port, mode in ((STREAM_PORT, "discard"), (RR_PORT, "echo"), (DENIED_PORT, "echo")):
            # `ip netns exec` and `taskset` exec: the process is the server itself
            self.servers[port] = subprocess.Popen(
                ["ip", "netns", "exec", self.server, "taskset", "-c", self.cpu, str(self.load), "server", str(port), mode]
            )
        self._wait_for_servers()

    def _bridge_netfilter_on(self) -> None:
        key = "net.bridge.bridge-nf-call-iptables"
        if self.in_node("sysctl", "-n", key).strip() != "1":
            self.in_node("sysctl", "-qw", f"{key}=1")
        print(f"  {key} = {self.in_node('sysctl', '-n', key).strip()} in the node netns")

    def _wait_for_servers(self) -> None:
        deadline = time.monotonic() + 5
        while not all(self.probe(p) for p in (STREAM_PORT, RR_PORT, DENIED_PORT)):
            if time.monotonic() > deadline or any(s.poll() is not None for s in self.servers.values()):
                raise RuntimeError("the bench servers did not start")
            time.sleep(0.05)

    def in_node(self, *args: str) -> str:
        return run("ip", "netns", "exec", self.node, *args)

    def probe(self, port: int) -> bool:
        """Whether a TCP connection client -> server:port opens."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.client, str(self.load), "probe", SERVER_IP, str(port), str(PROBE_TIMEOUT_MS)],
            capture_output=True,
            text=True,
        )
        if result.returncode > 1:
            raise RuntimeError(f"probe: {result.stderr.strip()}")
        return result.returncode == 0

    def measure(self, test: str, seconds: float) -> Sample:
        port = TESTS[test][1]
        helpers = (self.servers[port].pid, self.softirq_pid)
        before = sum(map(cpu_seconds, helpers))
        out = run(
            "ip",
            "netns",
            "exec",
            self.client,
            "taskset",
            "-c",
            self.cpu,
            str(self.load),
            test,
            SERVER_IP,
            str(port),
            str(seconds),
        )
        helpers_cpu = sum(map(cpu_seconds, helpers)) - before
        rate, wall, client_cpu = map(float, out.split())
        return Sample(rate, wall, client_cpu + helpers_cpu)

    def load_ruleset(self, path: Path) -> None:
        """Replace the node's ruleset with the file's."""
        self.in_node("nft", "flush", "ruleset")
        self.in_node("nft", "-f", str(path))

    def counted_rules(self) -> Iterator[tuple[str, str, int]]:
        """(chain, comment, packets) of each rule with a counter that counted something."""
        for item in json.loads(self.in_node("nft", "-j", "list", "ruleset"))["nftables"]:
            rule = item.get("rule")
            if not rule:
                continue
            for expr in rule["expr"]:
                if "counter" in expr and expr["counter"]["packets"]:
                    yield rule["chain"], rule.get("comment", ""), expr["counter"]["packets"]

    def close(self) -> None:
        for server in self.servers.values():
            server.terminate()
        for server in self.servers.values():
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
        for ns in (self.node, self.client, self.server):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# --- measuring --------------------------------------------------------------


def check_enforces(bed: Bed, config: Config) -> None:
    allowed, other = bed.probe(RR_PORT), bed.probe(DENIED_PORT)
    if not allowed or other == config.enforcing:
        raise RuntimeError(
            f"{config.name}: a connection to port {RR_PORT} {'opens' if allowed else 'is blocked'}, "
            f"to port {DENIED_PORT} {'opens' if other else 'is blocked'}: the ruleset does not do what it should"
        )


def check_counted(bed: Bed, config: Config, port: int) -> Counted:
    counted = list(bed.counted_rules())
    for comment in (c.format(port=port) for c in config.allow_comments):
        if not any(c.startswith(comment) for _, c, _ in counted):
            raise RuntimeError(f"{config.name}: the allow rule {comment!r} counted no packet")
    return counted


def run_rounds(
    bed: Bed, configs: list[Config], rounds: int, seconds: float, tests: tuple[str, ...] = tuple(TESTS)
) -> tuple[Results, dict[str, Counted]]:
    """The value of each test per round, and the counters each configuration's last run left.

    Each round runs one test under every configuration before the next test,
    so the runs compared with each other are close in time."""
    results: Results = {c.name: {t: [] for t in tests} for c in configs}
    counters: dict[str, Counted] = {}
    for r in range(rounds):
        order = configs if r % 2 == 0 else configs[::-1]
        for test in tests:
            line = []
            for config in order:
                bed.load_ruleset(config.path)
                check_enforces(bed, config)
                value = bed.measure(test, seconds)
                counters[config.name] = check_counted(bed, config, TESTS[test][1])
                results[config.name][test].append(value)
                line.append(f"{config.name} {value.rate:,.0f} ({value.share:.2f})")
            print(f"  round {r + 1}/{rounds} {test:<6} {TESTS[test][0]:<7} (cpu share): " + ", ".join(line), flush=True)
    return results, counters


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: how busy the shared machine was."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def median(samples: list[Sample], key: Callable[[Sample], float]) -> float:
    return statistics.median(key(x) for x in samples)


def spread(samples: list[Sample]) -> float:
    rates = [x.rate for x in samples]
    return (max(rates) - min(rates)) / statistics.median(rates)


def rate(x: Sample) -> float:
    return x.rate


def per_cpu(x: Sample) -> float:
    return x.per_cpu


def share(x: Sample) -> float:
    return x.share


def ratio(results: Results, config: str, test: str, key: Callable[[Sample], float], to: str = "baseline") -> float:
    return median(results[config][test], key) / median(results[to][test], key)


def report_table(configs: list[Config], results: Results) -> None:
    for test in results[configs[0].name]:
        unit = TESTS[test][0]
        print(
            f"\n{test + ' ' + unit:<16} {'rules':>6} {'median':>11} {'spread':>7} {'ratio':>6} | "
            f"{'cpu share':>9} {'per CPU-s':>11} {'ratio':>6}"
        )
        for c in configs:
            samples = results[c.name][test]
            print(
                f"{c.name:<16} {c.rules:>6} {median(samples, rate):>11,.0f} {spread(samples):>7.1%} "
                f"{ratio(results, c.name, test, rate):>6.3f} | {median(samples, share):>9.2f} "
                f"{median(samples, per_cpu):>11,.0f} {ratio(results, c.name, test, per_cpu):>6.3f}"
            )


def report_cluster_policies(configs: list[Config], results: Results, counters: dict[str, Counted]) -> None:
    report_table(configs, results)
    print("\nrules that counted packets in the last run (the path of the bench traffic):")
    for chain, comment, packets in counters["cnp-200-selecting"]:
        print(f"  {'cnp-200-selecting':<18} {chain:<45} {packets:>9,}  {comment}")
    print(f"\n{'new connections (crr), same-run ratios of medians':<60}{'wall-clock':>12}{'per CPU-second':>16}")
    for config in ("cnp-200-elsewhere", "cnp-200-selecting"):
        for to in ("nftpolicy-100", "baseline"):
            values = [ratio(results, config, "crr", key, to) for key in (rate, per_cpu)]
            print(f"  {config + ' / ' + to:<58}" + "".join(f"{v:>12.3f}    " for v in values).rstrip())


def report(configs: list[Config], results: Results, counters: dict[str, Counted]) -> None:
    report_table(configs, results)

    print(f"\nrules that counted packets in the last run ({list(TESTS)[-1]}; the path of the bench traffic):")
    for name in (f"nftpolicy-{BIG}", f"linear-{BIG}"):
        for chain, comment, packets in counters[name]:
            print(f"  {name:<15} {chain:<45} {packets:>9,}  {comment}")

    big, small = f"nftpolicy-{BIG}", f"nftpolicy-{SMALL}"
    print(f"\n{'targets (' + big + ', ' + f'{PODS:,}' + ' pods; same-run ratios)':<52}{'wall-clock':>16}{'per CPU-second':>16}")

    def target_line(label: str, test: str, to: str, met: Callable[[float], bool]) -> str:
        values = [ratio(results, big, test, key, to) for key in (rate, per_cpu)]
        return f"  {label:<50}" + "".join(f"{f'{v:.3f} ' + ('PASS' if met(v) else 'MISS'):>16}" for v in values)

    for test, floor in TARGETS.items():
        print(target_line(f"{test}: {big} / baseline >= {floor:.2f}", test, "baseline", lambda v: v >= floor))
    print(target_line(f"crr: {big} / {small} within {CRR_FLATNESS:.0%}", "crr", small, lambda v: abs(v - 1) <= CRR_FLATNESS))
    linear = f"linear-{BIG}"
    print(
        f"  {'beside it, crr: ' + linear + ' / baseline':<50}"
        + "".join(f"{ratio(results, linear, 'crr', key):>11.3f}     " for key in (rate, per_cpu)).rstrip()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over all configurations (default 5)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each test run (default 2)")
    parser.add_argument("--cpu", type=int, default=1, help="the CPU client and server are pinned to (default 1)")
    parser.add_argument(
        "--cluster-policies",
        action="store_true",
        help="new connections with 100 Admin + 100 Baseline ClusterNetworkPolicies loaded against none, in the same run",
    )
    args = parser.parse_args()
    if not 0 <= args.cpu < (os.cpu_count() or 1):
        parser.error(f"--cpu: no CPU {args.cpu} here")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on SIGTERM as on Ctrl-C
    with tempfile.TemporaryDirectory(prefix="packet-cost-") as tmp:
        directory = Path(tmp)
        load = directory / "packet_load"
        run("gcc", "-O2", "-Wall", "-o", str(load), str(BENCH / "packet_load.c"))
        print(f"rulesets ({PODS:,} pods, {NAMESPACES} namespaces, N policies from tests/scale.py + 3 bench policies):")
        configs = build_cluster_policy_configs(directory) if args.cluster_policies else build_configs(directory)
        tests = ("crr",) if args.cluster_policies else tuple(TESTS)
        print(f"load average at the start: {load_average()}")
        with Bed(load, args.cpu) as bed:
            print(
                f"bed {bed.prefix}-*: {args.rounds} rounds of {len(configs)} configurations x {len(tests)} tests "
                f"x {args.seconds:g} s, client and server on CPU {args.cpu}"
            )
            results, counters = run_rounds(bed, configs, args.rounds, args.seconds, tests)
        print(f"load average at the end: {load_average()}")
        (report_cluster_policies if args.cluster_policies else report)(configs, results, counters)


if __name__ == "__main__":
    main()
