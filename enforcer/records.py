"""The CNI plugin's pod records and the messages it exchanges with the enforcer.

Both sides import this module, so it stays stdlib-only and cheap to import:
it is on the CNI plugin's start-up path.

A record is one JSON file per container in ``<state dir>/pods/``, written
atomically (temp file, fsync, rename): it survives enforcer and node restarts,
and an enforcer that starts finds every local pod's interface in it.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_STATE_DIR = "/var/lib/nftpolicy"
DEFAULT_SOCKET = "/run/nftpolicy/cni.sock"


@dataclass(frozen=True)
class PodRecord:
    container_id: str
    namespace: str
    name: str
    uid: str
    host_ifname: str
    mac: str | None
    ips: tuple[str, ...]
    netns: str = ""
    ifname: str = ""
    # The enforcer could not be reached at ADD: the host veth was set down and
    # waits for the enforcer to program the pod and bring it up (fail closed).
    held: bool = False
    tags: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PodRecord:
        data = json.loads(text)
        data["ips"] = tuple(data.get("ips", ()))
        return cls(**data)


class RecordError(ValueError):
    """A record file that cannot be read: named, never silently dropped."""


def records_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / "pods"


def record_path(state_dir: str | Path, container_id: str) -> Path:
    if not container_id or "/" in container_id or container_id.startswith("."):
        raise RecordError(f"invalid container ID {container_id!r}")
    return records_dir(state_dir) / f"{container_id}.json"


def write_record(state_dir: str | Path, record: PodRecord) -> None:
    """Atomically replace the record: readers see the old file or the new one."""
    path = record_path(state_dir, record.container_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(record.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_record(state_dir: str | Path, container_id: str) -> PodRecord | None:
    path = record_path(state_dir, container_id)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return PodRecord.from_json(text)
    except (ValueError, TypeError) as e:
        raise RecordError(f"{path}: corrupt record: {e}") from e


def remove_record(state_dir: str | Path, container_id: str) -> bool:
    try:
        record_path(state_dir, container_id).unlink()
        return True
    except FileNotFoundError:
        return False


def read_all_records(state_dir: str | Path) -> tuple[list[PodRecord], list[str]]:
    """Every readable record, and an error line for each unreadable one."""
    records, errors = [], []
    directory = records_dir(state_dir)
    if not directory.is_dir():
        return records, errors
    for path in sorted(directory.glob("*.json")):
        try:
            records.append(PodRecord.from_json(path.read_text()))
        except (OSError, ValueError, TypeError) as e:
            errors.append(f"{path}: corrupt record: {e}")
    return records, errors


def records_signature(state_dir: str | Path) -> tuple:
    """Cheap change detection: names, sizes and mtimes of the record files."""
    directory = records_dir(state_dir)
    if not directory.is_dir():
        return ()
    signature = []
    for path in directory.glob("*.json"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # removed while we looked: the next look sees it gone
        signature.append((path.name, st.st_size, st.st_mtime_ns))
    return tuple(sorted(signature))
