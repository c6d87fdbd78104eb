"""The denied-flow log: packets the isolation chains and ClusterNetworkPolicy
Deny rules drop (rate-limited, sent to an NFLOG group by ``log`` rules)
written as JSON lines with the pods on both ends, the port, the protocol, the
direction, and the policies that isolate the pod or the Deny rule that
matched (found by walking the packet through the table in force)."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TextIO

from typing import Callable

import ipaddress

from enforcer.node.nflog import LoggedPacket, NflogReader
from enforcer.status import EnforcerStatus
from rules.naming import (
    INPUT_CHAIN,
    POLICY_TABLE,
    is_cluster_deny_chain,
    is_cluster_tier_chain,
    is_direction_comment,
    parse_deny_log_prefix,
    policy_of,
)
from rules.nft import Table
from rules.trace import L4_NAMES, Packet, Tracer

log = logging.getLogger("nftpolicy.denied")


def describe(packet: LoggedPacket, status: EnforcerStatus) -> dict | None:
    """The log line for one packet; None when the prefix is not one of ours."""
    parsed = parse_deny_log_prefix(packet.prefix)
    if parsed is None:
        return None
    direction, chain_name = parsed
    state = status.state
    owners = {str(ip): p.key for p in (state.pods if state else ()) if p.is_policy_target for ip in p.ips}
    owners.update({ip: r.key for r in status.records for ip in r.ips})
    table = status.tables.get(POLICY_TABLE)
    chain = table.chain(chain_name) if table else None
    policies = [
        policy_of(r.comment) for r in (chain.rules if chain else ()) if r.comment and is_direction_comment(r.comment, direction)
    ]
    rule = None
    if table is not None and is_cluster_deny_chain(chain_name):
        rule = _deny_rule(table, packet)
        policies = [rule.split(" ", 1)[0]] if rule else []
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "node": status.node,
        "direction": direction,
        "src": {"ip": packet.src, "pod": owners.get(packet.src)},
        "dst": {"ip": packet.dst, "pod": owners.get(packet.dst)},
        "protocol": packet.protocol,
        "port": packet.port,
        "policies": policies,
        **({"rule": rule} if rule else {}),
    }


def _deny_rule(table: Table, packet: LoggedPacket) -> str | None:
    """The ClusterNetworkPolicy Deny rule that dropped a packet: its comment,
    found by walking the packet through the forward path, or the input path
    (a pod's traffic to its own node)."""
    if packet.protocol not in L4_NAMES or packet.port is None:
        return None
    walked = Packet(ipaddress.ip_address(packet.src), ipaddress.ip_address(packet.dst), L4_NAMES[packet.protocol], packet.port)
    for base in ("forward", INPUT_CHAIN):
        if table.chain(base) is None:
            continue
        steps = Tracer(table).trace(walked, base=base).steps
        denying = [s.rule.comment for s in steps if is_cluster_tier_chain(s.chain)]
        if denying and is_cluster_deny_chain(steps[-1].chain):
            return denying[-1]
    return None


def run(group: int, status: Callable[[], EnforcerStatus], out: TextIO, stop: threading.Event) -> None:
    reader = NflogReader(group)
    try:
        while not stop.is_set():
            for packet in reader.packets(timeout=0.5):
                line = describe(packet, status())
                if line is not None:
                    out.write(json.dumps(line) + "\n")
                    out.flush()
    except OSError as e:
        log.error("denied-flow log on NFLOG group %d stopped: %s", group, e)
    finally:
        reader.close()
