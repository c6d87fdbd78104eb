"""``EnforcerStatus``: what the enforcer has in force and how its loop fares,
as one immutable snapshot. Health, readiness, metrics and the deny log read
this, never the ``Enforcer`` itself, so they cannot depend on its internals
or see a half-updated loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from cni.records import PodRecord
from rules.model import ClusterState
from rules.nft import Table


@dataclass(frozen=True)
class EnforcerStatus:
    node: str
    last_loop: float  # time.monotonic() when the loop last looked at its inputs (liveness)
    sync_count: int  # transactions committed
    sync_failures: int  # transactions refused, and unexpected errors
    sync_seconds: float  # total time of the committed syncs
    last_commands: int  # size of the last committed transaction
    drift_repairs: int
    last_error: str | None  # why the last sync failed; None once one succeeded again
    source_error: str | None  # why the source's newest input is not in force
    change_latencies: tuple[float, ...]  # change seen -> committed, seconds, recent syncs
    tables: Mapping[tuple[str, str], Table]  # the tables of the last commit, by (family, name)
    state: ClusterState | None  # the source's last good cluster state
    records: tuple[PodRecord, ...]  # the CNI registrations read last
