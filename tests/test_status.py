"""The status never runs ahead of the kernel.

An in-process enforcer on a fake kernel whose commit is held at a gate: while
a transaction waits there, with the verify interval always due, every place
that says "in force" (status.json, the CNI reply, ``is_programmed``) must
still describe the previous commit; once the gate opens, the new one.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

from builders import namespace, pod, policy
from enforcer.node.cni_server import CniServer
from enforcer.daemon import Enforcer, EnforcerConfig
from enforcer.kernel.fake import FakeKernel
from cni.records import PodRecord, records_signature, write_record
from enforcer.sources.directory import DirectorySource, signature_digest

WAIT = 60.0  # an upper bound for facts that come within milliseconds on a quiet machine

CLUSTER = [namespace("x"), pod("x/a", "10.0.1.1", labels={"app": "a"}), pod("x/b", "10.0.1.2", labels={"app": "b"})]
DENY = policy("x/deny", {"podSelector": {"matchLabels": {"app": "a"}}})
ALLOW = policy(
    "x/allow-b",
    {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]},
)


class FakeLinks:
    """The node's links as a set of names; pods' veths come and go by hand."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def exists(self, ifname: str) -> bool:
        return ifname in self.names

    def set_up(self, ifname: str) -> bool:
        return ifname in self.names

    def foreign_ports(self, pod_bridges) -> frozenset[str]:
        return frozenset()

    def watch(self, stop, changed) -> None:
        """No link events: the enforcer looks at every step anyway."""


class Node:
    def __init__(self, root: Path, links: FakeLinks | None = None) -> None:
        self.source = root / "source"
        self.source.mkdir()
        self.state_dir = root / "state"
        self.write(CLUSTER + [DENY])
        self.kernel = FakeKernel()
        config = EnforcerConfig(
            node="n1", source=str(self.source), state_dir=self.state_dir, poll_interval=0.01, verify_interval=1e-6
        )  # verify due at every step
        self.enforcer = Enforcer(config, DirectorySource(self.source), self.kernel, links=links)

    def write(self, objects: list[dict]) -> None:
        (self.source / "cluster.yaml").write_text(yaml.safe_dump_all(objects))

    def write_invalid(self) -> None:
        (self.source / "cluster.yaml").write_text(
            yaml.safe_dump_all(CLUSTER + [policy("x/typo", {"podSelector": {}, "policyTypes": ["Ingres"]})])
        )

    def register(self, container: str, ifname: str, ip: str) -> PodRecord:
        record = PodRecord(container, "x", "a", "uid", ifname, "02:00:00:00:00:01", (ip,))
        write_record(self.state_dir, record)
        return record

    def status(self) -> dict:
        try:
            return json.loads((self.state_dir / "status.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def wait_for(self, what: str, fact: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not fact():
            assert time.monotonic() < deadline, f"waited {WAIT} s for {what}; status {self.status()}"
            time.sleep(0.005)

    def current_inputs(self) -> tuple[str, str]:
        return DirectorySource(self.source).digest(), signature_digest(records_signature(self.state_dir))

    def in_force(self) -> tuple[str, str]:
        status = self.status()
        return status.get("source"), status.get("records")


@contextmanager
def running(root: Path, links: FakeLinks | None = None) -> Iterator[Node]:
    node = Node(root, links)
    stop = threading.Event()
    thread = threading.Thread(target=node.enforcer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        node.wait_for("the first commit", lambda: node.in_force() == node.current_inputs())
        yield node
    finally:
        stop.set()
        node.kernel.gate.set()
        thread.join(WAIT)


def _policy_change(node: Node) -> None:
    node.write(CLUSTER + [DENY, ALLOW])


def _fix_after_an_error(node: Node) -> None:
    node.write_invalid()
    node.wait_for("the source error in the status", lambda: "Ingres" in (node.status().get("sourceError") or ""))
    node.kernel.entered.clear()
    node.write(CLUSTER + [DENY, ALLOW])


def _new_registration(node: Node) -> None:
    node.register("c" * 64, "veth0a", "10.0.1.1")


@pytest.mark.parametrize(
    "change",
    [_policy_change, _fix_after_an_error, _new_registration],
    ids=["a policy change", "a valid source after an invalid one", "a new CNI registration"],
)
def test_while_a_commit_is_held_the_status_shows_the_previous_one(tmp_path, change) -> None:
    with running(tmp_path) as node:
        before, commits = node.in_force(), len(node.kernel.commits)
        node.kernel.gate.clear()
        node.kernel.entered.clear()
        change(node)
        assert node.kernel.entered.wait(WAIT), "the enforcer never started the commit"
        # The loop is inside the commit now; verify ran in the same step. Give
        # the status every chance to run ahead: it must not.
        for _ in range(20):
            assert node.in_force() == before, "the status claims input the kernel has not committed"
            time.sleep(0.005)
        assert len(node.kernel.commits) == commits
        node.kernel.gate.set()
        node.wait_for("the new commit in the status", lambda: node.in_force() == node.current_inputs())
        assert node.in_force() != before and len(node.kernel.commits) > commits


def test_a_cni_add_is_answered_only_once_its_port_is_committed(tmp_path) -> None:
    with running(tmp_path) as node:
        server = CniServer(tmp_path / "cni.sock", node.enforcer, wait=WAIT)
        node.kernel.gate.clear()
        record = node.register("d" * 64, "veth0d", "10.0.1.1")
        replies: list[dict] = []
        asking = threading.Thread(
            target=lambda: replies.append(server.answer({"command": "ADD", "containerId": record.container_id}))
        )
        asking.start()
        assert node.kernel.entered.wait(WAIT)
        assert not node.enforcer.is_programmed(record)
        assert replies == [] and asking.is_alive(), "ADD answered before the commit"
        node.kernel.gate.set()
        asking.join(WAIT)
        assert replies == [{"ok": True}] and node.enforcer.is_programmed(record)


def test_a_cni_add_whose_registration_is_refused_is_not_reported_in_force(tmp_path) -> None:
    with running(tmp_path) as node:
        server = CniServer(tmp_path / "cni.sock", node.enforcer, wait=WAIT)
        node.register("e" * 64, "veth0e", "10.0.1.1")
        assert server.answer({"command": "ADD", "containerId": "e" * 64}) == {"ok": True}
        thief = node.register("f" * 64, "veth0f", "10.0.1.1")  # claims the address veth0e holds
        reply = server.answer({"command": "ADD", "containerId": thief.container_id})
        assert reply["ok"] is False
        assert "veth0f is not programmed" in reply["error"] and "10.0.1.1 is registered to x/a" in reply["error"]
        assert not node.enforcer.is_programmed(thief)


def test_a_refused_commit_leaves_the_status_on_the_previous_one(tmp_path) -> None:
    with running(tmp_path) as node:
        before, failures = node.in_force(), node.enforcer.stats.sync_failures
        node.kernel.refuse = "Error: Operation not permitted"
        _policy_change(node)
        node.wait_for("a refused commit", lambda: node.enforcer.stats.sync_failures > failures)
        assert node.in_force() == before
        node.kernel.refuse = None
        node.wait_for("the retried commit", lambda: node.in_force() == node.current_inputs())


def test_a_record_whose_veth_went_without_a_del_is_removed_and_frees_its_addresses(tmp_path) -> None:
    """A node reboot ends every pod's network namespace, and no DEL comes: the
    records stay on disk. Their addresses must go to the pods started after."""
    links = FakeLinks("veth0a", "veth0b")
    with running(tmp_path, links) as node:
        server = CniServer(tmp_path / "cni.sock", node.enforcer, wait=WAIT)
        before = node.register("a" * 64, "veth0a", "10.0.1.1")
        kept = node.register("b" * 64, "veth0b", "10.0.1.2")
        assert server.answer({"command": "ADD", "containerId": before.container_id}) == {"ok": True}
        links.names.discard("veth0a")  # its pod's namespace is gone
        links.names.add("veth0c")
        after = node.register("c" * 64, "veth0c", "10.0.1.1")  # host-local hands the address out again
        assert server.answer({"command": "ADD", "containerId": after.container_id}) == {"ok": True}
        assert node.enforcer.is_programmed(after) and not node.enforcer.is_programmed(before)
        assert not (node.state_dir / "pods" / f"{before.container_id}.json").exists()
        assert node.enforcer.is_programmed(kept), "a record whose veth exists was removed"
