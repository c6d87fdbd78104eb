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
            packet = Packet(ipaddress.ip_address(s.ip), ipaddress.ip_address(d.ip), L4_NAMES[protocol.value], port)
            if self._to_own_node(node, s, d):
                # a local pod's traffic to its node goes through the input hook, if the table has one
                tracer = self.tracer(node)
                if tracer.table.chain("input") is not None and tracer.trace(packet, base="input").verdict != "accept":
                    return False
                continue
            node_obj = self.state.node(node)
            if node_obj is not None and (s.ip in node_obj.ips or d.ip in node_obj.ips):
                continue  # the node's own traffic to its pods goes through output, not forward
            if any(e.pod is not None and e.pod.host_network and e.pod.node == node for e in (s, d)):
                continue  # a hostNetwork pod is the node itself
            if self.tracer(node).trace(packet).verdict != "accept":
                return False
        return True

    def _to_own_node(self, node: str, s, d) -> bool:
        """Whether the flow goes from a pod on ``node`` to ``node`` itself (or a hostNetwork pod there)."""
        if s.pod is None or s.pod.host_network or s.pod.node != node:
            return False
        node_obj = self.state.node(node)
        return (node_obj is not None and d.ip in node_obj.ips) or (
            d.pod is not None and d.pod.host_network and d.pod.node == node
        )
