"""The denied-flow log: packets the isolation chains drop (rate-limited, sent
to an NFLOG group by ``log`` rules) written as JSON lines with the pods on
both ends, the port, the protocol, the direction and the policies that
isolate the pod."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TextIO

from typing import Callable

from enforcer.node.nflog import LoggedPacket, NflogReader
from enforcer.status import EnforcerStatus
from rules.naming import POLICY_TABLE, is_direction_comment, parse_deny_log_prefix, policy_of

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
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "node": status.node,
        "direction": direction,
        "src": {"ip": packet.src, "pod": owners.get(packet.src)},
        "dst": {"ip": packet.dst, "pod": owners.get(packet.dst)},
        "protocol": packet.protocol,
        "port": packet.port,
        "policies": policies,
    }


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
