"""Read packets the kernel logs to an NFLOG group (nfnetlink_log), without
any library: pyroute2 has no NFLOG reader. Only what the denied-flow log
needs: the log prefix and the packet's addresses, protocol and ports."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Iterator

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFULA_CFG_CMD, NFULA_CFG_MODE = 1, 2
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD, NFULA_PREFIX = 9, 10
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
PROTOCOLS = {6: "TCP", 17: "UDP", 132: "SCTP"}


@dataclass(frozen=True)
class LoggedPacket:
    prefix: str
    src: str
    dst: str
    protocol: str
    port: int | None


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _config(group: int, attrs: bytes, seq: int) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(group)) + attrs
    return (
        struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, 0)
        + body
    )


def parse_packet(data: bytes) -> tuple[str, str, str, int | None] | None:
    """(src, dst, protocol, destination port) of an IPv4 or IPv6 packet."""
    if not data:
        return None
    version = data[0] >> 4
    if version == 4 and len(data) >= 20:
        header = (data[0] & 0x0F) * 4
        proto, src, dst = data[9], data[12:16], data[16:20]
    elif version == 6 and len(data) >= 40:
        header, proto, src, dst = 40, data[6], data[8:24], data[24:40]
    else:
        return None
    port = struct.unpack("!H", data[header + 2 : header + 4])[0] if proto in PROTOCOLS and len(data) >= header + 4 else None
    return str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)), PROTOCOLS.get(proto, str(proto)), port


class NflogReader:
    def __init__(self, group: int) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        cmd = _attr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND))
        mode = _attr(NFULA_CFG_MODE, struct.pack("!IBB", 128, NFULNL_COPY_PACKET, 0))
        self.sock.send(_config(group, cmd, 1))
        self._ack()
        self.sock.send(_config(group, mode, 2))
        self._ack()

    def _ack(self) -> None:
        data = self.sock.recv(65536)
        length, kind = struct.unpack("=IH", data[:6])
        if kind == NLMSG_ERROR:
            error = struct.unpack("=i", data[16:20])[0]
            if error:
                raise OSError(-error, f"NFLOG configuration refused: {os.strerror(-error)}")

    def packets(self, timeout: float | None = None) -> Iterator[LoggedPacket]:
        """Packets as they arrive; stops after ``timeout`` seconds without one."""
        self.sock.settimeout(timeout)
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                return
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack("=IH", data[offset : offset + 6])
                if length < 16:
                    break
                if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
                    packet = self._parse(data[offset + 20 : offset + length])
                    if packet:
                        yield packet
                offset += (length + 3) & ~3

    @staticmethod
    def _parse(attrs: bytes) -> LoggedPacket | None:
        prefix, payload, offset = "", b"", 0
        while offset + 4 <= len(attrs):
            length, kind = struct.unpack("=HH", attrs[offset : offset + 4])
            if length < 4:
                break
            value = attrs[offset + 4 : offset + length]
            kind &= 0x3FFF
            if kind == NFULA_PREFIX:
                prefix = value.rstrip(b"\0").decode(errors="replace")
            elif kind == NFULA_PAYLOAD:
                payload = value
            offset += (length + 3) & ~3
        parsed = parse_packet(payload)
        return LoggedPacket(prefix, *parsed) if parsed else None

    def close(self) -> None:
        self.sock.close()
