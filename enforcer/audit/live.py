"""Questions about the live kernel of this node: which rule decides a flow."""

from __future__ import annotations

import ipaddress
from typing import Any

from enforcer.kernel import Kernel, KernelError
from rules.model import L4Protocol
from rules.naming import INPUT_CHAIN, POLICY_TABLE, is_cluster_deny_chain
from rules.trace import L4_NAMES, Packet, Tracer


# Flows that never reach the forward hook, where the policy table is: why each is allowed.
SELF = "a pod's traffic to its own address stays in its network namespace: no hook of the node sees it"
TO_NODE = (
    "to the node itself (input hook): NetworkPolicy does not police traffic to a pod's node,"
    " and no ClusterNetworkPolicy egress rule selects a pod here"
)
FROM_NODE = (
    "from the node itself (output hook): the kubelet's probes and other host traffic reach pods,"
    " as the NetworkPolicy spec requires (a pod not registered yet is closed even to its node)"
)


def explain_live(
    kernel: Kernel, src: str, dst: str, port: int, protocol: L4Protocol, node_addresses: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Walk a new connection's first packet through the hooks it really takes.

    Between pods it crosses the forward hook: the live ``inet nftpolicy``
    table decides, and the answer names the kernel rule and the way there;
    each rule's comment names the policy rule it implements (``NS/NAME
    ingress[i]``). This node decides only for its own pods: the egress of a
    local source and the ingress of a local destination. A pod's traffic to
    itself, and traffic to or from the node's own addresses
    (``node_addresses``, from its interfaces), never reach that table: the
    answer says so instead of tracing them; except a local pod's traffic to
    its node when ClusterNetworkPolicy egress applies there: the table's
    input chain decides it, and is traced.
    """
    table = kernel.read(*POLICY_TABLE)
    if table is None:
        raise KernelError("no table inet nftpolicy on this node: is the enforcer running?")
    source, destination = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    answer = {"src": src, "dst": dst, "port": port, "protocol": protocol.value}
    node = {ipaddress.ip_address(a) for a in node_addresses}
    base = INPUT_CHAIN if destination in node and table.chain(INPUT_CHAIN) is not None else "forward"
    bypass = SELF if source == destination else FROM_NODE if source in node else None
    if bypass is None and destination in node and base != INPUT_CHAIN:
        bypass = TO_NODE
    if bypass is not None:
        return {"allowed": True, **answer, "rule": None, "path": [], "reason": bypass}
    result = Tracer(table).trace(Packet(source, destination, L4_NAMES[protocol.value], port), base=base)
    # A ClusterNetworkPolicy Deny rule goes on to a shared chain that logs and drops: the rule decided.
    deciding = next((step for step in reversed(result.steps) if not is_cluster_deny_chain(step.chain)), None)
    return {
        "allowed": result.verdict == "accept",
        **answer,
        "rule": None
        if deciding is None
        else {"chain": deciding.chain, "rule": deciding.rule.text(), "comment": deciding.rule.comment},
        "path": [{"chain": s.chain, "rule": s.rule.text()} for s in result.steps],
        "reason": None,
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
