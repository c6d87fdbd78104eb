"""The local unix socket the CNI plugin calls: one JSON request line, one JSON
reply line per connection.

    {"command": "ADD", "containerId": "..."}   ->  {"ok": true}  once a commit holds the pod's port and rules
    {"command": "DEL", "containerId": "..."}   ->  {"ok": true}  once its addresses left every set
    {"command": "CHECK", "containerId": "..."} ->  {"ok": true} or {"ok": false, "error": "..."}
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
from pathlib import Path

from enforcer.daemon import Enforcer
from enforcer.records import RecordError, read_record

log = logging.getLogger("nftpolicy.cni")


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

    def answer(self, request: dict) -> dict:
        command, container_id = request.get("command"), request.get("containerId")
        if command not in ("ADD", "DEL", "CHECK") or not isinstance(container_id, str):
            return {"ok": False, "error": "expected command ADD, DEL or CHECK and a containerId"}
        if command == "CHECK":
            problem = self._not_programmed(container_id)
            return {"ok": False, "error": problem} if problem else {"ok": True}
        if not self.enforcer.request_sync(self.wait):
            return {"ok": False, "error": self.enforcer.last_error or "timed out waiting for the sync"}
        if command == "ADD":  # committed is not enough: the commit must hold this pod's port
            problem = self._not_programmed(container_id)
            if problem:
                return {"ok": False, "error": problem}
        log.info("%s %s: committed", command, container_id)
        return {"ok": True}

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
