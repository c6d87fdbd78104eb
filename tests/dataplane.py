"""What the rendered rulesets of a cluster's nodes do to a flow, without a
kernel: every node that enforces an end of the flow traces the packet through
its own ``desired_ruleset`` with ``rules.trace``."""

from __future__ import annotations

import functools
import ipaddress

from rules.evaluate import resolve
from rules.model import ClusterState, L4Protocol
from rules.trace import L4_NAMES, Packet, Tracer
from rules.translate import desired_ruleset


class Dataplane:
    def __init__(self, state: ClusterState) -> None:
        self.state = state

    @functools.lru_cache(maxsize=None)
    def tracer(self, node: str) -> Tracer:
        return Tracer(desired_ruleset(self.state, node).tables[0])

    def allows(self, src, dst, port: int, protocol: L4Protocol) -> bool:
        """Whether every node on the flow's path accepts its first packet."""
        s, d = resolve(self.state, src, dst)
        if s.pod is not None and d.pod is not None and s.pod.key == d.pod.key:
            return True  # never leaves the pod's namespace
        nodes = {e.pod.node for e in (s, d) if e.pod is not None and e.pod.is_policy_target and e.pod.node}
        for node in sorted(nodes):
            node_obj = self.state.node(node)
            if node_obj is not None and (s.ip in node_obj.ips or d.ip in node_obj.ips):
                continue  # the node's own traffic goes through input/output, not forward
            if any(e.pod is not None and e.pod.host_network and e.pod.node == node for e in (s, d)):
                continue  # a hostNetwork pod is the node itself
            packet = Packet(ipaddress.ip_address(s.ip), ipaddress.ip_address(d.ip), L4_NAMES[protocol.value], port)
            if self.tracer(node).trace(packet).verdict != "accept":
                return False
        return True
