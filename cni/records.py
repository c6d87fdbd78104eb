"""The CNI plugin's pod records and where they live.

Both the plugin and the enforcer import this module, so it stays stdlib-only
and cheap to import (no dataclasses, pathlib or tempfile): it is on the CNI
plugin's start-up path, which delays every pod.

A record is one JSON file per container in ``<state dir>/pods/``, written
atomically (temp file, fsync, rename): it survives enforcer and node restarts,
and an enforcer that starts finds every local pod's interface in it.
"""

from __future__ import annotations

import _socket  # not ``socket``: this module is on the CNI plugin's start-up path
import _thread  # not ``threading``: the same
import os

from cni import lean_json

DEFAULT_STATE_DIR = "/var/lib/nftpolicy"
DEFAULT_SOCKET = "/run/nftpolicy/cni.sock"

_FIELDS = ("container_id", "namespace", "name", "uid", "host_ifname", "mac", "ips", "netns", "ifname", "held")


class PodRecord:
    """One container's attachment. ``held``: the enforcer could not be reached at
    ADD, so the host veth was set down until the enforcer programs the pod.

    A plain immutable class rather than a namedtuple: ``collections`` costs
    the plugin 1.5 ms of start-up."""

    __slots__ = _FIELDS

    def __init__(
        self,
        container_id: str,
        namespace: str,
        name: str,
        uid: str,
        host_ifname: str,
        mac: str | None,
        ips: tuple[str, ...],
        netns: str = "",
        ifname: str = "",
        held: bool = False,
    ) -> None:
        for field, value in zip(_FIELDS, (container_id, namespace, name, uid, host_ifname, mac, tuple(ips), netns, ifname, held)):
            object.__setattr__(self, field, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("PodRecord is immutable: use _replace")

    def _asdict(self) -> dict:
        return {field: getattr(self, field) for field in _FIELDS}

    def _replace(self, **changes: object) -> PodRecord:
        return PodRecord(**{**self._asdict(), **changes})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PodRecord) and self._asdict() == other._asdict()

    def __hash__(self) -> int:
        return hash(tuple(self._asdict().values()))

    def __repr__(self) -> str:
        return "PodRecord(" + ", ".join(f"{k}={v!r}" for k, v in self._asdict().items()) + ")"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_json(self) -> str:
        return lean_json.dumps(dict(sorted({**self._asdict(), "ips": list(self.ips)}.items())))

    @classmethod
    def from_json(cls, text: str) -> PodRecord:
        data = lean_json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        unknown = set(data) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        problems = _field_problems(data)
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**data)


class RecordError(ValueError):
    """A record file that cannot be read: named, never silently dropped."""


# --- what a record may hold: checked by the plugin before it writes one, and
# by the enforcer when it reads one, since these strings end up in nft scripts
# and file paths.

_IFNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@")
_HEX = frozenset("0123456789abcdefABCDEF")
MAX_CONTAINER_ID = 200


def interface_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a host interface name (None: it can)."""
    if not isinstance(name, str) or not 1 <= len(name) <= 15 or name in (".", ".."):
        return "must be an interface name of 1 to 15 characters"
    if not set(name) <= _IFNAME_CHARS:
        return "must hold only letters, digits and '-_.@'"
    return None


def mac_problem(mac: object) -> str | None:
    parts = mac.split(":") if isinstance(mac, str) else []
    if len(parts) != 6 or any(len(p) != 2 or not set(p) <= _HEX for p in parts):
        return "must be a MAC address like 02:42:0a:00:00:01"
    return None


def ip_problem(ip: object) -> str | None:
    """Why ``ip`` is not a plain IPv4 or IPv6 address (zones are refused too)."""
    if isinstance(ip, str) and "%" not in ip:
        for family in (_socket.AF_INET, _socket.AF_INET6):
            try:
                _socket.inet_pton(family, ip)
                return None
            except (OSError, ValueError):
                continue
    return "must be an IPv4 or IPv6 address"


def _field_problems(data: dict) -> list[str]:
    problems = [
        f"{k}: must be a string"
        for k in ("container_id", "namespace", "name", "uid", "netns", "ifname")
        if not isinstance(data.get(k, ""), str)
    ]
    for field, problem in (
        ("host_ifname", interface_name_problem(data.get("host_ifname"))),
        ("mac", None if data.get("mac") is None else mac_problem(data["mac"])),
        ("held", None if isinstance(data.get("held", False), bool) else "must be true or false"),
    ):
        if problem:
            problems.append(f"{field}: {problem}")
    ips = data.get("ips")
    if not isinstance(ips, (list, tuple)) or not ips:
        problems.append("ips: must be a list of addresses")
    else:
        problems += [f"ips[{n}]: {p}" for n, ip in enumerate(ips) if (p := ip_problem(ip))]
    return problems


def records_dir(state_dir: str | os.PathLike) -> str:
    return os.path.join(state_dir, "pods")


def _file_name(container_id: str) -> str:
    """The container's file name; refused unless it is one plain name (cni/shim checks the same)."""
    if (
        not isinstance(container_id, str)
        or not container_id
        or "/" in container_id
        or "\0" in container_id
        or container_id.startswith(".")
        or len(container_id) > MAX_CONTAINER_ID
    ):
        raise RecordError(f"invalid container ID {str(container_id)[:80]!r}")
    return f"{container_id}.json"


def record_path(state_dir: str | os.PathLike, container_id: str) -> str:
    return os.path.join(records_dir(state_dir), _file_name(container_id))


def spool_dir(state_dir: str | os.PathLike) -> str:
    """Where the shim (cni/shim) spools an ADD it could not forward to the
    enforcer, with failOpen: the enforcer runs it once it is back."""
    return os.path.join(state_dir, "pending")


def spool_path(state_dir: str | os.PathLike, container_id: str) -> str:
    return os.path.join(spool_dir(state_dir), _file_name(container_id))


def write_record(state_dir: str | os.PathLike, record: PodRecord) -> None:
    """Atomically replace the record: readers see the old file or the new one."""
    path = record_path(state_dir, record.container_id)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    # Per process and thread: the enforcer runs the plugin for concurrent shim calls.
    tmp = os.path.join(directory, f".tmp-{record.container_id}-{os.getpid()}-{_thread.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, record.to_json().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: str) -> PodRecord:
    with open(path, "rb") as f:
        data = f.read()
    try:
        return PodRecord.from_json(data.decode())
    except (ValueError, TypeError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise RecordError(f"{path}: corrupt record: {e}") from e


def read_record(state_dir: str | os.PathLike, container_id: str) -> PodRecord | None:
    try:
        return _read(record_path(state_dir, container_id))
    except FileNotFoundError:
        return None


def remove_record(state_dir: str | os.PathLike, container_id: str) -> bool:
    try:
        os.unlink(record_path(state_dir, container_id))
        return True
    except FileNotFoundError:
        return False


def _record_files(state_dir: str | os.PathLike) -> list[str]:
    directory = records_dir(state_dir)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(directory, n) for n in names if n.endswith(".json") and not n.startswith("."))


def read_all_records(state_dir: str | os.PathLike) -> tuple[list[PodRecord], list[str]]:
    """Every readable record, oldest first (as the enforcer orders them), and an
    error line for each unreadable one."""
    records, errors = [], []
    for _, path in sorted((_mtime(path), path) for path in _record_files(state_dir)):
        try:
            records.append(_read(path))
        except FileNotFoundError:
            continue  # removed while we looked
        except (OSError, RecordError) as e:
            errors.append(str(e))
    return records, errors


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


def records_signature(state_dir: str | os.PathLike) -> tuple:
    """Cheap change detection: names, sizes and mtimes of the record files."""
    signature = []
    for path in _record_files(state_dir):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue  # removed while we looked: the next look sees it gone
        signature.append((os.path.basename(path), st.st_size, st.st_mtime_ns))
    return tuple(signature)
