"""The ``nftpolicy`` command: a thin click layer over the enforcer's functions.

Exit codes (``ExitCode``): 0 success (for ``explain``: the flow is allowed;
for ``verify``: no drift), 1 ``explain`` found the flow denied, 2 invalid
input (a malformed or invalid object, an unknown pod, a bad option), 3
``verify`` found the kernel differs from what the cluster state calls for.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from enum import IntEnum
from pathlib import Path

import click

from enforcer.audit import offline
from enforcer.node.cni_install import SHIM
from rules.load import InvalidObject


class ExitCode(IntEnum):
    OK = 0
    DENIED = 1
    INVALID_INPUT = 2
    DRIFT = 3


def _fail(message: str) -> None:
    click.echo(f"nftpolicy: {message}", err=True)
    sys.exit(ExitCode.INVALID_INPUT)


_files = click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True),
    help="Manifest file or directory (YAML or JSON; multi-document and kind: List). Repeatable.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Kubernetes NetworkPolicy enforcement on nftables."""


@main.command()
@_files
@click.option("--node", required=True, help="Node whose pods the ruleset protects.")
@click.option("--format", "fmt", type=click.Choice(["nft", "json"]), default="nft", show_default=True)
def render(paths: tuple[str, ...], node: str, fmt: str) -> None:
    """Print the nftables ruleset NODE needs for the state in the files."""
    try:
        click.echo(offline.render(paths, node, fmt), nl=False)
    except (InvalidObject, offline.UsageError) as e:
        _fail(str(e))


@main.command()
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    type=click.Path(exists=True),
    help="Manifest file or directory (YAML or JSON; multi-document and kind: List). Repeatable.",
)
@click.option("--live", is_flag=True, help="Trace the flow through this node's live kernel rules instead (IPs only).")
@click.option("--from", "src", required=True, metavar="NS/POD|IP", help="Source of the flow.")
@click.option("--to", "dst", required=True, metavar="NS/POD|IP", help="Destination of the flow.")
@click.option("--port", required=True, metavar="N[/PROTO]", help="Destination port; protocol TCP (default), UDP or SCTP.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def explain(paths: tuple[str, ...], live: bool, src: str, dst: str, port: str, fmt: str) -> None:
    """Say whether a new connection is allowed, and which policy rules decide it.

    From manifests (-f), by the reference evaluator; or, with --live, by the
    kernel rule of this node that decides it. Exits 0 when allowed and 1 when denied.
    """
    if live == bool(paths):
        _fail("explain: give either -f PATH... or --live")
    if live:
        _explain_live(src, dst, port, fmt)
        return
    try:
        explanation = offline.explain(paths, src, dst, port)
    except (InvalidObject, offline.UsageError) as e:
        _fail(str(e))
        return
    if fmt == "json":
        click.echo(json.dumps(explanation.as_json(), indent=2))
    else:
        click.echo(explanation.as_text(), nl=False)
    sys.exit(ExitCode.OK if explanation.allowed else ExitCode.DENIED)


def _explain_live(src: str, dst: str, port: str, fmt: str) -> None:
    from enforcer.kernel import KernelError
    from enforcer.kernel.nftables import NftablesKernel
    from enforcer.audit.live import explain_live
    from enforcer.node.netlink import local_addresses

    try:
        number, protocol = offline.parse_port(port)
        answer = explain_live(NftablesKernel(), src, dst, number, protocol, local_addresses())
    except offline.UsageError as e:
        _fail(str(e))
    except ValueError:
        _fail(f"--live takes IP addresses: {src} -> {dst}")
    except KernelError as e:
        _fail(str(e))
    if fmt == "json":
        click.echo(json.dumps(answer, indent=2))
    else:
        rule = answer["rule"]
        decided = f"{rule['chain']}: {rule['rule']}" if rule else answer["reason"] or "the base chain's policy (accept)"
        click.echo(
            f"{'ALLOWED' if answer['allowed'] else 'DENIED'}  {src} -> {dst} {answer['protocol']}/{number}\n  decided by {decided}"
        )
    sys.exit(ExitCode.OK if answer["allowed"] else ExitCode.DENIED)


@main.command()
def demo() -> None:
    """Enforce the example policies on two simulated nodes and show the connectivity matrix (root)."""
    from enforcer.testbed import demo as demo_module  # the test bed: only the demo needs it

    sys.exit(ExitCode.OK if demo_module.run() else ExitCode.DENIED)


@main.command()
@click.option("--node", required=True, help="This node's name: its pods get per-pod rules.")
@click.option(
    "--source",
    "source_dir",
    type=click.Path(exists=True),
    help="Directory (or file) of Kubernetes YAML with the cluster state; watched for changes.",
)
@click.option("--kubeconfig", type=click.Path(exists=True), help="Watch the Kubernetes API with this kubeconfig.")
@click.option("--in-cluster", is_flag=True, help="Watch the Kubernetes API with the pod's service account.")
@click.option(
    "--state-dir",
    default="/var/lib/nftpolicy",
    show_default=True,
    type=click.Path(),
    help="Where the CNI plugin keeps pod records.",
)
@click.option(
    "--socket",
    "socket_path",
    default="/run/nftpolicy/cni.sock",
    show_default=True,
    type=click.Path(),
    help="Unix socket the CNI plugin calls.",
)
@click.option("--poll-interval", default=0.2, show_default=True, help="Seconds between looks at the source and records.")
@click.option(
    "--cut-established/--keep-established",
    default=True,
    show_default=True,
    help="Remove conntrack entries of established connections that a change denies.",
)
@click.option("--health-port", type=int, default=None, help="Serve /healthz and /readyz on this TCP port.")
@click.option(
    "--verify-interval",
    default=60.0,
    show_default=True,
    help="Seconds between reading the live tables back to find and undo hand-made changes (0: never).",
)
@click.option("--log-group", type=int, default=None, help="Log denied new connections (rate-limited) to this NFLOG group.")
@click.option(
    "--deny-log",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --log-group: write the denied flows here as JSON lines (default: standard output).",
)
@click.option(
    "--pod-bridge",
    "pod_bridges",
    multiple=True,
    default=("cni0",),
    show_default=True,
    help="A bridge the CNI bridge plugin attaches pods to (repeat for more): every port of it is checked, "
    "whatever its name; ports of the node's other bridges are left alone.",
)
def enforce(
    node: str,
    source_dir: str | None,
    kubeconfig: str | None,
    in_cluster: bool,
    state_dir: str,
    socket_path: str,
    poll_interval: float,
    cut_established: bool,
    health_port: int | None,
    verify_interval: float,
    log_group: int | None,
    deny_log: str | None,
    pod_bridges: tuple[str, ...],
) -> None:
    """Keep this node's nftables tables in step with the cluster state and CNI registrations.

    The state comes from exactly one of --source, --kubeconfig and --in-cluster.
    """
    from enforcer.node.cni_server import CniServer
    from enforcer.node.conntrack import ConnectionCutter
    from enforcer.daemon import Enforcer, EnforcerConfig
    from enforcer.kernel.nftables import NftablesKernel
    from enforcer.node.netlink import Links

    if sum(map(bool, (source_dir, kubeconfig, in_cluster))) != 1:
        _fail("enforce: give exactly one of --source DIR, --kubeconfig PATH, --in-cluster")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if source_dir:
        from enforcer.sources.directory import DirectorySource

        source, origin = DirectorySource(source_dir), source_dir
    else:
        from enforcer.sources.kubernetes import ApiSource, api_client

        api = api_client(kubeconfig)
        source, origin = ApiSource(api), api.configuration.host
    config = EnforcerConfig(
        node,
        origin,
        Path(state_dir),
        poll_interval,
        cut_established,
        verify_interval=verify_interval,
        log_group=log_group,
        pod_bridges=tuple(pod_bridges),
    )
    enforcer = Enforcer(config, source, NftablesKernel(), Links(), ConnectionCutter() if cut_established else None)
    server = CniServer(socket_path, enforcer)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve, args=(stop,), daemon=True).start()
    if log_group is not None:
        from enforcer.observability import deny_log as denied

        out = open(deny_log, "a") if deny_log else sys.stdout
        threading.Thread(target=denied.run, args=(log_group, enforcer.status, out, stop), daemon=True).start()
    if health_port is not None:
        from enforcer.observability import health

        threading.Thread(target=health.serve, args=(health_port, enforcer.status, enforcer.kernel, stop), daemon=True).start()
    enforcer.run(stop)


@main.group()
def cni() -> None:
    """Install or remove the chained CNI plugin on this node."""


_conf_dir = click.option("--conf-dir", default="/etc/cni/net.d", show_default=True, type=click.Path(exists=True, file_okay=False))
_bin_dir = click.option("--bin-dir", default="/opt/cni/bin", show_default=True, type=click.Path(exists=True, file_okay=False))


@cni.command("install")
@_conf_dir
@_bin_dir
@click.option(
    "--form",
    type=click.Choice(["shim", "python"]),
    default=None,
    help="shim: a static executable that forwards each call to the enforcer (no Python on the node); "
    "python: the plugin run by the node's Python. Default: shim if there is one at --shim, else python.",
)
@click.option(
    "--shim",
    default=str(SHIM),
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The shim executable to install (the image has it here).",
)
@click.option(
    "--python",
    default="/usr/bin/python3",
    show_default=True,
    help="With --form python: the node's Python (3.9 or newer) that runs the plugin.",
)
@click.option("--state-dir", default=None, help="Plugin option stateDir (default /var/lib/nftpolicy).")
@click.option("--socket", "socket_path", default=None, help="Plugin option socket (default /run/nftpolicy/cni.sock).")
@click.option("--timeout", type=float, default=None, help="Plugin option timeoutSeconds (default 10).")
@click.option(
    "--fail-open",
    is_flag=True,
    help="Let pods run unprotected when the enforcer cannot be reached (default: the shim "
    "fails the ADD so the runtime retries; the python form holds the pod's veth down).",
)
def cni_install(
    conf_dir: str,
    bin_dir: str,
    form: str | None,
    shim: str,
    python: str,
    state_dir: str | None,
    socket_path: str | None,
    timeout: float | None,
    fail_open: bool,
) -> None:
    """Put the plugin in BIN_DIR and chain it right after bridge in the node's conflist."""
    from enforcer.node.cni_install import InstallError, default_form, install

    entry = {k: v for k, v in (("stateDir", state_dir), ("socket", socket_path), ("timeoutSeconds", timeout)) if v is not None}
    if fail_open:
        entry["failOpen"] = True
    form = form or default_form(shim)
    try:
        path = install(conf_dir, bin_dir, entry, python, form, shim)
    except (InstallError, OSError) as e:
        _fail(str(e))
    click.echo(f"nftpolicy chained after bridge in {path}; plugin ({form} form) in {bin_dir}")


@cni.command("uninstall")
@_conf_dir
@_bin_dir
def cni_uninstall(conf_dir: str, bin_dir: str) -> None:
    """Unchain the plugin from the node's conflist and remove it from BIN_DIR."""
    from enforcer.node.cni_install import InstallError, uninstall

    try:
        path = uninstall(conf_dir, bin_dir)
    except (InstallError, OSError) as e:
        _fail(str(e))
    click.echo(f"nftpolicy removed from {path or conf_dir} and {bin_dir}")


@main.command()
@click.option("--node", required=True, help="This node's name.")
@click.option("--source", "source_dir", type=click.Path(exists=True), help="Directory (or file) of Kubernetes YAML.")
@click.option("--kubeconfig", type=click.Path(exists=True), help="Read the cluster state from the API with this kubeconfig.")
@click.option("--in-cluster", is_flag=True, help="Read the cluster state from the API with the pod's service account.")
@click.option("--state-dir", default="/var/lib/nftpolicy", show_default=True, type=click.Path(), help="The CNI pod records.")
def verify(node: str, source_dir: str | None, kubeconfig: str | None, in_cluster: bool, state_dir: str) -> None:
    """Compare this node's live nftables tables with what the cluster state calls for.

    Prints each missing, extra or changed chain, set and map; exits 3 on drift.
    """
    from enforcer.audit.verify import VerifyError, drift, state_from_api, state_from_directory
    from enforcer.kernel.nftables import NftablesKernel
    from enforcer.node.netlink import Links

    if sum(map(bool, (source_dir, kubeconfig, in_cluster))) != 1:
        _fail("verify: give exactly one of --source DIR, --kubeconfig PATH, --in-cluster")
    try:
        state = state_from_directory(source_dir) if source_dir else state_from_api(kubeconfig)
        lines, warnings = drift(state, node, state_dir, NftablesKernel(), Links().foreign_ports)
    except VerifyError as e:
        _fail(str(e))
    for warning in warnings:
        click.echo(f"nftpolicy: {warning}", err=True)
    for line in lines:
        click.echo(line)
    if lines:
        sys.exit(ExitCode.DRIFT)
    click.echo(f"in sync: the kernel's nftpolicy tables are what the cluster state calls for on node {node}")


@main.command()
@click.option("--node", default="", help="This node's name, for the report.")
@click.option("--state-dir", default="/var/lib/nftpolicy", show_default=True, type=click.Path(), help="The CNI pod records.")
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    type=click.Path(exists=True),
    help="Cluster state (YAML), to name remote peers by pod. Repeatable.",
)
@click.option("--namespace", default=None, help="Only pods of this namespace.")
@click.option("--pod", "pod_key", default=None, metavar="NS/POD", help="Only this pod.")
@click.option("--policy", "policy_key", default=None, metavar="NS/NAME", help="Only pods this policy isolates.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
def dump(
    node: str,
    state_dir: str,
    paths: tuple[str, ...],
    namespace: str | None,
    pod_key: str | None,
    policy_key: str | None,
    fmt: str,
) -> None:
    """What the live kernel of this node enforces, per local pod: isolation, the
    policies that select it, each rule with its peers and counters.

    JSON and YAML follow the versioned schema nftpolicy.dump/v1.
    """
    import yaml

    from enforcer.kernel import KernelError
    from enforcer.kernel.nftables import NftablesKernel
    from enforcer.audit.live import dump_live
    from enforcer.registrations import NoStateDir
    from rules.audit import as_table
    from enforcer.sources.manifests import load_state

    try:
        report = dump_live(NftablesKernel(), node, state_dir, load_state(paths) if paths else None)
    except (KernelError, InvalidObject, NoStateDir) as e:
        _fail(str(e))
    report["pods"] = [
        p
        for p in report["pods"]
        if (namespace is None or p["pod"].split("/")[0] == namespace)
        and (pod_key is None or p["pod"] == pod_key)
        and (policy_key is None or policy_key in p["ingress"]["policies"] + p["egress"]["policies"])
    ]
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    elif fmt == "yaml":
        click.echo(yaml.safe_dump(report, sort_keys=False), nl=False)
    else:
        click.echo(as_table(report), nl=False)
