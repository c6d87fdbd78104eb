"""The enforcer's sync logic, in-process on the fake kernel: no root, no threads.

Each test drives ``Enforcer._step`` (what one turn of the loop does) and
``sync`` directly, and judges by what the fake kernel holds and was asked
to do. The real kernel runs the same transactions in the kernel tests.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from builders import namespace, pod, policy, state
from enforcer.daemon import Enforcer, EnforcerConfig, next_backoff
from enforcer.kernel import KernelError
from enforcer.kernel.fake import FakeKernel
from rules.model import ClusterState, Direction
from rules.naming import POLICY_TABLE, policy_chain_name
from rules.nft import Transaction, create_transaction
from rules.translate import desired_ruleset

BASE = [namespace("x"), pod("x/a", "10.0.1.1", labels={"app": "a"}), pod("x/b", "10.0.1.2", labels={"app": "b"})]
DENY = policy("x/deny", {"podSelector": {"matchLabels": {"app": "a"}}})
ALLOW = policy(
    "x/allow-b",
    {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]},
)


class MemorySource:
    """A source whose state the test sets: ``poll`` reports each new one once."""

    def __init__(self, cluster: ClusterState) -> None:
        self.state, self.error, self.changed_at = cluster, None, time.monotonic()
        self.loaded, self._seen = "v1", None

    def set(self, cluster: ClusterState, version: str) -> None:
        self.state, self.loaded, self.changed_at = cluster, version, time.monotonic()

    def start(self, stop, wake) -> None:
        pass

    def poll(self) -> bool:
        news, self._seen = self._seen != self.loaded, self.loaded
        return news


class CountingKernel(FakeKernel):
    """The fake kernel, counting how often the enforcer looked at the live tables."""

    def __init__(self) -> None:
        super().__init__()
        self.observed = 0

    def observe(self, family: str, name: str):
        self.observed += 1
        return super().observe(family, name)


def enforcer(tmp_path: Path, *objects: dict, kernel: FakeKernel | None = None) -> Enforcer:
    config = EnforcerConfig(node="n1", source="memory", state_dir=tmp_path / "state", verify_interval=0)
    return Enforcer(config, MemorySource(state(*objects)), kernel or CountingKernel())


def desired_dump(*objects: dict) -> str:
    kernel = FakeKernel()
    kernel.apply([create_transaction(t) for t in desired_ruleset(state(*objects), "n1", ()).tables])
    return kernel.dump()


def test_the_first_sync_programs_an_empty_kernel_with_the_desired_tables(tmp_path) -> None:
    e = enforcer(tmp_path, *BASE, DENY)
    assert e.full_sync_needed
    assert e._step(0) is True
    assert e.kernel.dump() == desired_dump(*BASE, DENY)
    assert not e.full_sync_needed and e.stats.sync_count == 1 and e.committed.loaded == "v1"


def test_a_policy_change_is_a_partial_sync_planned_from_the_last_commit(tmp_path) -> None:
    e = enforcer(tmp_path, *BASE, DENY)
    e._step(0)
    observed, first = e.kernel.observed, e.stats.last_commands
    e.source.set(state(*BASE, DENY, ALLOW), "v2")
    assert e._step(0) is True
    assert e.kernel.observed == observed, "a sync after a commit must not read the kernel back"
    assert e.kernel.dump() == desired_dump(*BASE, DENY, ALLOW)
    last = e.kernel.commits[-1]
    assert 0 < e.stats.last_commands < first, "the change rewrote more than what changed"
    assert not any(verb == "delete" and kind == "table" for tx in last for verb, kind, _ in tx.ops)


def test_nothing_new_means_no_transaction(tmp_path) -> None:
    e = enforcer(tmp_path, *BASE, DENY)
    e._step(0)
    commits = len(e.kernel.commits)
    assert e._step(0) is None
    assert len(e.kernel.commits) == commits


def test_a_refused_transaction_keeps_the_old_tables_and_retries_after_a_backoff_from_the_kernel(tmp_path) -> None:
    e = enforcer(tmp_path, *BASE, DENY)
    e._step(0)
    before = e.kernel.dump()
    e.kernel.refuse = "Error: Operation not permitted"
    e.source.set(state(*BASE, DENY, ALLOW), "v2")
    assert e._step(0) is False
    assert e.kernel.dump() == before, "a refused transaction changed the kernel"
    assert e.full_sync_needed and e.stats.sync_failures == 1 and "not permitted" in e.stats.last_error
    assert e.committed.loaded == "v1", "the refused version is reported in force"
    e._retry_at = time.monotonic() + 3600  # the loop sets it from next_backoff
    assert e._step(0) is None, "retried before the backoff ran out"
    e.kernel.refuse, e._retry_at = None, 0.0
    observed = e.kernel.observed
    assert e._step(0) is True
    assert e.kernel.observed > observed, "the retry did not look at what the kernel holds"
    assert e.kernel.dump() == desired_dump(*BASE, DENY, ALLOW) and e.stats.last_error is None


@pytest.mark.parametrize("previous, expected", [(0.0, 0.2), (0.2, 0.4), (1.6, 3.2), (3.2, 5.0), (5.0, 5.0)])
def test_the_backoff_doubles_from_a_fifth_of_a_second_up_to_its_ceiling(previous, expected) -> None:
    assert next_backoff(previous, 5.0) == pytest.approx(expected)


def test_a_hand_made_change_is_found_and_repaired_from_the_kernel(tmp_path) -> None:
    e = enforcer(tmp_path, *BASE, ALLOW)
    e._step(0)
    chain = policy_chain_name("x/allow-b", Direction.INGRESS)
    e.kernel.apply([Transaction(*POLICY_TABLE, [("flush", "chain", chain)])])  # an operator's `nft flush chain`
    drift = e.detect_drift()
    assert drift and e.full_sync_needed and e.stats.drift_repairs == 1
    assert e._step(0) is True
    assert e.kernel.dump() == desired_dump(*BASE, ALLOW)
    assert e.detect_drift() == []


def test_a_table_left_by_an_earlier_enforcer_is_taken_over_in_one_transaction(tmp_path) -> None:
    kernel = CountingKernel()
    old = desired_ruleset(state(*BASE, ALLOW), "n1", ()).tables
    kernel.apply([create_transaction(t) for t in old])
    e = enforcer(tmp_path, *BASE, DENY, kernel=kernel)
    commits = len(kernel.commits)
    assert e._step(0) is True
    assert kernel.observed >= 1
    assert len(kernel.commits) == commits + 1
    assert kernel.dump() == desired_dump(*BASE, DENY)


@pytest.mark.parametrize("needed, reads_kernel", [(True, True), (False, False)])
def test_the_full_sync_flag_alone_decides_whether_a_sync_reads_the_kernel_first(tmp_path, needed, reads_kernel) -> None:
    e = enforcer(tmp_path, *BASE, DENY)
    e._step(0)
    e.full_sync_needed = needed
    observed = e.kernel.observed
    e.source.set(state(*BASE, DENY, ALLOW), "v2")
    assert e._step(0) is True
    assert (e.kernel.observed > observed) is reads_kernel
    assert e.kernel.dump() == desired_dump(*BASE, DENY, ALLOW)


def test_an_unreadable_kernel_counts_as_drift(tmp_path) -> None:
    class Unreadable(CountingKernel):
        def read(self, family, name, elements=True):
            raise KernelError("Error: Permission denied")

    e = enforcer(tmp_path, *BASE, DENY, kernel=Unreadable())
    e._step(0)
    assert e.detect_drift() and e.full_sync_needed
