"""``nftpolicy verify``: does this node's kernel hold what the cluster state
calls for? The desired tables are rendered from the state, the node's CNI
records and the enforcer's own settings (its status file), and compared with
the live ones object by object (``rules.drift``)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from enforcer.kernel import Kernel, KernelError
from enforcer.registrations import NoStateDir, node_records, record_interfaces
from rules.drift import table_drift
from rules.model import ClusterState
from rules.translate import desired_ruleset


class VerifyError(Exception):
    """Verify could not compare: no cluster state, or what it needs is unreadable."""


def state_from_directory(source_dir: str) -> ClusterState:
    from enforcer.sources.directory import DirectorySource

    source = DirectorySource(source_dir)
    source.poll()
    if source.state is None:
        raise VerifyError(source.error or f"{source_dir}: no cluster state")
    return source.state


def state_from_api(kubeconfig: str | None, wait: float = 30.0) -> ClusterState:
    """One full list of the API (``kubeconfig`` None: in-cluster)."""
    from enforcer.sources.kubernetes import ApiSource, api_client

    source = ApiSource(api_client(kubeconfig))
    stop = threading.Event()
    source.start(stop)
    try:
        deadline = time.monotonic() + wait
        while not source.poll():
            if time.monotonic() > deadline:
                raise VerifyError(f"the API did not answer in {wait:.0f} s: {source.error}")
            time.sleep(0.1)
    finally:
        stop.set()
    assert source.state is not None
    return source.state


def drift(state: ClusterState, node: str, state_dir: str, kernel: Kernel, foreign_ports) -> tuple[list[str], list[str]]:
    """(each difference between desired and live tables, each record that cannot
    be registered). ``foreign_ports``: a callable from the pod bridges to the
    ports of the node's other bridges, as the enforcer sees them."""
    try:
        records, errors = node_records(state_dir)
    except NoStateDir as e:
        raise VerifyError(str(e)) from e
    interfaces, refused = record_interfaces(records)
    status_path = Path(state_dir) / "status.json"
    try:  # the enforcer's own settings that shape the tables
        settings = json.loads(status_path.read_text()) if status_path.exists() else {}
        log_group, pod_bridges = settings.get("logGroup"), settings.get("podBridges", ["cni0"])
    except (OSError, ValueError, AttributeError) as e:
        raise VerifyError(f"{status_path}: unreadable ({e}); the enforcer rewrites it within its verify interval") from e
    lines = []
    try:
        for table in desired_ruleset(state, node, interfaces, log_group, foreign_ports=foreign_ports(pod_bridges)).tables:
            lines += table_drift(table, kernel.read(table.family, table.name))
    except KernelError as e:
        raise VerifyError(f"cannot read the kernel's tables: {e}") from e
    return lines, errors + refused
