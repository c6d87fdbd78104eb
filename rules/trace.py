"""Walk a packet through a rendered table, as the kernel would.

A small interpreter for the subset of nftables that ``rules.translate``
emits. Tests use it to hold every rendered ruleset to the reference
evaluator without a kernel; auditors get the rule that decides a flow.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from rules.model import IPAddress
from rules.nft import AnonSet, Concat, Ct, Flags, Match, Meta, Payload, Prefix, Range, Rule, SetRef, Table, Verdict, VMap

L4_NAMES = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


@dataclass(frozen=True)
class Packet:
    saddr: IPAddress
    daddr: IPAddress
    l4proto: str  # tcp, udp, sctp, ipv6-icmp
    dport: int | None = None
    ct_state: str = "new"
    icmpv6_type: str | None = None

    @property
    def family(self) -> int:
        return self.saddr.version


@dataclass(frozen=True)
class Step:
    chain: str
    rule: Rule


@dataclass(frozen=True)
class TraceResult:
    verdict: str  # accept or drop
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def deciding(self) -> Step | None:
        """The rule whose verdict ended the walk (None: the base chain's policy)."""
        return self.steps[-1] if self.steps else None


def _field(p: Packet, expr: Any) -> Any:
    if isinstance(expr, Payload):
        if expr.protocol in ("ip", "ip6"):
            if (expr.protocol == "ip") != (p.family == 4):
                return None
            return p.saddr if expr.field == "saddr" else p.daddr
        if expr.protocol == "th" or expr.protocol == p.l4proto:
            if expr.protocol == "icmpv6":
                return p.icmpv6_type
            return p.dport if expr.field == "dport" else None
        return None
    if isinstance(expr, Meta) and expr.key == "l4proto":
        return p.l4proto
    if isinstance(expr, Ct) and expr.key == "state":
        return p.ct_state
    if isinstance(expr, Concat):
        values = tuple(_field(p, e) for e in expr.items)
        return None if any(v is None for v in values) else values
    raise ValueError(f"trace: unsupported expression {expr!r}")


def _element_matches(element: Any, value: Any) -> bool:
    if isinstance(element, Concat):
        return (
            isinstance(value, tuple)
            and len(value) == len(element.items)
            and all(_element_matches(e, v) for e, v in zip(element.items, value))
        )
    if isinstance(element, Range):
        return _scalar(element.low, value) <= value <= _scalar(element.high, value)
    if isinstance(element, Prefix):
        return isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)) and value in ipaddress.ip_network(
            f"{element.addr}/{element.length}"
        )
    return _scalar(element, value) == value


def _scalar(element: Any, like: Any) -> Any:
    """An element coerced to the type of the packet value it is compared with."""
    if isinstance(like, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        try:
            address = ipaddress.ip_address(element)
        except ValueError:
            return None
        return address if address.version == like.version else None
    return element


class Tracer:
    def __init__(self, table: Table) -> None:
        self.table = table

    def trace(self, packet: Packet, base: str = "forward") -> TraceResult:
        steps: list[Step] = []
        final = self._run(base, packet, steps)
        chain = self.table.chain(base)
        policy = chain.hook.policy if chain and chain.hook else "accept"
        return TraceResult(final or policy, tuple(steps))

    def _lookup(self, name: str) -> tuple:
        s = self.table.set(name)
        if s is None:
            raise ValueError(f"trace: no set {name}")
        return s.elements

    def _matches(self, packet: Packet, m: Match) -> bool:
        value = _field(packet, m.left)
        if value is None:
            return False
        if isinstance(m.right, SetRef):
            hit = any(_element_matches(e, value) for e in self._lookup(m.right.name))
        elif isinstance(m.right, AnonSet):
            hit = any(_element_matches(e, value) for e in m.right.items)
        elif isinstance(m.right, Flags):
            hit = value in m.right.values
        else:
            hit = _element_matches(m.right, value)
        return hit if m.op in ("==", "in") else not hit

    def _run(self, chain_name: str, packet: Packet, steps: list[Step]) -> str | None:
        """The final verdict reached from this chain, or None if it returns."""
        chain = self.table.chain(chain_name)
        if chain is None:
            raise ValueError(f"trace: no chain {chain_name}")
        for rule in chain.rules:
            verdict: Verdict | None = None
            for stmt in rule.statements:
                if isinstance(stmt, Match):
                    if not self._matches(packet, stmt):
                        break
                elif isinstance(stmt, VMap):
                    value = _field(packet, stmt.key)
                    entry = next((v for k, v in self._lookup(stmt.map) if value is not None and _element_matches(k, value)), None)
                    if entry is None:
                        break
                    verdict = entry
                elif isinstance(stmt, Verdict):
                    verdict = stmt
            else:
                if verdict is None:
                    continue
                steps.append(Step(chain_name, rule))
                if verdict.kind in ("accept", "drop"):
                    return verdict.kind
                if verdict.kind == "return":
                    return None
                if verdict.kind == "goto":
                    return self._run(verdict.target, packet, steps)
                if verdict.kind == "jump":
                    outcome = self._run(verdict.target, packet, steps)
                    if outcome is not None:
                        return outcome
        return None
