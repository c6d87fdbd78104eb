"""Crafted frames on pods' wires, for the adversarial tests.

A pod's ``eth0`` is reached with ``AF_PACKET`` sockets opened *inside* its
network namespace by a short-lived thread that ``setns()``es there: a socket
stays in the namespace it was made in, so the test process itself never leaves
the host's namespace, no process is started, and nothing outlives the test.

- ``Wire(netns)``: send raw Ethernet frames (built with scapy) on a pod's eth0,
  exactly as a compromised pod with CAP_NET_RAW would;
- ``Wire.capture()``: every frame that *arrives* at that eth0 during a
  ``with`` block (outgoing frames are left out), for counting what got through;
- ``Counters``: the packet counters of nft rules, by rule comment, so a test
  can name the rule that dropped its frames.
"""

from __future__ import annotations

import ctypes
import os
import re
import socket
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from scapy.layers.l2 import Ether

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(netns: str, fn: Callable):
    """``fn()`` run by a thread that joined the named network namespace."""
    out: dict = {}

    def run() -> None:
        try:
            fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            finally:
                os.close(fd)
            out["value"] = fn()
        except BaseException as e:  # handed to the caller
            out["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, ETH_P_ALL))
    return s


class Capture:
    """Frames arriving at one interface while it runs; ``frames`` after it stops."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.sock.settimeout(0.02)
        while not self._stop.is_set():
            try:
                data, address = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            if address[2] != PACKET_OUTGOING:
                self.frames.append(data)

    def start(self) -> "Capture":
        self._thread.start()
        return self

    def stop(self) -> list[bytes]:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        return self.frames

    def matching(self, predicate: Callable[[Ether], bool]) -> list[Ether]:
        out = []
        for raw in list(self.frames):
            frame = Ether(raw)
            try:
                if predicate(frame):
                    out.append(frame)
            except (AttributeError, IndexError, TypeError):
                continue
        return out

    def wait_for(self, predicate: Callable[[Ether], bool], count: int, timeout: float) -> list[Ether]:
        """Until ``count`` matching frames arrived, or ``timeout``: the matching frames."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(predicate)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


class Wire:
    """One pod's eth0, seen from inside its namespace."""

    def __init__(self, netns: str, ifname: str = "eth0") -> None:
        self.netns = netns
        self.ifname = ifname

    def socket(self) -> socket.socket:
        return in_netns(self.netns, lambda: _packet_socket(self.ifname))

    def send(self, *frames) -> int:
        """Send frames (scapy packets or bytes) as they are; returns how many."""
        with self.socket() as s:
            for frame in frames:
                s.send(bytes(frame))
        return len(frames)

    @contextmanager
    def capture(self) -> Iterator[Capture]:
        cap = Capture(self.socket()).start()
        try:
            yield cap
        finally:
            cap.stop()

    def mac(self) -> str:
        """The interface's MAC, as its namespace sees it (not through /sys, which is the host's)."""
        with self.socket() as s:
            return ":".join(f"{b:02x}" for b in s.getsockname()[4])


_COUNTER = re.compile(r"counter packets (\d+) bytes \d+.*?comment \"([^\"]*)\"")


def rule_counters(nft_listing: str) -> dict[str, int]:
    """``comment -> packets`` for every counted rule of an ``nft list`` output
    (rules sharing a comment add up)."""
    out: dict[str, int] = {}
    for line in nft_listing.splitlines():
        m = _COUNTER.search(line)
        if m:
            out[m.group(2)] = out.get(m.group(2), 0) + int(m.group(1))
    return out
