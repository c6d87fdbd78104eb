"""Questions about the live kernel of this node: which rule decides a flow."""
from __future__ import annotations

import ipaddress
from typing import Any

from enforcer.kernel import Kernel, KernelError
from rules.model import Protocol
from rules.trace import L4_NAMES, Packet, Tracer


def explain_live(kernel: Kernel, src: str, dst: str, port: int, protocol: Protocol) -> dict[str, Any]:
    """Walk a new connection's first packet through the live ``inet nftpolicy``
    table: the verdict, the kernel rule that gave it, and the way there.

    Each rule's comment names the policy rule it implements, so the answer
    maps back to ``NS/NAME ingress[i]``. This node decides only for its own
    pods: the egress of a local source and the ingress of a local destination.
    """
    table = kernel.read("inet", "nftpolicy")
    if table is None:
        raise KernelError("no table inet nftpolicy on this node: is the enforcer running?")
    packet = Packet(ipaddress.ip_address(src), ipaddress.ip_address(dst), L4_NAMES[protocol.value], port)
    result = Tracer(table).trace(packet)
    deciding = result.deciding
    return {
        "allowed": result.verdict == "accept",
        "src": src,
        "dst": dst,
        "port": port,
        "protocol": protocol.value,
        "rule": None if deciding is None else {
            "chain": deciding.chain, "rule": deciding.rule.text(), "comment": deciding.rule.comment},
        "path": [{"chain": s.chain, "rule": s.rule.text()} for s in result.steps],
    }
