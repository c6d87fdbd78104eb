"""Questions about the live kernel of this node: which rule decides a flow."""

from __future__ import annotations

import ipaddress
from typing import Any

from enforcer.kernel import Kernel, KernelError
from rules.model import L4Protocol
from rules.naming import POLICY_TABLE
from rules.trace import L4_NAMES, Packet, Tracer


def explain_live(kernel: Kernel, src: str, dst: str, port: int, protocol: L4Protocol) -> dict[str, Any]:
    """Walk a new connection's first packet through the live ``inet nftpolicy``
    table: the verdict, the kernel rule that gave it, and the way there.

    Each rule's comment names the policy rule it implements, so the answer
    maps back to ``NS/NAME ingress[i]``. This node decides only for its own
    pods: the egress of a local source and the ingress of a local destination.
    """
    table = kernel.read(*POLICY_TABLE)
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
        "rule": None
        if deciding is None
        else {"chain": deciding.chain, "rule": deciding.rule.text(), "comment": deciding.rule.comment},
        "path": [{"chain": s.chain, "rule": s.rule.text()} for s in result.steps],
    }


def dump_live(kernel: Kernel, node: str, state_dir: str, state=None) -> dict[str, Any]:
    """This node's live rules per local pod, named from the CNI records (and,
    given a cluster state, remote peers named too). Raises ``NoStateDir``."""
    from enforcer.registrations import node_records
    from rules.audit import dump

    table = kernel.read(*POLICY_TABLE)
    if table is None:
        raise KernelError("no table inet nftpolicy on this node: is the enforcer running?")
    names: dict[str, str] = {}
    if state is not None:
        names.update({str(ip): p.key for p in state.pods if p.is_policy_target for ip in p.ips})
    records, _ = node_records(state_dir)
    pods = {}
    for r in records:
        names.update({ip: r.key for ip in r.ips})
        pods[r.key] = (r.ips[0], r.host_ifname)
    return dump(table, node, pods, names)
