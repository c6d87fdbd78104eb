"""Cut established connections that the new ruleset would no longer allow.

Replies of allowed connections pass on conntrack state, so without this a
connection opened before a deny stays open. After a sync that changed the
policy table, every tracked flow touching a local pod is walked through the
new table as if it were new (``rules.trace``); the ones it drops lose their
conntrack entry, and their next packet meets the policy.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from enforcer.node.netlink import ConntrackTable
from rules.nft import Table
from rules.trace import Packet, Tracer

log = logging.getLogger(__name__)

PROTOCOLS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", 132: "sctp"}


class ConnectionCutter:
    def __init__(self, table: ConntrackTable | None = None) -> None:
        self._ct = table or ConntrackTable()

    def cut_denied(self, table: Table, local_ips: set) -> int:
        """Delete the entries of flows the policy table now drops; returns how many."""
        tracer = Tracer(table)
        cut = 0
        for flow, entry in self._ct.flows():
            proto = PROTOCOLS.get(flow.protocol)
            if proto is None or flow.saddr is None or flow.daddr is None:
                continue
            src, dst = ipaddress.ip_address(flow.saddr), ipaddress.ip_address(flow.daddr)
            if src not in local_ips and dst not in local_ips:
                continue
            if tracer.trace(Packet(src, dst, proto, flow.dport)).verdict == "drop":
                try:
                    self._ct.delete(entry)
                    cut += 1
                except Exception as e:  # the entry may have expired meanwhile
                    log.debug("conntrack delete %s: %s", flow, e)
        return cut
