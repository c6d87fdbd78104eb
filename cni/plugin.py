"""The chained CNI plugin ``nftpolicy`` (spec 0.4.0, 1.0.0, 1.1.0).

It runs after ``bridge`` and never changes the network: at ADD it records the
pod's identity (CNI_ARGS), its host-side veth, MAC and IPs (prevResult),
tags the veth, and waits until the local enforcer has the pod's rules in the
kernel; then it prints prevResult back unchanged. If the enforcer cannot be
reached in time, the pod's veth is held down (fail closed; ``failOpen: true``
leaves it up) and the enforcer brings it up once it has programmed the pod.

Start-up cost matters here (it delays every pod): stdlib only, no Kubernetes
client, no CLI framework, and no module imported that the common path does
not use (annotations are strings, never evaluated).

Two ways to run it: as this executable (``python -IS``, the "python" form of
``nftpolicy cni install``), or inside the enforcer, which runs ``run`` for
each call the static shim (``cni/shim``, the "shim" form) forwards; there it
passes its own ``Host``, which asks the enforcer directly and uses netlink.
"""

from __future__ import annotations

import _socket  # not ``socket``: its enum import costs start-up time
import os
import sys

from cni import lean_json
from cni.records import (
    DEFAULT_SOCKET,
    DEFAULT_STATE_DIR,
    PodRecord,
    RecordError,
    interface_name_problem,
    ip_problem,
    mac_problem,
    read_all_records,
    read_record,
    remove_record,
    write_record,
)

TYPE_CHECKING = False  # typing costs start-up time; annotations are strings
if TYPE_CHECKING:
    from typing import Any, Mapping, TextIO

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 3600

# Error codes of the CNI spec.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
NOT_PROGRAMMED = 100  # plugin-specific: CHECK found the pod's rules missing
INTERNAL_ERROR = 101  # plugin-specific: a bug; reported as a CNI error, never as a traceback


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def _require_env(env: Mapping[str, str], *names: str) -> list[str]:
    missing = [n for n in names if not env.get(n)]
    if missing:
        raise CniError(INVALID_ENVIRONMENT, f"missing environment variable {', '.join(missing)}")
    return [env[n] for n in names]


def parse_cni_args(text: str) -> dict[str, str]:
    """``K=V;K=V`` as the runtime passes CNI_ARGS."""
    args = {}
    for part in filter(None, text.split(";")):
        key, sep, value = part.partition("=")
        if not sep:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS: malformed entry {part!r}, expected KEY=VALUE")
        args[key] = value
    return args


def pod_identity(env: Mapping[str, str]) -> tuple[str, str, str]:
    args = parse_cni_args(env.get("CNI_ARGS", ""))
    missing = [k for k in ("K8S_POD_NAMESPACE", "K8S_POD_NAME") if not args.get(k)]
    if missing:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS: missing {', '.join(missing)}: not called for a Kubernetes pod?")
    return args["K8S_POD_NAMESPACE"], args["K8S_POD_NAME"], args.get("K8S_POD_UID", "")


def attachment(prev: Mapping[str, Any], netns: str, ifname: str) -> tuple[str, str | None, tuple[str, ...]]:
    """The host-side veth, the pod's MAC and its IPs, from the bridge plugin's result."""
    interfaces = prev.get("interfaces")
    if not isinstance(interfaces, list) or not all(isinstance(i, dict) for i in interfaces):
        raise CniError(INVALID_CONFIG, "prevResult.interfaces: must be a list of interfaces")
    pod_index = next(
        (n for n, i in enumerate(interfaces) if i.get("sandbox") and i.get("name") == ifname),
        next((n for n, i in enumerate(interfaces) if i.get("sandbox")), None),
    )
    host = [i for i in interfaces if not i.get("sandbox") and i.get("name")]
    if pod_index is None or not host:
        raise CniError(
            INVALID_CONFIG,
            "prevResult.interfaces: expected a host-side veth and a sandbox interface (is nftpolicy chained after bridge?)",
        )
    # bridge lists [bridge, host veth, container]: the host veth is the last host-side one.
    host_ifname = host[-1]["name"]
    mac = interfaces[pod_index].get("mac")
    # These strings go into nft scripts and /sys paths: only well-formed ones pass.
    for field, problem in (
        (f"prevResult.interfaces[{interfaces.index(host[-1])}].name", interface_name_problem(host_ifname)),
        (f"prevResult.interfaces[{pod_index}].mac", None if mac is None else mac_problem(mac)),
    ):
        if problem:
            raise CniError(INVALID_CONFIG, f"{field}: {problem}")
    entries = prev.get("ips") or []
    if not isinstance(entries, list):
        raise CniError(INVALID_CONFIG, "prevResult.ips: must be a list")
    ips = []
    for n, entry in enumerate(entries):
        address = entry.get("address") if isinstance(entry, dict) else None
        ip, _, length = address.partition("/") if isinstance(address, str) else ("", "", "")
        if ip_problem(ip) or not length.isdigit():
            raise CniError(
                INVALID_CONFIG, f"prevResult.ips[{n}].address: must be an address with a prefix length, like 10.244.0.5/24"
            )
        if entry.get("interface", pod_index) == pod_index:
            ips.append(ip)
    if not ips:
        raise CniError(INVALID_CONFIG, "prevResult.ips: the pod has no address")
    return host_ifname, mac, tuple(ips)


def call_enforcer(socket_path: str, command: str, container_id: str, timeout: float) -> dict[str, Any]:
    """One request to the local enforcer; raises OSError when it cannot answer in time."""
    s = _connect(socket_path, timeout)
    try:
        s.sendall((lean_json.dumps({"command": command, "containerId": container_id}) + "\n").encode())
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    finally:
        s.close()
    if not reply:
        raise OSError("the enforcer closed the connection without answering")
    return lean_json.loads(reply.decode())


def _connect(socket_path: str, timeout: float) -> _socket.socket:
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(socket_path)
    except OSError:
        s.close()
        raise
    return s


def interface_alias(record: PodRecord) -> str:
    """What ``ip link`` shows as the veth's ``alias``: the owning pod."""
    return f"nftpolicy {record.key} {record.container_id[:12]}"


def tag_interface(host_ifname: str, record: PodRecord) -> None:
    try:
        with open(f"/sys/class/net/{host_ifname}/ifalias", "w") as f:
            f.write(interface_alias(record))
    except OSError as e:
        print(f"nftpolicy: cannot tag {host_ifname}: {e}", file=sys.stderr)


def hold_down(host_ifname: str) -> None:
    import subprocess  # only on this rare path: it costs start-up time

    result = subprocess.run(["ip", "link", "set", "dev", host_ifname, "down"], capture_output=True, text=True)
    if result.returncode != 0:
        raise CniError(IO_FAILURE, f"cannot hold {host_ifname} down: {result.stderr.strip()}")


class Host:
    """What the plugin does beyond its records: ask the enforcer, tag the pod's
    veth, hold it down, and warn. These are the executable's: the socket,
    /sys, ``ip link`` and stderr (the module functions, looked up at each call).
    The enforcer runs the plugin in-process with its own (enforcer/node/cni_server.py)."""

    def call_enforcer(self, socket_path: str, command: str, container_id: str, timeout: float) -> dict[str, Any]:
        return call_enforcer(socket_path, command, container_id, timeout)

    def tag_interface(self, host_ifname: str, record: PodRecord) -> None:
        tag_interface(host_ifname, record)

    def hold_down(self, host_ifname: str) -> None:
        hold_down(host_ifname)

    def warn(self, message: str) -> None:
        print(message, file=sys.stderr)


class Plugin:
    def __init__(self, env: Mapping[str, str], conf: dict[str, Any], host: Host | None = None) -> None:
        self.env = env
        self.conf = conf
        self.host = host or Host()
        self.state_dir = conf.get("stateDir", DEFAULT_STATE_DIR)
        self.socket = conf.get("socket", DEFAULT_SOCKET)
        self.fail_open = conf.get("failOpen", False)
        self.timeout = conf.get("timeoutSeconds", DEFAULT_TIMEOUT)
        for field, value in (("stateDir", self.state_dir), ("socket", self.socket)):
            if not isinstance(value, str) or not value or "\0" in value:
                raise CniError(INVALID_CONFIG, f"{field}: must be a path")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or not 0 < self.timeout <= MAX_TIMEOUT:
            raise CniError(INVALID_CONFIG, f"timeoutSeconds: must be a number of seconds above 0 and at most {MAX_TIMEOUT}")
        if not isinstance(self.fail_open, bool):
            raise CniError(INVALID_CONFIG, "failOpen: must be true or false")
        prev = conf.get("prevResult")
        if prev is not None and not isinstance(prev, dict):
            raise CniError(INVALID_CONFIG, "prevResult: must be an object")
        self.prev = prev

    def _require_prev(self) -> dict[str, Any]:
        if self.prev is None:
            raise CniError(INVALID_CONFIG, "missing prevResult: nftpolicy must be called as a chained plugin, after bridge")
        return self.prev

    def add(self) -> dict[str, Any]:
        prev = self._require_prev()
        container_id, netns, ifname = _require_env(self.env, "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")
        namespace, name, uid = pod_identity(self.env)
        host_ifname, mac, ips = attachment(prev, netns, ifname)
        record = PodRecord(container_id, namespace, name, uid, host_ifname, mac, ips, netns, ifname)
        try:
            write_record(self.state_dir, record)
        except (OSError, RecordError) as e:
            raise CniError(IO_FAILURE, f"cannot write the pod record in {self.state_dir}: {e}") from e
        self.host.tag_interface(host_ifname, record)
        try:
            reply = self.host.call_enforcer(self.socket, "ADD", container_id, self.timeout)
            if reply.get("ok"):
                return prev
            problem = reply.get("error", "the enforcer refused")
        except (OSError, ValueError) as e:
            problem = f"enforcer at {self.socket} unreachable: {e}"
        if self.fail_open:
            self.host.warn(
                f"nftpolicy: {namespace}/{name}: {problem}; failOpen: the pod runs unprotected until the enforcer programs it"
            )
            return prev
        self.host.hold_down(host_ifname)
        write_record(self.state_dir, record._replace(held=True))
        self.host.warn(f"nftpolicy: {namespace}/{name}: {problem}; {host_ifname} held down until the enforcer programs it")
        return prev

    def delete(self) -> None:
        (container_id,) = _require_env(self.env, "CNI_CONTAINERID")
        try:
            existed = remove_record(self.state_dir, container_id)
        except (OSError, RecordError) as e:
            raise CniError(IO_FAILURE, f"cannot remove the pod record: {e}") from e
        if existed:
            try:
                self.host.call_enforcer(self.socket, "DEL", container_id, self.timeout)
            except (OSError, ValueError):
                pass  # the enforcer drops the pod when it next reads the records

    def check(self) -> None:
        prev = self._require_prev()
        container_id, netns, ifname = _require_env(self.env, "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")
        try:
            record = read_record(self.state_dir, container_id)
        except (RecordError, OSError) as e:
            raise CniError(IO_FAILURE, str(e)) from e
        if record is None:
            raise CniError(UNKNOWN_CONTAINER, f"no nftpolicy record for container {container_id}")
        host_ifname, _, ips = attachment(prev, netns, ifname)
        if (record.host_ifname, record.ips) != (host_ifname, ips):
            raise CniError(
                INVALID_CONFIG,
                f"record for {record.key} says {record.host_ifname} {record.ips}, prevResult says {host_ifname} {ips}",
            )
        try:
            reply = self.host.call_enforcer(self.socket, "CHECK", container_id, self.timeout)
        except (OSError, ValueError) as e:
            raise CniError(TRY_AGAIN_LATER, f"enforcer at {self.socket} unreachable: {e}") from e
        if not reply.get("ok"):
            raise CniError(NOT_PROGRAMMED, reply.get("error", "not programmed"))

    def gc(self) -> None:
        """Remove the records of attachments the runtime no longer has."""
        valid = self.conf.get("cni.dev/valid-attachments", [])
        if not isinstance(valid, list):
            raise CniError(INVALID_CONFIG, "cni.dev/valid-attachments: must be a list")
        if not all(isinstance(a, dict) and isinstance(a.get("containerID"), str) for a in valid):
            raise CniError(INVALID_CONFIG, "cni.dev/valid-attachments: each entry must have a string containerID")
        keep = {a["containerID"] for a in valid}
        records, _ = read_all_records(self.state_dir)
        gone = [r.container_id for r in records if r.container_id not in keep]
        for container_id in gone:
            remove_record(self.state_dir, container_id)
        if gone:
            try:  # records went: the enforcer closes their ports at its next sync
                self.host.call_enforcer(self.socket, "SYNC", gone[0], self.timeout)
            except (OSError, ValueError):
                pass

    def status(self) -> None:
        try:
            _connect(self.socket, self.timeout).close()
        except OSError as e:
            raise CniError(PLUGIN_NOT_AVAILABLE, f"enforcer at {self.socket} unreachable: {e}") from e


def _version_reply(version: str) -> dict[str, Any]:
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def run(env: Mapping[str, str], stdin: TextIO, stdout: TextIO, host: Host | None = None) -> int:
    """One CNI call: the exit code; the result or the CNI error is written to ``stdout``."""
    command = env.get("CNI_COMMAND", "")
    version = "1.1.0"
    try:
        raw = stdin.read() if command else ""
        try:
            conf = lean_json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError) as e:
            raise CniError(DECODE_FAILURE, f"network configuration on stdin is not JSON: {e}") from e
        if not isinstance(conf, dict):
            raise CniError(DECODE_FAILURE, "network configuration on stdin must be a JSON object")
        version = conf.get("cniVersion") or version
        if command == "VERSION":
            stdout.write(lean_json.dumps(_version_reply(version)))
            return 0
        if version not in SUPPORTED_VERSIONS:
            raise CniError(
                INCOMPATIBLE_VERSION, f"cniVersion {version} is not supported", f"supported: {', '.join(SUPPORTED_VERSIONS)}"
            )
        plugin = Plugin(env, conf, host)
        if command == "ADD":
            stdout.write(lean_json.dumps(plugin.add()))
        elif command == "DEL":
            plugin.delete()
        elif command == "CHECK":
            plugin.check()
        elif command in ("GC", "STATUS") and version == "1.1.0":
            plugin.gc() if command == "GC" else plugin.status()
        else:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is not supported for cniVersion {version}")
        return 0
    except CniError as e:
        error = {"cniVersion": version, "code": e.code, "msg": e.msg}
        if e.details:
            error["details"] = e.details
    except Exception as e:  # a bug: the runtime still gets a CNI error, and the pod is not started
        error = {"cniVersion": version, "code": INTERNAL_ERROR, "msg": f"nftpolicy internal error: {e.__class__.__name__}: {e}"}
    stdout.write(lean_json.dumps(error))
    return 1


def main() -> int:
    return run(os.environ, sys.stdin, sys.stdout)


def exit_with_main() -> None:
    """Run and leave without the interpreter's teardown, which costs every pod
    1.5 ms: the output is flushed here and the record was fsynced."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
