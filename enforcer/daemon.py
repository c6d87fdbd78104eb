"""The per-node enforcer: keeps the kernel's nftpolicy tables in step with
cluster state and the CNI registrations, one atomic transaction per change.

Loop: poll the source and the record directory; when either changed, or a
CNI call asked for it, compute the desired ruleset (``rules``), plan the
difference from what was last committed (``rules.plan``) and apply it in one
batch. After a failure, or at start, the tables are observed in the kernel
instead and taken over in one transaction, so a restart never leaves a
protected pod open. A failed transaction changes nothing; it is retried with
backoff.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Protocol

from enforcer.kernel import Kernel, KernelError
from enforcer.status import EnforcerStatus
from cni.records import PodRecord, write_record
from enforcer.registrations import Registrations, record_interfaces
from rules.model import ClusterState, PodInterface
from rules.naming import BRIDGE_TABLE, POD_PORTS_SET, POLICY_TABLE
from rules.nft import Ruleset, Str, Table
from rules.drift import table_drift
from rules.plan import plan, preload
from rules.translate import RenderMemo, desired_ruleset

log = logging.getLogger("nftpolicy.enforcer")

LATENCY_WINDOW = 1024  # change-to-commit latencies kept for /metrics
CUT_DELAY = 0.05  # seconds from a commit to the conntrack scan it asks for


class Source(Protocol):
    """Where cluster state comes from: a directory of YAML, or the API."""

    state: ClusterState | None  # the last good state; None until there is one
    error: str | None  # why newer input is not in force
    loaded: str | None  # identifies what ``state`` was built from
    changed_at: float | None  # monotonic time of the oldest change ``state`` holds that an earlier state did not

    def start(self, stop: threading.Event, wake: Callable[[], None]) -> None:
        """Start watching; call ``wake`` whenever there is news for ``poll``."""

    def poll(self) -> bool: ...


@dataclass(frozen=True)
class EnforcerConfig:
    node: str
    source: str  # for logs: the directory or the API server
    state_dir: Path
    poll_interval: float = 0.2
    cut_established: bool = True
    max_backoff: float = 5.0
    # How often the live tables are read back whole and compared with the last
    # commit, so hand-made changes are found and undone (0: never).
    verify_interval: float = 60.0
    log_group: int | None = None  # NFLOG group for denied new connections (None: not logged)
    pod_bridges: tuple[str, ...] = ("cni0",)  # the bridges CNI attaches pods to: all their ports are checked


def next_backoff(previous: float, ceiling: float) -> float:
    """Seconds to wait after a failed sync: 0.2 s, doubling up to ``ceiling``."""
    return min(ceiling, max(0.2, previous * 2))


@dataclass
class SyncStats:
    """How the sync loop fares, for the status snapshot and the logs."""

    sync_count: int = 0  # transactions committed
    sync_failures: int = 0  # transactions refused, and unexpected errors
    sync_seconds: float = 0.0  # total time spent in successful syncs
    last_commands: int = 0  # size of the last committed transaction
    drift_repairs: int = 0
    last_error: str | None = None  # why the last sync failed; None once one succeeded
    change_latencies: list[float] = field(default_factory=list)  # change seen -> committed, seconds, newest last (bounded)


class CommittedInputs(NamedTuple):
    """The inputs of the last transaction the kernel committed."""

    state: ClusterState | None
    loaded: str | None  # the source's name for that state's version
    records: str  # digest of the CNI records the transaction saw


class Enforcer:
    def __init__(self, config: EnforcerConfig, source: Source, kernel: Kernel, links=None, cutter=None) -> None:
        self.config = config
        self.source = source
        self.kernel = kernel
        self.links = links
        self.cutter = cutter
        self.applied: dict[tuple[str, str], Table] = {}  # the tables of the last commit
        # Plan the next sync from what the kernel holds, not from ``applied``: at start, and
        # after a refused transaction, an unexpected error or drift, the two may differ.
        self.full_sync_needed = True
        self._retry_at = 0.0  # after a failed sync, no new try before this (monotonic time)
        self._verify_at = time.monotonic() + config.verify_interval  # next read-back of the live tables
        self.registrations = Registrations(config.state_dir)
        self._reported_errors: dict[str, set[str]] = {}  # per kind of input: what is logged already
        self._cond = threading.Condition()
        self._wanted = 0  # sync generations asked for by CNI calls
        self._woken = False  # the source has news
        self._cut_request: tuple[Table, set] | None = None  # for the cut thread: the newest table and local IPs
        self._memo = RenderMemo()  # sets and chains of the last render, reused when their inputs did not change
        self._pending_change: float | None = None  # when the oldest change not yet committed reached us
        self._done = 0  # the newest generation a successful sync covered
        self.stats = SyncStats()
        self.last_loop = time.monotonic()  # when the loop last looked at its inputs (liveness)
        self.foreign_ports: frozenset[str] = frozenset()  # ports of the node's other bridges, left alone
        self._links_changed = True  # list the bridge ports again at the next step
        self.committed: CommittedInputs | None = None  # what the last successful transaction was computed from
        self._status_error: str | None = None  # the source error the status file shows

    # --- state -----------------------------------------------------------

    @property
    def records(self) -> list[PodRecord]:
        """The CNI registrations read last, oldest first."""
        return self.registrations.records

    def _report(self, kind: str, errors: list[str]) -> None:
        """Log each error of one kind of input once, until it goes away: the
        kinds are tracked apart, so one kind's news does not repeat another's."""
        for e in errors:
            if e not in self._reported_errors.get(kind, ()):
                log.error("%s", e)
        self._reported_errors[kind] = set(errors)

    def _interfaces(self) -> list[PodInterface]:
        interfaces, errors = record_interfaces(self.records)
        self._report("registrations", errors)
        return interfaces

    def desired(self, interfaces: list[PodInterface]) -> Ruleset:
        assert self.source.state is not None
        return desired_ruleset(
            self.source.state, self.config.node, interfaces, self.config.log_group, self._memo, self.foreign_ports
        )

    # --- sync ------------------------------------------------------------

    def sync(self) -> bool:
        """One transaction from the kernel's tables to the desired ones; True on success."""
        if self.source.state is None:
            return False  # nothing good loaded yet: leave the kernel as it is
        started = time.monotonic()
        # What this transaction is computed from, captured before it is built:
        # the status publishes it only once the kernel has committed it.
        inputs = CommittedInputs(self.source.state, self.source.loaded, self.registrations.digest())
        interfaces = self._interfaces()  # read once: the ruleset and the conntrack cut both use them
        desired = self.desired(interfaces)
        preloads, switch = [], []
        try:
            for table in desired.tables:
                key = (table.family, table.name)
                current = self.kernel.observe(*key) if self.full_sync_needed or key not in self.applied else self.applied[key]
                steps, current = preload(table, current)
                preloads += steps
                switch.append(plan(table, current))
            for step in preloads:
                self.kernel.apply([step])
            self.kernel.apply(switch)  # every table's switch in one transaction
        except KernelError as e:
            self.full_sync_needed = True  # a preload may have landed: observe the kernel before the next try
            self.stats.last_error = str(e)
            self.stats.sync_failures += 1
            log.error("sync failed, previous ruleset stays in force: %s", e)
            return False
        before = self.applied.get(POLICY_TABLE)
        self.applied = {(t.family, t.name): t for t in desired.tables}
        self.full_sync_needed = False
        self.committed = inputs
        self.stats.sync_count += 1
        self.stats.last_error = None
        if self.stats.sync_count == 1:
            gc.freeze()  # what start-up loaded lives long: later collections need not walk it
        elapsed = time.monotonic() - started
        self.stats.sync_seconds += elapsed
        self.stats.last_commands = sum(len(tx) for tx in preloads + switch)
        latency = ""
        if self._pending_change is not None:
            seen_to_commit = time.monotonic() - self._pending_change
            self._pending_change = None
            self.stats.change_latencies = self.stats.change_latencies[-(LATENCY_WINDOW - 1) :] + [seen_to_commit]
            latency = f", change seen -> committed {seen_to_commit * 1000:.1f} ms"
        log.info("sync %d: %d commands in %.1f ms%s", self.stats.sync_count, self.stats.last_commands, elapsed * 1000, latency)
        self._release_held()
        self._write_status()
        inet = self.applied[POLICY_TABLE]
        if self.cutter is not None and self.config.cut_established and before is not None and before != inet:
            with self._cond:  # the cut thread takes the newest table; older requests are covered by it
                self._cut_request = (inet, {ip for i in interfaces for ip in i.ips})
                self._cond.notify_all()
        return True

    def _cut_loop(self, stop: threading.Event) -> None:
        """Delete conntrack entries of flows the newest committed table denies.
        Off the sync path: scanning a busy node's conntrack table takes a while,
        and neither a CNI ADD nor the next change should wait for it."""
        while not stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._cut_request is not None or stop.is_set(), timeout=1.0)
                if self._cut_request is None:
                    continue
            # A short pause lets a burst of commits (pods starting) coalesce into one
            # scan, and keeps the scan off the CPU while CNI calls get their replies.
            stop.wait(CUT_DELAY)
            with self._cond:
                request, self._cut_request = self._cut_request, None
            cut = self.cutter.cut_denied(*request)
            if cut:
                log.info("cut %d established connections that policy now denies", cut)

    def status(self) -> EnforcerStatus:
        """A snapshot for health, metrics and the deny log."""
        return EnforcerStatus(
            node=self.config.node,
            last_loop=self.last_loop,
            sync_count=self.stats.sync_count,
            sync_failures=self.stats.sync_failures,
            sync_seconds=self.stats.sync_seconds,
            last_commands=self.stats.last_commands,
            drift_repairs=self.stats.drift_repairs,
            last_error=self.stats.last_error,
            source_error=self.source.error,
            change_latencies=tuple(self.stats.change_latencies),
            tables=dict(self.applied),
            state=self.source.state,
            records=tuple(self.records),
        )

    def _write_status(self) -> None:
        """What is in force, for health checks and tests: the source version and
        the records the last *committed* transaction was computed from (never
        what was merely read), and why newer input is not in force."""
        self._status_error = self.source.error
        status = {
            "node": self.config.node,
            "pid": os.getpid(),
            "syncs": self.stats.sync_count,
            "source": self.committed.loaded if self.committed else None,
            "records": self.committed.records if self.committed else None,
            "sourceError": self._status_error,
            "logGroup": self.config.log_group,  # part of what the tables should be: verify reads it
            "podBridges": list(self.config.pod_bridges),  # so is this
        }
        path = self.config.state_dir / "status.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".status.tmp")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, path)

    def _release_held(self) -> None:
        """Bring up the veths of pods held closed at ADD, now that they are programmed."""
        for record in self.records:
            if record.held and self.is_programmed(record) and self.links is not None:
                if self.links.set_up(record.host_ifname):
                    write_record(self.config.state_dir, record._replace(held=False))
                    log.info("released %s (%s): programmed, link up", record.key, record.host_ifname)

    def registration_error(self, container_id: str) -> str | None:
        """Why the record of this container is not registered, if it was refused."""
        return next(
            (
                e
                for e in (*self._reported_errors.get("registrations", ()), *self._reported_errors.get("records", ()))
                if container_id in e
            ),
            None,
        )

    def _state_in_force_is_current(self) -> bool:
        """Whether the kernel enforces the source's current state, under a newer version name."""
        return (
            self.committed is not None
            and not self.full_sync_needed
            and self.committed.state is self.source.state
            and self.committed.loaded != self.source.loaded
        )

    def is_programmed(self, record: PodRecord) -> bool:
        """Whether the last commit holds the pod's port and addresses."""
        bridge = self.applied.get(BRIDGE_TABLE)
        ports = bridge.set(POD_PORTS_SET) if bridge else None
        return ports is not None and Str(record.host_ifname) in ports.elements

    def detect_drift(self) -> list[str]:
        """Compare the live tables with the last commit; on drift, the next sync
        takes the tables over from the kernel and repairs them."""
        try:
            drift = [
                line for table in self.applied.values() for line in table_drift(table, self.kernel.read(table.family, table.name))
            ]
        except KernelError as e:  # what cannot be read back cannot be trusted: take the tables over again
            drift = [f"cannot read the live tables back: {e}"]
        if drift:
            log.warning("the kernel's tables were changed behind our back, repairing:\n%s", "\n".join(drift))
            self.full_sync_needed = True
            self.stats.drift_repairs += 1
        return drift

    def reload_records(self) -> bool:
        """Read the records again if their directory changed; True if it did."""
        changed, errors = self.registrations.reload()
        if changed:
            self._report("records", errors)
        return changed

    def drop_orphaned_records(self) -> bool:
        """Remove the records whose veth is gone (``Registrations.orphans``)."""
        if self.links is None:
            return False
        orphans = self.registrations.orphans(self.links.exists)
        for record in orphans:
            self.registrations.remove(record)
            log.warning(
                "record %s (%s, %s): its interface %s is gone without a CNI DEL (the pod's network namespace ended,"
                " e.g. at a node reboot): removed",
                record.container_id[:12],
                record.key,
                ", ".join(record.ips),
                record.host_ifname,
            )
        return bool(orphans) and self.reload_records()

    # --- CNI requests ----------------------------------------------------

    def request_sync(self, timeout: float) -> bool:
        """Ask the loop for a sync that starts after this call; wait until it committed."""
        with self._cond:
            self._wanted += 1
            generation = self._wanted
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._done >= generation, timeout=timeout)

    def wake(self) -> None:
        """The source has news: look now rather than at the next poll."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def links_changed(self) -> None:
        """A link appeared, went or changed master: the bridge ports may have changed."""
        self._links_changed = True
        self.wake()

    def reload_foreign_ports(self) -> bool:
        if not self._links_changed or self.links is None:
            return False
        self._links_changed = False
        ports = self.links.foreign_ports(self.config.pod_bridges)
        if ports == self.foreign_ports:
            return False
        self.foreign_ports = ports
        return True

    # --- loop ------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        backoff = 0.0
        log.info("enforcing for node %s from %s", self.config.node, self.config.source)
        self.source.start(stop, self.wake)
        if self.links is not None:
            self.links.watch(stop, self.links_changed)
        if self.cutter is not None:
            threading.Thread(target=self._cut_loop, args=(stop,), name="conntrack-cut", daemon=True).start()
        while not stop.is_set():
            with self._cond:
                self._cond.wait_for(
                    lambda: self._wanted > self._done or self._woken or stop.is_set(), timeout=self.config.poll_interval
                )
                target = self._wanted
                self._woken = False
            self.last_loop = time.monotonic()
            try:
                synced = self._step(target)
            except Exception as e:  # a bug or a surprise must not end enforcement: what is in the kernel stays
                log.exception("unexpected error, the previous ruleset stays in force; retrying")
                self.full_sync_needed = True
                self.stats.last_error = f"{e.__class__.__name__}: {e}"
                self.stats.sync_failures += 1
                synced = False
            if synced:
                backoff = 0.0
                with self._cond:
                    self._done = max(self._done, target)
                    self._cond.notify_all()
            elif synced is False:
                backoff = next_backoff(backoff, self.config.max_backoff)
                self._retry_at = time.monotonic() + backoff
                log.warning("retrying in %.1f s", backoff)

    def _step(self, target: int) -> bool | None:
        """Look at the inputs and sync if needed: True synced, False failed, None nothing to do."""
        changed = self.source.poll()
        if changed and self._pending_change is None:
            self._pending_change = self.source.changed_at
        error = self.source.error
        self._report("source", [f"source {self.config.source}: {error} (the last good state stays in force)"] if error else [])
        if not changed and self._state_in_force_is_current():
            # Versions the source saw that changed nothing the engine keeps are
            # in force already: the committed state includes them.
            self.committed = self.committed._replace(loaded=self.source.loaded)
            self._write_status()
        elif error != self._status_error:
            self._write_status()  # a new reason why newer input is not in force
        changed |= self.reload_records()
        changed |= self.drop_orphaned_records()
        changed |= self.reload_foreign_ports()
        if self.config.verify_interval and time.monotonic() >= self._verify_at and not self.full_sync_needed:
            self._verify_at = time.monotonic() + self.config.verify_interval
            self.detect_drift()
            self._write_status()  # also mends a status file someone damaged
        due = self.full_sync_needed and time.monotonic() >= self._retry_at
        if not (changed or target > self._done or due):
            return None
        return self.sync()
