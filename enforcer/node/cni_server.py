"""The local unix socket the CNI plugin calls: one JSON request line, one JSON
reply line per connection.

From the static shim (``cni/shim``, what ``nftpolicy cni install`` puts on a
node by default), each CNI call whole:

    {"command": "CNI", "env": {"CNI_COMMAND": "ADD", ...}, "stdin": "<config>"}
        ->  {"code": 0, "stdout": "<result or CNI error>", "stderr": "<warnings>"}

The server runs the plugin (``cni.plugin.run``) in-process with that
environment and stdin, so there is one implementation of the CNI semantics.
In-process, the plugin's own requests (below) are answered directly rather
than over the socket, and it tags and holds veths over netlink: the
enforcer's container has a read-only /sys.

From the plugin (the Python form runs it as its own process):

    {"command": "ADD", "containerId": "..."}   ->  {"ok": true}  once a commit holds the pod's port and rules
    {"command": "DEL", "containerId": "..."}   ->  {"ok": true}  once its addresses left every set
    {"command": "CHECK", "containerId": "..."} ->  {"ok": true} or {"ok": false, "error": "..."}
    {"command": "SYNC", "containerId": "..."}  ->  {"ok": true}  once a commit saw the records as they are
                                                  (GC, after removing records; the id is one of them)

An ADD the shim could not forward, with ``failOpen``, is spooled in
``<state dir>/pending/`` as its request line: the server runs it once it
serves, and whenever that directory changes, so the pod gets its record and
its rules once the enforcer is back.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

from cni import plugin as cni_plugin
from enforcer.daemon import Enforcer
from enforcer.node.netlink import set_link
from cni.records import RecordError, read_record, spool_dir, spool_path

log = logging.getLogger("nftpolicy.cni")

SPOOL_POLL = 1.0  # seconds between looks at the spool directory's mtime


class CniServer:
    def __init__(self, path: str | Path, enforcer: Enforcer, wait: float = 10.0) -> None:
        self.path = Path(path)
        self.enforcer = enforcer
        self.wait = wait
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.path.unlink()  # left by a previous enforcer
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self._sock.listen(64)

    def serve(self, stop: threading.Event) -> None:
        threading.Thread(target=self._run_spooled, args=(stop,), name="cni-spool", daemon=True).start()
        self._sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        self._sock.close()
        self.path.unlink(missing_ok=True)

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(self.wait)
            try:
                request = json.loads(conn.makefile().readline())
                reply = self.answer(request)
            except (ValueError, OSError) as e:
                reply = {"ok": False, "error": f"bad request: {e}"}
            try:
                conn.sendall((json.dumps(reply) + "\n").encode())
            except OSError:
                pass  # the plugin gave up waiting

    def answer(self, request: Any, wait: float | None = None) -> dict:
        """The reply to one request; ``wait``: at most this long for a sync (and at most ``self.wait``)."""
        if isinstance(request, dict) and request.get("command") == "CNI":
            return self.run_cni(request.get("env"), request.get("stdin"))
        command, container_id = (
            (request.get("command"), request.get("containerId")) if isinstance(request, dict) else (None, None)
        )
        if command not in ("ADD", "DEL", "CHECK", "SYNC") or not isinstance(container_id, str):
            return {"ok": False, "error": "expected command CNI with env and stdin, or ADD, DEL, CHECK or SYNC and a containerId"}
        if command == "CHECK":
            problem = self._not_programmed(container_id)
            return {"ok": False, "error": problem} if problem else {"ok": True}
        if not self.enforcer.request_sync(self.wait if wait is None else min(wait, self.wait)):
            return {"ok": False, "error": self.enforcer.stats.last_error or "timed out waiting for the sync"}
        if command == "ADD":  # committed is not enough: the commit must hold this pod's port
            problem = self._not_programmed(container_id)
            if problem:
                return {"ok": False, "error": problem}
        log.info("%s %s: committed", command, container_id)
        return {"ok": True}

    def run_cni(self, env: Any, stdin: Any) -> dict:
        """One CNI call the shim forwarded, run by the plugin in-process."""
        if not (
            isinstance(env, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
            and isinstance(stdin, str)
        ):
            error = {
                "cniVersion": "1.1.0",
                "code": cni_plugin.INTERNAL_ERROR,
                "msg": "nftpolicy internal error: the shim's request needs env (strings) and stdin (a string)",
            }
            return {"code": 1, "stdout": json.dumps(error), "stderr": ""}
        command, container_id = env.get("CNI_COMMAND", ""), env.get("CNI_CONTAINERID", "")
        if command == "DEL":
            self._drop_spooled(container_id)  # else a spooled ADD would bring the pod back
        host = InProcessHost(self)
        out = io.StringIO()
        code = cni_plugin.run(env, io.StringIO(stdin), out, host)
        if code:
            log.warning("CNI %s %.64s: exit %d: %.1000s", command, container_id, code, out.getvalue())
        return {"code": code, "stdout": out.getvalue(), "stderr": "".join(f"{w}\n" for w in host.warnings)}

    def _not_programmed(self, container_id: str) -> str | None:
        try:
            record = read_record(self.enforcer.config.state_dir, container_id)
        except RecordError as e:
            return str(e)
        if record is None:
            return f"no record for container {container_id}"
        if self.enforcer.is_programmed(record):
            return None
        why = self.enforcer.registration_error(container_id)
        return f"{record.key}: interface {record.host_ifname} is not programmed" + (f": {why}" if why else "")

    # --- ADDs the shim spooled while the enforcer was unreachable (failOpen) ----

    def _drop_spooled(self, container_id: str) -> None:
        try:
            os.unlink(spool_path(self.enforcer.config.state_dir, container_id))
        except (FileNotFoundError, RecordError):
            pass

    def _run_spooled(self, stop: threading.Event) -> None:
        directory, seen = spool_dir(self.enforcer.config.state_dir), None
        while not stop.is_set():
            try:
                stamp = os.stat(directory).st_mtime_ns
            except FileNotFoundError:
                stamp = None
            if stamp is not None and stamp != seen:
                seen = stamp
                for name in sorted(os.listdir(directory)):
                    if name.endswith(".json") and not name.startswith("."):
                        self._run_spooled_call(os.path.join(directory, name))
            stop.wait(SPOOL_POLL)

    def _run_spooled_call(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                request = json.loads(f.read())
        except FileNotFoundError:
            return  # a DEL took it
        except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            log.error("spooled CNI call %s unreadable, dropped: %s", path, e)
        else:
            env = request.get("env") if isinstance(request, dict) and request.get("command") == "CNI" else None
            if not isinstance(env, dict) or env.get("CNI_COMMAND") != "ADD":
                log.error("spooled CNI call %s is not a CNI ADD, dropped", path)
            else:
                reply = self.run_cni(env, request.get("stdin"))
                log.info(
                    "ran the ADD the shim spooled while the enforcer was unreachable (%s): exit %s %.500s",
                    os.path.basename(path),
                    reply["code"],
                    reply["stdout"],
                )
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class InProcessHost(cni_plugin.Host):
    """The plugin's surroundings inside the enforcer: it asks the server
    directly, tags and holds veths over netlink, and its warnings go to the
    enforcer's log and back to the shim's stderr."""

    def __init__(self, server: CniServer) -> None:
        self.server = server
        self.warnings: list[str] = []

    def call_enforcer(self, socket_path: str, command: str, container_id: str, timeout: float) -> dict[str, Any]:
        return self.server.answer({"command": command, "containerId": container_id}, wait=timeout)

    def tag_interface(self, host_ifname: str, record) -> None:
        try:
            set_link(host_ifname, alias=cni_plugin.interface_alias(record))
        except OSError as e:
            self.warn(f"nftpolicy: cannot tag {host_ifname}: {e}")

    def hold_down(self, host_ifname: str) -> None:
        try:
            set_link(host_ifname, up=False)
        except OSError as e:
            raise cni_plugin.CniError(cni_plugin.IO_FAILURE, f"cannot hold {host_ifname} down: {e}") from e

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)
