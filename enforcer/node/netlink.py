"""The node's netlink edge: the only module that imports pyroute2.

``Links`` brings a held pod's veth up once its rules are in the kernel, and
knows which bridge ports are not on a pod bridge (the bridge table checks
every other port, whatever its name). ``ConntrackTable`` lists and deletes
tracked flows (for ``conntrack.ConnectionCutter``). And ``set_link``, one
rtnetlink request without pyroute2, with which the plugin run in-process
(enforcer/node/cni_server.py) tags and holds veths."""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import threading
from typing import Any, Callable, Iterable, Iterator, NamedTuple

log = logging.getLogger("nftpolicy.links")


class Links:
    def __init__(self) -> None:
        from pyroute2 import IPRoute

        self._ipr = IPRoute()
        self._lock = threading.Lock()
        self._table: dict[int, tuple[str, int | None, bool]] | None = None  # index: name, master, is a bridge (kept by watch)
        self._names: frozenset[str] = frozenset()  # the table's link names, for ``exists``

    def set_up(self, ifname: str) -> bool:
        """True when the link exists (and is now up)."""
        index = self._ipr.link_lookup(ifname=ifname)
        if not index:
            return False
        self._ipr.link("set", index=index[0], state="up")
        return True

    def exists(self, ifname: str) -> bool:
        """Whether the node has a link of that name. The table ``watch`` keeps
        may lag a link just made, so a name it lacks is asked of the kernel."""
        with self._lock:
            names = self._names
        if ifname in names:
            return True
        try:
            socket.if_nametoindex(ifname)
            return True
        except OSError:
            return False

    def foreign_ports(self, pod_bridges: Iterable[str]) -> frozenset[str]:
        """Ports enslaved to a bridge that is not one of ``pod_bridges``: from the
        table ``watch`` keeps by link events (microseconds), else a full listing
        (milliseconds per dozen links: pyroute2 parses every attribute)."""
        with self._lock:
            table = self._table
        if table is None:
            table = {link["index"]: _entry(link) for link in self._ipr.get_links()}
        pod = set(pod_bridges)
        bridges = {index for index, (name, _, is_bridge) in table.items() if is_bridge and name not in pod}
        return frozenset(name for name, master, _ in table.values() if master in bridges)

    def _keep(self, table: dict[int, tuple[str, int | None, bool]] | None) -> None:
        names = frozenset(name for name, _, _ in table.values()) if table is not None else frozenset()
        with self._lock:
            self._table, self._names = table, names

    def watch(self, stop: threading.Event, changed: Callable[[], None]) -> None:
        """Keep the link table from link events and call ``changed`` after any
        link appears, goes or changes master, until ``stop``. Returns once the
        table is listed and events are subscribed, so no change slips between.
        Without link events, ``changed`` every second (and full listings)."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.rtnl import RTMGRP_LINK

        subscribed = threading.Event()

        def run() -> None:
            try:
                events = IPRoute()  # pyroute2's sockets belong to the thread that made them
                events.bind(groups=RTMGRP_LINK)
                with IPRoute() as dump:  # after subscribing: later changes are queued as events
                    table = {link["index"]: _entry(link) for link in dump.get_links()}
                self._keep(table)
                subscribed.set()
                with events:
                    while not stop.is_set():
                        table = dict(table)
                        for m in events.get():
                            if m["event"] == "RTM_NEWLINK":
                                table[m["index"]] = _entry(m)
                            elif m["event"] == "RTM_DELLINK":
                                table.pop(m["index"], None)
                        self._keep(table)
                        changed()
            except OSError as e:  # no event socket: enforcement must not depend on it
                log.error("link events unavailable (%s): the bridge ports are listed every second", e)
                self._keep(None)
                subscribed.set()
                while not stop.wait(1.0):
                    changed()

        threading.Thread(target=run, name="link-events", daemon=True).start()
        subscribed.wait()


def local_addresses() -> frozenset[str]:
    """Every address on this network namespace's interfaces: the node's own."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return frozenset(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr())


class Flow(NamedTuple):
    """A tracked flow's original direction."""

    protocol: int
    saddr: str | None
    daddr: str | None
    dport: int | None


class ConntrackTable:
    def __init__(self) -> None:
        from pyroute2 import Conntrack

        self._ct = Conntrack()

    def flows(self) -> Iterator[tuple[Flow, Any]]:
        """Each tracked flow, with the handle ``delete`` takes."""
        for entry in list(self._ct.dump_entries()):
            t = entry.tuple_orig
            yield Flow(t.proto, t.saddr, t.daddr, t.dport), entry

    def delete(self, entry: Any) -> None:
        self._ct.delete(entry)


# rtnetlink, for set_link: RTM_SETLINK with an ifinfomsg and at most one attribute.
_RTM_SETLINK, _NLM_F_REQUEST, _NLM_F_ACK, _NLMSG_ERROR = 19, 0x1, 0x4, 2
_IFF_UP, _IFLA_IFALIAS = 0x1, 20


def set_link(ifname: str, *, alias: str | None = None, up: bool | None = None) -> None:
    """Set one link's alias and/or bring it up or down, with one rtnetlink
    request on a socket of its own: any thread may call it (the CNI server's
    do, for the plugin run in-process), it works where /sys is read-only (the
    enforcer's container), and it costs tens of microseconds where pyroute2's
    IPRoute costs a millisecond or two. Raises OSError (ENODEV: no such link)."""
    index = socket.if_nametoindex(ifname)
    attributes = b""
    if alias is not None:
        data = alias.encode() + b"\0"
        attributes = struct.pack("=HH", 4 + len(data), _IFLA_IFALIAS) + data + b"\0" * (-len(data) % 4)
    flags, change = (0, 0) if up is None else (_IFF_UP if up else 0, _IFF_UP)
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, change) + attributes  # struct ifinfomsg
    header = struct.pack("=IHHII", 16 + len(body), _RTM_SETLINK, _NLM_F_REQUEST | _NLM_F_ACK, 1, 0)  # struct nlmsghdr
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.settimeout(5)
        s.sendto(header + body, (0, 0))
        reply = s.recv(4096)
    (kind,) = struct.unpack_from("=H", reply, 4)
    (error,) = struct.unpack_from("=i", reply, 16)  # struct nlmsgerr: 0 is the ack
    if kind != _NLMSG_ERROR:
        raise OSError(errno.EPROTO, f"{ifname}: unexpected rtnetlink reply type {kind}")
    if error:
        raise OSError(-error, f"{ifname}: {os.strerror(-error)}")


def _entry(link) -> tuple[str, int | None, bool]:
    """A link message as the table keeps it: name, master's index, whether it is a bridge."""
    info = link.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info else None
    return link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_MASTER"), kind == "bridge"
