"""The reference evaluator: is a flow allowed, and by which policy rules?

Written straight from the NetworkPolicy spec, for readability over speed: it
is the oracle every dataplane test compares against.

- A pod is isolated for a direction when some policy that selects it lists
  that direction in policyTypes. Directions are independent.
- A connection is allowed when the source's egress allows it and the
  destination's ingress allows it. A direction that is not isolated allows
  everything; an isolated one allows what any rule of any isolating policy
  allows (policies add up, they never subtract).
- A rule allows a flow when a peer matches (no peers: everyone) and a port
  matches (no ports: every port). Named ports resolve on the destination pod.
- Traffic between a pod and its own node is always allowed (kubelet probes);
  hostNetwork pods are never selected, so they are never isolated.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from rules.cluster_policy import Action, Tier, tier_decision
from rules.model import ClusterState, Direction, IPAddress, NetworkPolicy, Pod, PolicyPort, PolicyRule, L4Protocol
from rules.selection import peer_matches, policy_selects


@dataclass(frozen=True)
class RuleRef:
    """One rule of one policy: ``ns/name ingress[0]``."""

    policy: str
    direction: Direction
    index: int

    def __str__(self) -> str:
        return f"{self.policy} {self.direction.field}[{self.index}]"


@dataclass(frozen=True)
class DirectionVerdict:
    """The decision for one side of a flow: the source's egress or the destination's ingress."""

    direction: Direction
    pod: str
    isolated_by: tuple[str, ...]
    allowed_by: tuple[RuleRef, ...]

    @property
    def allowed(self) -> bool:
        return not self.isolated_by or bool(self.allowed_by)


@dataclass(frozen=True)
class Endpoint:
    ip: IPAddress
    pod: Pod | None = None

    def __str__(self) -> str:
        return f"{self.pod.key} ({self.ip})" if self.pod else str(self.ip)


@dataclass(frozen=True)
class FlowVerdict:
    allowed: bool
    src: Endpoint
    dst: Endpoint
    port: int
    protocol: L4Protocol
    reason: str
    egress: DirectionVerdict | None = None
    ingress: DirectionVerdict | None = None

    @property
    def deciding_rules(self) -> tuple[RuleRef, ...]:
        """The rules that allowed the flow (empty when it was denied or not policed)."""
        if not self.allowed:
            return ()
        return tuple(r for d in (self.egress, self.ingress) if d for r in d.allowed_by)


def _port_matches(spec: PolicyPort, port: int, protocol: L4Protocol, dst: Pod | None) -> bool:
    if spec.protocol is not protocol:
        return False
    if spec.port is None:
        return True
    if isinstance(spec.port, int):
        return spec.port <= port <= (spec.end_port or spec.port)
    # A named port means whatever number the destination pod gives that name;
    # a pod that policies cannot select (hostNetwork, terminated) names none.
    return dst is not None and dst.is_policy_target and dst.named_port(spec.port, protocol) == port


def rule_allows(
    state: ClusterState, policy: NetworkPolicy, rule: PolicyRule, peer: Endpoint, dst: Endpoint, port: int, protocol: L4Protocol
) -> bool:
    """Whether one rule allows a flow whose remote end is ``peer``."""
    peer_ok = not rule.peers or any(peer_matches(state, p, policy.namespace, peer.ip, peer.pod) for p in rule.peers)
    port_ok = not rule.ports or any(_port_matches(s, port, protocol, dst.pod) for s in rule.ports)
    return peer_ok and port_ok


def direction_verdict(
    state: ClusterState, direction: Direction, subject: Pod, peer: Endpoint, dst: Endpoint, port: int, protocol: L4Protocol
) -> DirectionVerdict:
    """The decision of the policies that select ``subject`` for one direction."""
    isolating = [p for p in state.policies if direction in p.policy_types and policy_selects(p, subject)]
    allowed_by = tuple(
        RuleRef(p.key, direction, i)
        for p in isolating
        for i, rule in enumerate(p.rules(direction))
        if rule_allows(state, p, rule, peer, dst, port, protocol)
    )
    return DirectionVerdict(direction, subject.key, tuple(p.key for p in isolating), allowed_by)


def _is_node_traffic(state: ClusterState, a: Endpoint, b: Endpoint) -> bool:
    """Whether ``a`` is the node that pod ``b`` runs on (or a hostNetwork pod there)."""
    if b.pod is None or b.pod.node is None:
        return False
    if a.pod is not None and a.pod.host_network:
        return a.pod.node == b.pod.node
    node = state.node(b.pod.node)
    return node is not None and a.ip in node.ips


def resolve(state: ClusterState, src: Pod | str | IPAddress, dst: Pod | str | IPAddress) -> tuple[Endpoint, Endpoint]:
    """Endpoints of a flow: addresses that belong to a pod become that pod,
    and a pod takes its address of the flow's IP family."""

    def as_ip(x: Pod | str | IPAddress) -> IPAddress | None:
        return None if isinstance(x, Pod) else ipaddress.ip_address(x)

    src_ip, dst_ip = as_ip(src), as_ip(dst)
    families = [ip.version for ip in (src_ip, dst_ip) if ip is not None]
    if len(set(families)) > 1:
        raise ValueError(f"{src} and {dst} are of different IP families")
    if not families:  # two pods: the first family both have, IPv4 first
        common = {ip.version for ip in src.ips} & {ip.version for ip in dst.ips}  # type: ignore[union-attr]
        if not common:
            raise ValueError(f"{src.key} and {dst.key} share no IP family")  # type: ignore[union-attr]
        families = [min(common)]

    def endpoint(x: Pod | str | IPAddress, ip: IPAddress | None) -> Endpoint:
        if ip is not None:
            return Endpoint(ip, state.pod_by_ip(ip))
        assert isinstance(x, Pod)
        chosen = next((i for i in x.ips if i.version == families[0]), None)
        if chosen is None:
            raise ValueError(f"pod {x.key} has no IPv{families[0]} address")
        return Endpoint(chosen, x)

    return endpoint(src, src_ip), endpoint(dst, dst_ip)


def verdict(
    state: ClusterState,
    src: Pod | str | IPAddress,
    dst: Pod | str | IPAddress,
    port: int,
    protocol: L4Protocol | str = L4Protocol.TCP,
) -> FlowVerdict:
    """Is a new connection from ``src`` to ``dst`` on ``port``/``protocol`` allowed?"""
    protocol = L4Protocol(protocol)
    s, d = resolve(state, src, dst)

    def decided(allowed: bool, reason: str, egress=None, ingress=None) -> FlowVerdict:
        return FlowVerdict(allowed, s, d, port, protocol, reason, egress, ingress)

    if s.pod is not None and d.pod is not None and s.pod.key == d.pod.key:
        return decided(True, "a pod's traffic to itself never leaves it")
    if _is_node_traffic(state, s, d) or _is_node_traffic(state, d, s):
        return decided(True, "traffic between a pod and its own node is always allowed")

    egress = (
        direction_verdict(state, Direction.EGRESS, s.pod, d, d, port, protocol)
        if s.pod is not None and s.pod.is_policy_target
        else None
    )
    ingress = (
        direction_verdict(state, Direction.INGRESS, d.pod, s, d, port, protocol)
        if d.pod is not None and d.pod.is_policy_target
        else None
    )
    denied = [v for v in (egress, ingress) if v is not None and not v.allowed]
    if denied:
        reason = "; ".join(
            f"{v.direction.value.lower()} of {v.pod} is isolated by {', '.join(v.isolated_by)} and no rule allows it"
            for v in denied
        )
        return decided(False, reason, egress, ingress)
    isolated = [v for v in (egress, ingress) if v is not None and v.isolated_by]
    reason = (
        "allowed by " + ", ".join(str(r) for v in isolated for r in v.allowed_by) if isolated else "no policy isolates either end"
    )
    return decided(True, reason, egress, ingress)


# --- with ClusterNetworkPolicy tiers (rules.cluster_policy) ---


@dataclass(frozen=True)
class TieredDecision:
    """One direction's decision across the tiers, and what made it."""

    direction: Direction
    pod: str
    allowed: bool
    tier: str  # "Admin", "NetworkPolicy", "Baseline" or "default"
    decided_by: str  # the deciding rule, or why none did
    passed: tuple[str, ...] = ()  # Pass rules the connection went through on the way


def tiered_direction(
    state: ClusterState,
    direction: Direction,
    subject: Pod,
    peer: Endpoint,
    dst: Endpoint,
    port: int,
    protocol: L4Protocol,
    to_own_node: bool = False,
) -> TieredDecision:
    """Admin tier, then NetworkPolicy, then Baseline tier, then allow (``rules.cluster_policy``).
    ``to_own_node``: egress to the pod's own node, which NetworkPolicy always allows."""
    subject_labels = state.namespace_labels(subject.namespace)
    peer_labels = state.namespace_labels(peer.pod.namespace) if peer.pod is not None else {}
    peer_node = state.node_by_ip(peer.ip) if direction is Direction.EGRESS else None
    passed: list[str] = []

    def decided(allowed: bool, tier: str, by: str) -> TieredDecision:
        return TieredDecision(direction, subject.key, allowed, tier, by, tuple(passed))

    def cluster_tier(tier: Tier) -> TieredDecision | None:
        """The tier's decision, or None to go on (no rule matched, or a Pass)."""
        rule = tier_decision(
            state.cluster_policies,
            tier,
            direction,
            subject,
            subject_labels,
            peer.ip,
            peer.pod,
            peer_labels,
            peer_node,
            port,
            protocol,
        )
        if rule is None:
            return None
        if rule.action is Action.PASS:
            passed.append(str(rule))
            return None
        return decided(rule.action is Action.ACCEPT, tier.value, f"{rule} {rule.action.value}")

    admin = cluster_tier(Tier.ADMIN)
    if admin is not None:
        return admin
    v = direction_verdict(state, direction, subject, peer, dst, port, protocol)
    if v.isolated_by:
        if to_own_node:
            return decided(True, "NetworkPolicy", "NetworkPolicy always allows a pod's traffic to its own node")
        if v.allowed_by:
            return decided(True, "NetworkPolicy", ", ".join(f"NetworkPolicy {r}" for r in v.allowed_by))
        return decided(False, "NetworkPolicy", f"isolated by NetworkPolicy {', '.join(v.isolated_by)}; no rule allows it")
    baseline = cluster_tier(Tier.BASELINE)
    return baseline or decided(True, "default", "no rule of any tier matched: allowed by default")


def tiered_verdict(
    state: ClusterState,
    src: Pod | str | IPAddress,
    dst: Pod | str | IPAddress,
    port: int,
    protocol: L4Protocol | str = L4Protocol.TCP,
) -> tuple[bool, TieredDecision | None, TieredDecision | None]:
    """(allowed, the source's egress decision, the destination's ingress decision),
    with ``state``'s NetworkPolicies and ClusterNetworkPolicies: a connection needs both.
    A pod's traffic to itself is always allowed, and so is a node's to its own
    pods (ClusterNetworkPolicy peers never name nodes for ingress); a pod's
    traffic to its own node meets only its egress tiers."""
    protocol = L4Protocol(protocol)
    s, d = resolve(state, src, dst)
    if s.pod is not None and d.pod is not None and s.pod.key == d.pod.key:
        return True, None, None
    if _is_node_traffic(state, s, d):
        return True, None, None
    if _is_node_traffic(state, d, s):
        if s.pod is None or not s.pod.is_policy_target:
            return True, None, None
        egress = tiered_direction(state, Direction.EGRESS, s.pod, d, d, port, protocol, to_own_node=True)
        return egress.allowed, egress, None
    egress = (
        tiered_direction(state, Direction.EGRESS, s.pod, d, d, port, protocol)
        if s.pod is not None and s.pod.is_policy_target
        else None
    )
    ingress = (
        tiered_direction(state, Direction.INGRESS, d.pod, s, d, port, protocol)
        if d.pod is not None and d.pod.is_policy_target
        else None
    )
    return all(v is None or v.allowed for v in (egress, ingress)), egress, ingress
