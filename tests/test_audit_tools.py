"""The audit tools (dump, verify) on a fake kernel: what they say when pointed
at the wrong place, which counters they call shared, and how they show named
ports. The same tools on real packets are in test_node.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from builders import namespace, pod, state
from cni.records import PodRecord, write_record
from enforcer.audit.live import dump_live
from enforcer.audit.verify import VerifyError, drift
from enforcer.kernel.fake import FakeKernel
from enforcer.registrations import NoStateDir
from rules.model import PodInterface
from rules.nft import create_transaction
from rules.translate import desired_ruleset


def node(tmp_path: Path, *objects: dict, registered: tuple[str, ...] = ()) -> tuple[FakeKernel, Path]:
    """A fake kernel holding the node's tables, and a state dir with records for ``registered`` pods."""
    cluster = state(*objects)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "status.json").write_text("{}")
    interfaces = []
    for key in registered:
        p = next(p for p in cluster.pods if p.key == key)
        ns, name = key.split("/")
        record = PodRecord(f"c{name}".ljust(64, "0"), ns, name, "uid", f"veth{name}", "02:00:00:00:00:01", tuple(map(str, p.ips)))
        write_record(state_dir, record)
        interfaces.append(PodInterface(ns, name, record.container_id, record.host_ifname, record.mac, p.ips))
    kernel = FakeKernel()
    kernel.apply([create_transaction(t) for t in desired_ruleset(cluster, "n1", interfaces).tables])
    return kernel, state_dir


BASE = [namespace("x"), pod("x/a", "10.0.1.1", labels={"app": "a"}, ports=[("http", 8080)])]


@pytest.mark.parametrize("tool", ["dump", "verify"])
def test_a_wrong_state_dir_is_named_not_answered_as_a_node_without_pods(tmp_path, tool) -> None:
    kernel, _ = node(tmp_path, *BASE, registered=("x/a",))
    wrong = str(tmp_path / "elsewhere")
    with pytest.raises((NoStateDir, VerifyError), match="no pod records found: .*elsewhere has no status.json"):
        if tool == "dump":
            dump_live(kernel, "n1", wrong)
        else:
            drift(state(*BASE), "n1", wrong, kernel, lambda bridges: ())


def test_a_state_dir_with_no_pods_yet_is_a_node_without_pods(tmp_path) -> None:
    kernel, state_dir = node(tmp_path, *BASE)
    assert dump_live(kernel, "n1", str(state_dir))["pods"] == []
