"""A probe agent that lives in one pod's network namespace.

Started as ``ip netns exec POD python probe_agent.py --tcp 80,81 --udp 53 --sctp``.
It serves TCP (accept, then close) and UDP (echo) on every given port, on
IPv4 and IPv6, and records the SCTP INITs that reach it. On stdin it takes
JSON lines, one probe each, and answers each on stdout as soon as it is done
(probes run concurrently):

    {"id": 1, "op": "tcp",  "host": "10.244.1.3", "port": 80, "timeout": 1}
    {"id": 2, "op": "udp",  "host": "fd00::3",    "port": 53, "timeout": 1}
    {"id": 3, "op": "sctp-send", "host": "10.244.1.3", "port": 9000, "tag": 12345}
    {"id": 4, "op": "sctp-seen", "tag": 12345, "timeout": 1}
    {"id": 5, "op": "tcp-open", "host": "10.244.1.3", "port": 7, "conn": "c1"}   # keep a connection to the echo port
    {"id": 6, "op": "tcp-roundtrip", "conn": "c1", "timeout": 1}                 # and use it again later
    -> {"id": 1, "ok": true}

"tcp" and "udp" take an optional "source" address to send from. TCP port 7
echoes, for connections that live across a policy change.

The kernel here has no SCTP sockets, so SCTP is probed with a crafted INIT
sent on a raw socket and looked for with a raw socket on the other side.
Stdlib only: it runs with the interpreter's bare minimum.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import struct
import sys
import threading
import time

IPPROTO_SCTP = 132
_lock = threading.Lock()
_seen_tags: set[int] = set()
_connections: dict[str, socket.socket] = {}
ECHO_PORT = 7


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def sctp_init(src_port: int, dst_port: int, tag: int) -> bytes:
    """An SCTP packet with one INIT chunk; ``tag`` is its initiate tag."""
    init = struct.pack("!IIHHI", tag, 65535, 1, 1, tag)  # tag, a_rwnd, out streams, in streams, initial TSN
    chunk = struct.pack("!BBH", 1, 0, 4 + len(init)) + init
    header = struct.pack("!HHII", src_port, dst_port, 0, 0)
    checksum = crc32c(header + chunk)
    return struct.pack("!HHI", src_port, dst_port, 0) + struct.pack("<I", checksum) + chunk


def _bound(family: int, kind: int, port: int) -> socket.socket:
    """A socket bound to every address of one family (IPv6 sockets IPv6 only)."""
    s = socket.socket(family, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    return s


def _serve_tcp(family: int, port: int) -> None:
    s = _bound(family, socket.SOCK_STREAM, port)
    s.listen(128)
    while True:
        conn, _ = s.accept()
        conn.close()


def _serve_tcp_echo(family: int, port: int) -> None:
    s = _bound(family, socket.SOCK_STREAM, port)
    s.listen(128)

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    while True:
        conn, _ = s.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def _serve_udp(family: int, port: int) -> None:
    s = _bound(family, socket.SOCK_DGRAM, port)
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(data, peer)


def _watch_sctp(family: int) -> None:
    s = socket.socket(family, socket.SOCK_RAW, IPPROTO_SCTP)
    while True:
        data = s.recv(65535)
        if family == socket.AF_INET:
            data = data[(data[0] & 0x0F) * 4 :]  # IPv4 raw sockets see the IP header
        if len(data) >= 20 and data[12] == 1:  # first chunk is INIT
            with _lock:
                _seen_tags.add(struct.unpack("!I", data[16:20])[0])


def _family(host: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def probe(request: dict) -> bool:
    op, timeout = request["op"], request.get("timeout", 1.0)
    if op in ("tcp", "tcp-open"):
        s = socket.socket(_family(request["host"]), socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            if request.get("source"):
                s.bind((request["source"], 0))
            s.connect((request["host"], request["port"]))
        except OSError:
            s.close()
            return False
        if op == "tcp-open":
            _connections[request["conn"]] = s
        else:
            s.close()
        return True
    if op == "tcp-roundtrip":
        s = _connections[request["conn"]]
        s.settimeout(timeout)
        nonce = os.urandom(8)
        try:
            s.sendall(nonce)
            return s.recv(64) == nonce
        except OSError:
            return False
    if op == "udp":
        with socket.socket(_family(request["host"]), socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            if request.get("source"):
                s.bind((request["source"], 0))
            nonce = os.urandom(8)
            try:
                s.sendto(nonce, (request["host"], request["port"]))
                data, _ = s.recvfrom(64)
                return data == nonce
            except OSError:
                return False
    if op == "sctp-send":
        with socket.socket(_family(request["host"]), socket.SOCK_RAW, IPPROTO_SCTP) as s:
            s.sendto(sctp_init(40000 + request["tag"] % 20000, request["port"], request["tag"]), (request["host"], 0))
        return True
    if op == "sctp-seen":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with _lock:
                if request["tag"] in _seen_tags:
                    return True
            time.sleep(0.02)
        return False
    raise ValueError(f"unknown op {op}")


def _answer(request: dict) -> None:
    try:
        reply = {"id": request["id"], "ok": probe(request)}
    except Exception as e:  # report, never die: the test reads every id
        reply = {"id": request.get("id"), "ok": False, "error": repr(e)}
    with _lock:
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tcp", default="")
    parser.add_argument("--udp", default="")
    parser.add_argument("--sctp", action="store_true")
    args = parser.parse_args()
    servers = [(_serve_tcp, int(p)) for p in filter(None, args.tcp.split(","))] + [(_serve_tcp_echo, ECHO_PORT)]
    servers += [(_serve_udp, int(p)) for p in filter(None, args.udp.split(","))]
    for target, port in servers:
        for family in (socket.AF_INET, socket.AF_INET6):
            threading.Thread(target=target, args=(family, port), daemon=True).start()
    if args.sctp:
        for family in (socket.AF_INET, socket.AF_INET6):
            threading.Thread(target=_watch_sctp, args=(family,), daemon=True).start()
    time.sleep(0.1)
    sys.stdout.write(json.dumps({"id": 0, "ok": True}) + "\n")  # ready
    sys.stdout.flush()
    for line in sys.stdin:
        threading.Thread(target=_answer, args=(json.loads(line),), daemon=True).start()


if __name__ == "__main__":
    main()
