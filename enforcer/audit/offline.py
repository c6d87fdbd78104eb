"""The offline commands: render a node's ruleset and explain a flow, from
manifest files. No kernel, no API: what ``render`` prints is what the enforcer
would program for that node."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from rules.evaluate import DirectionVerdict, Endpoint, FlowVerdict, TieredDecision, tiered_verdict, verdict
from enforcer.sources.manifests import load_state
from rules.load import InvalidObject
from rules.model import ClusterState, IPAddress, Pod, L4Protocol
from rules.nft import render_json, render_text
from rules.translate import desired_ruleset


class UsageError(ValueError):
    """An argument that names nothing in the input, or cannot be parsed."""


def render(paths: Iterable[str | Path], node: str, fmt: str) -> str:
    state = load_state(paths)
    ruleset = desired_ruleset(state, node)
    if fmt == "json":
        return json.dumps(render_json(ruleset), indent=2) + "\n"
    return render_text(ruleset)


def parse_endpoint(state: ClusterState, text: str) -> Pod | IPAddress:
    """``NS/POD`` names a pod in the input; anything else must be an IP address."""
    if "/" in text and not _looks_like_ip(text):
        pod = state.pod(text)
        if pod is None:
            raise UsageError(f"{text}: no such pod in the input")
        if not pod.ips:
            raise UsageError(f"{text}: pod has no IP address (status.podIPs is empty)")
        return pod
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise UsageError(f"{text}: neither NS/POD nor an IP address") from None


def _looks_like_ip(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
        return True
    except ValueError:
        return False


def parse_port(text: str) -> tuple[int, L4Protocol]:
    """``N`` or ``N/PROTO`` (TCP, UDP or SCTP; any case)."""
    number, _, proto = text.partition("/")
    try:
        port = int(number)
        protocol = L4Protocol(proto.upper() or "TCP")
    except ValueError:
        raise UsageError(f"--port {text}: expected N or N/PROTO with PROTO one of TCP, UDP, SCTP") from None
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {text}: port must be between 1 and 65535")
    return port, protocol


@dataclass(frozen=True)
class Explanation:
    """NetworkPolicy's verdict, and, when ClusterNetworkPolicies exist, each
    direction's decision across the tiers, which then decides."""

    verdict: FlowVerdict
    tiers: tuple[TieredDecision | None, TieredDecision | None] | None = None  # (egress, ingress)

    @property
    def allowed(self) -> bool:
        if self.tiers is None:
            return self.verdict.allowed
        return all(d is None or d.allowed for d in self.tiers)

    def as_json(self) -> dict[str, Any]:
        v = self.verdict
        tiers = {}
        if self.tiers is not None:
            tiers = {
                "tiers": {label: _tiered_json(d) for label, d in zip(("egress", "ingress"), self.tiers)},
                "deciding_rules": [d.decided_by for d in self.tiers if d is not None and d.tier in ("Admin", "Baseline")]
                + [str(r) for r in v.deciding_rules],
            }
        return {
            "allowed": self.allowed,
            "src": _endpoint_json(v.src),
            "dst": _endpoint_json(v.dst),
            "port": v.port,
            "protocol": v.protocol.value,
            "reason": v.reason,
            "deciding_rules": [str(r) for r in v.deciding_rules],
            "denied_by": [p for d in (v.egress, v.ingress) if d and not d.allowed for p in d.isolated_by],
            "egress": _direction_json(v.egress),
            "ingress": _direction_json(v.ingress),
            **tiers,
        }

    def as_text(self) -> str:
        v = self.verdict
        head = f"{'ALLOWED' if self.allowed else 'DENIED'}  {v.src} -> {v.dst} {v.protocol.value}/{v.port}"
        if self.tiers is not None:
            lines = [head]
            for label, d in zip(("egress", "ingress"), self.tiers):
                if d is not None:
                    passed = f" (after Pass: {', '.join(d.passed)})" if d.passed else ""
                    lines.append(f"  {label} of {d.pod}: {d.tier}: {d.decided_by}{passed}")
            return "\n".join(lines) + "\n"
        lines = [head, f"  {v.reason}"]
        for label, d in (("egress", v.egress), ("ingress", v.ingress)):
            if d is None:
                continue
            if not d.isolated_by:
                lines.append(f"  {label} of {d.pod}: not isolated")
                continue
            allowed = ", ".join(map(str, d.allowed_by)) or "no rule"
            lines.append(f"  {label} of {d.pod}: isolated by {', '.join(d.isolated_by)}; allowed by {allowed}")
        return "\n".join(lines) + "\n"


def _endpoint_json(e: Endpoint) -> dict[str, Any]:
    return {"ip": str(e.ip), "pod": e.pod.key if e.pod else None}


def _direction_json(d: DirectionVerdict | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {
        "pod": d.pod,
        "allowed": d.allowed,
        "isolated_by": list(d.isolated_by),
        "allowed_by": [str(r) for r in d.allowed_by],
    }


def _tiered_json(d: TieredDecision | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"pod": d.pod, "allowed": d.allowed, "tier": d.tier, "decided_by": d.decided_by, "passed": list(d.passed)}


def explain(paths: Iterable[str | Path], src: str, dst: str, port: str) -> Explanation:
    state = load_state(paths)
    number, protocol = parse_port(port)
    try:
        s, d = parse_endpoint(state, src), parse_endpoint(state, dst)
        tiers = None
        if state.cluster_policies:
            _, egress, ingress = tiered_verdict(state, s, d, number, protocol)
            tiers = (egress, ingress)
        return Explanation(verdict(state, s, d, number, protocol), tiers)
    except ValueError as e:
        if isinstance(e, (UsageError, InvalidObject)):
            raise
        raise UsageError(str(e)) from None
