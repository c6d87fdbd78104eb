"""The CNI registrations: the pod records the plugin writes at ADD and removes
at DEL (``cni.records``), as the enforcer keeps them in memory.

The directory is listed at every step of the loop, but a record is read
again only when its file's name, size or mtime changed, so an ADD costs one
file read, not one per pod. Records come oldest first: the first
registration of an address keeps it (``record_interfaces``)."""

from __future__ import annotations

import functools
import ipaddress
from typing import Callable

import os

from cni.records import PodRecord, RecordError, read_all_records, read_record, records_dir, records_signature, remove_record
from enforcer.sources.directory import signature_digest
from rules.model import PodInterface


class NoStateDir(Exception):
    """The directory given holds no enforcer state: a wrong --state-dir, most likely."""


def node_records(state_dir: str) -> tuple[list[PodRecord], list[str]]:
    """The records of an enforcer's state dir, for the audit tools. A dir with
    neither status.json nor pods/ is not one (an enforcer writes status.json at
    its first sync): saying so beats answering for a node with no pods."""
    if not (os.path.isfile(os.path.join(state_dir, "status.json")) or os.path.isdir(records_dir(state_dir))):
        raise NoStateDir(
            f"no pod records found: {state_dir} has no status.json and no pods/ (is it the enforcer's --state-dir?"
            " the DaemonSet's is /var/lib/nftpolicy)"
        )
    return read_all_records(state_dir)


class Registrations:
    def __init__(self, state_dir) -> None:
        self.state_dir = state_dir
        self.records: list[PodRecord] = []  # oldest first
        self._signature: tuple | None = None  # (file name, size, mtime) of each record file last read
        self._cache: dict[tuple, PodRecord] = {}  # by (file name, size, mtime)

    def digest(self) -> str:
        """Names the records read last, as the status file shows it."""
        return signature_digest(self._signature or ())

    def reload(self) -> tuple[bool, list[str]]:
        """Whether the directory changed since the last call, and an error line
        for each record that could not be read (its pod stays closed)."""
        signature = records_signature(self.state_dir)
        if signature == self._signature:
            return False, []
        self._signature = signature
        cache, self._cache = self._cache, {}
        records, errors = [], []
        for entry in sorted(signature, key=lambda e: (e[2], e[0])):  # oldest first: the first registration of an address wins
            record = cache.get(entry)
            if record is None:
                try:
                    record = read_record(self.state_dir, entry[0].removesuffix(".json"))
                except RecordError as e:
                    errors.append(str(e))
                    continue
                if record is None:
                    continue  # removed while we looked
            self._cache[entry] = record
            records.append(record)
        self.records = records
        return True, errors

    def orphans(self, link_exists: Callable[[str], bool]) -> list[PodRecord]:
        """The records whose veth is gone.

        A record is written at ADD, once its veth exists, and removed at DEL. A
        veth that vanished without a DEL went with its pod's network namespace
        when the runtime lost it: a node reboot, or a crash of everything that
        would have called DEL. Such a record protects nothing (no frame can come
        from a port that does not exist), but it would keep holding its
        addresses, so that the next pod host-local gives one of them would be
        refused as a duplicate and never start."""
        return [r for r in self.records if not link_exists(r.host_ifname)]

    def remove(self, record: PodRecord) -> None:
        remove_record(self.state_dir, record.container_id)


@functools.lru_cache(maxsize=4096)  # records rarely change: parse each one's addresses once
def record_interface(record: PodRecord) -> PodInterface:
    return PodInterface(
        record.namespace,
        record.name,
        record.container_id,
        record.host_ifname,
        record.mac,
        tuple(ipaddress.ip_address(ip) for ip in record.ips),
    )


def record_interfaces(records: list[PodRecord]) -> tuple[list[PodInterface], list[str]]:
    """The registered interfaces, and an error line for each record that cannot be one.

    An address belongs to one registration: a later record that claims an
    address an earlier one holds (a stale record, or a forged one) is refused,
    so its port stays closed rather than sending as another pod. ``records``
    come oldest first."""
    interfaces, errors, owners = [], [], {}
    for record in records:
        try:
            interface = record_interface(record)
        except ValueError as e:
            errors.append(f"record {record.container_id} ({record.key}): ips: {e}")
            continue
        taken = [f"{ip} is registered to {owners[ip]}" for ip in interface.ips if ip in owners]
        if taken:
            errors.append(f"record {record.container_id} ({record.key}): ips: {'; '.join(taken)}: refused, its port stays closed")
            continue
        owners.update({ip: f"{record.key} ({record.container_id[:12]})" for ip in interface.ips})
        interfaces.append(interface)
    return interfaces, errors
