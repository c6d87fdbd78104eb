"""The policy IR: for each of a node's pods and each direction, the decisions
that apply, in order, each tagged with the policy rule it comes from.

Selection decides *who* and *what*: which local pods a policy isolates and
what each of its rules allows. A backend decides *how*: ``rules.translate``
renders nftables from this IR alone and never reads a NetworkPolicy. Nothing
here is an nft type.

For one pod and direction the IR is an ordered tuple of tiers, which a packet
meets in turn (``node_policy_ir`` makes it from both producers):

- ``ClusterTier`` Admin (ClusterNetworkPolicy, network-policy-api): the
  policies whose subject selects the pod, in priority order, their rules in
  order; the first rule that matches decides with Accept or Deny, or with Pass
  leaves the tier. No match: on to the next tier.
- ``Isolation`` (NetworkPolicy): the pod is isolated when a policy selects it
  for that direction, and then a packet is allowed when any rule of those
  policies matches it, and dropped otherwise.
- ``ClusterTier`` Baseline, as Admin, met only where NetworkPolicy does not
  isolate the pod.

After the last tier, the packet is allowed. A pod and direction with no tier
is not policed.

Peers and named ports are references (``SelectorScope``, ``IPBlock``,
``NodeScope``, ``NamedPort``), not addresses: a pod coming or going changes whom they name
(``Members``, what a backend fills its sets with), not the decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

from rules.model import (
    ClusterState,
    Direction,
    IPAddress,
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    Peer,
    Pod,
    PolicyRule,
    NamedPort,
    PortRange,
)
from rules.cluster_policy import Action, ClusterNetworkPolicy, ClusterPeer, ClusterRule
from rules.cluster_policy import Tier as ClusterTierName
from rules.selection import policy_selects


@dataclass(frozen=True)
class SelectorScope:
    """Whom a selector peer names, independent of the policy it appears in.

    A podSelector alone is scoped to the policy's namespace; with a
    namespaceSelector it is scoped to the matching namespaces. Equal scopes
    name the same pods, so a backend can share one set across policies (the
    nft set's name hashes this class's repr: renaming the class or its fields
    renames every peer set).
    """

    namespace: str | None
    namespace_selector: LabelSelector | None
    pod_selector: LabelSelector | None

    @classmethod
    def of(cls, peer: Peer, policy_namespace: str) -> SelectorScope:
        if peer.namespace_selector is None:
            return cls(policy_namespace, None, peer.pod_selector)
        return cls(None, peer.namespace_selector, peer.pod_selector)

    def namespaces(self, state: ClusterState) -> list[str]:
        """The namespaces whose pods this scope can name."""
        if self.namespace is not None:
            return [self.namespace]
        assert self.namespace_selector is not None
        return [n for n in state.namespace_names() if self.namespace_selector.matches(state.namespace_labels(n))]

    def describe(self) -> str:
        return Peer(self.pod_selector, self.namespace_selector).describe(self.namespace or "")


@dataclass(frozen=True)
class NodeScope:
    """The addresses of the nodes a label selector selects (a ClusterNetworkPolicy ``nodes`` peer)."""

    selector: LabelSelector

    def describe(self) -> str:
        return f"nodes {self.selector.describe()}"


PeerRef = SelectorScope | IPBlock | NodeScope  # pods by selector, or addresses


def peer_ref(peer: Peer, policy_namespace: str) -> PeerRef:
    return peer.ip_block if peer.ip_block is not None else SelectorScope.of(peer, policy_namespace)


@dataclass(frozen=True)
class RuleSource:
    """The policy rule a match implements: ``NS/NAME DIR[index]``, its peer
    ``.from[peer]``/``.to[peer]`` (None: the rule lists no peers) and the named
    port it matches, if any. A backend shows it beside what it builds (the nft
    rule comment: ``rules.naming.rule_comment``)."""

    policy: str
    direction: Direction
    index: int
    peer: int | None = None
    named_port: str | None = None
    tier: str | None = None  # ClusterNetworkPolicy: ``Admin/PRIORITY`` or ``Baseline/PRIORITY``
    name: str = ""  # ClusterNetworkPolicy: the rule's name (may be empty)


@dataclass(frozen=True)
class RuleMatch:
    """One way a rule matches a packet: its remote end is ``peer`` (None: any
    address) and its destination port is one of ``ports`` (None: any port;
    numeric ranges; or one named port)."""

    peer: PeerRef | None
    ports: tuple[PortRange, ...] | NamedPort | None
    source: RuleSource


@dataclass(frozen=True)
class PolicyRules:
    """One NetworkPolicy's rules for one direction: a packet matching any of
    ``matches`` is allowed. Equal values allow the same packets, so a backend
    may reuse what it built for an equal one."""

    policy: str
    direction: Direction
    matches: tuple[RuleMatch, ...]


@dataclass(frozen=True)
class Isolation:
    """NetworkPolicy's tier for a pod and direction: the policies that select
    it (never none, in (namespace, name) order). A packet that no match of any
    of them allows is dropped; policies only add up."""

    direction: Direction
    policies: tuple[PolicyRules, ...]


@dataclass(frozen=True)
class TierRule:
    """One ClusterNetworkPolicy rule: a packet that any of ``matches`` matches gets ``action``."""

    action: Action
    matches: tuple[RuleMatch, ...]


@dataclass(frozen=True)
class TierPolicy:
    """One ClusterNetworkPolicy's rules for one direction, in order: the first that matches decides.
    Equal values decide alike, so a backend may reuse what it built for an equal one."""

    policy: str  # cnp/NAME
    tier: ClusterTierName
    priority: int
    direction: Direction
    rules: tuple[TierRule, ...]


@dataclass(frozen=True)
class ClusterTier:
    """ClusterNetworkPolicy's Admin or Baseline tier for a pod and direction:
    the policies whose subject selects it and that have rules for the
    direction, in evaluation order (priority, then name). It never isolates:
    a packet no rule matches goes on to the next tier."""

    tier: ClusterTierName
    direction: Direction
    policies: tuple[TierPolicy, ...]


Tier = ClusterTier | Isolation


@dataclass(frozen=True)
class PodPolicy:
    """What applies to one local pod, per direction: its tiers in order (none: not policed)."""

    pod: str  # NS/NAME
    ips: tuple[IPAddress, ...]
    ingress: tuple[Tier, ...] = ()
    egress: tuple[Tier, ...] = ()

    def tiers(self, direction: Direction) -> tuple[Tier, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress


@dataclass(frozen=True)
class NodePolicy:
    """What one node enforces: every pod it polices, in (namespace, name) order.
    Pods with the same tiers share the same tier objects."""

    node: str
    pods: tuple[PodPolicy, ...]


# --- NetworkPolicy, the first producer ----------------------------------------


def local_pods(state: ClusterState, node: str) -> list[Pod]:
    """The pods this node enforces policy for: its own, with addresses, that policies can select."""
    return [p for p in state.pods_on(node) if p.is_policy_target and p.ips]


def isolating_policies(state: ClusterState, pod: Pod, direction: Direction) -> tuple[NetworkPolicy, ...]:
    """The policies that select a pod for a direction, in (namespace, name) order."""
    return tuple(p for p in state.policies_in(pod.namespace) if direction in p.policy_types and policy_selects(p, pod))


def node_policy_ir(state: ClusterState, node: str, memo: IRMemo | None = None) -> NodePolicy:
    """The tiers of every pod ``node`` polices. Each distinct combination of
    policies is one object; a ``memo`` kept across calls reuses the rules of
    unchanged policies."""
    memo = memo or IRMemo()
    combinations: dict[tuple, tuple[Tier, ...]] = {}

    def tiers(pod: Pod, direction: Direction) -> tuple[Tier, ...]:
        admin, baseline = (cluster_policies_for(state, pod, direction, tier) for tier in ClusterTierName)
        isolating = isolating_policies(state, pod, direction)
        key = (direction, *(tuple(p.key for p in ps) for ps in (admin, isolating, baseline)))
        if key not in combinations:
            combinations[key] = tuple(
                tier
                for tier in (
                    _cluster_tier(memo, ClusterTierName.ADMIN, direction, admin),
                    Isolation(direction, tuple(memo.rules(p, direction) for p in isolating)) if isolating else None,
                    _cluster_tier(memo, ClusterTierName.BASELINE, direction, baseline),
                )
                if tier is not None
            )
        return combinations[key]

    pods = tuple(
        PodPolicy(pod.key, pod.ips, tiers(pod, Direction.INGRESS), tiers(pod, Direction.EGRESS))
        for pod in local_pods(state, node)
    )
    memo.finish()
    return NodePolicy(node, pods)


def cluster_policies_for(
    state: ClusterState, pod: Pod, direction: Direction, tier: ClusterTierName
) -> tuple[ClusterNetworkPolicy, ...]:
    """The ClusterNetworkPolicies of a tier whose subject selects a pod and that
    have rules for a direction, in evaluation order."""
    labels = state.namespace_labels(pod.namespace)
    return tuple(p for p in state.cluster_policies if p.tier is tier and p.rules(direction) and p.subject.matches(pod, labels))


def _cluster_tier(
    memo: IRMemo, tier: ClusterTierName, direction: Direction, policies: tuple[ClusterNetworkPolicy, ...]
) -> ClusterTier | None:
    return ClusterTier(tier, direction, tuple(memo.rules(p, direction) for p in policies)) if policies else None


class IRMemo:
    """The policy rules the previous IR made, for the next to reuse: a policy
    that compares equal yields the very same ``PolicyRules``, so a render
    costs what changed, and a backend's own memo recognises it at a glance.
    Keeps what the last IR used."""

    def __init__(self) -> None:
        self._rules: dict[tuple, tuple] = {}
        self._used: dict[tuple, tuple] = {}

    def rules(self, policy: NetworkPolicy | ClusterNetworkPolicy, direction: Direction) -> PolicyRules | TierPolicy:
        """``PolicyRules`` of a NetworkPolicy, ``TierPolicy`` of a ClusterNetworkPolicy."""
        key = (type(policy), policy.key, direction)
        hit = self._used.get(key) or self._rules.get(key)  # used: one IR may ask for a policy more than once
        if hit is None or hit[0] != policy:
            made = policy_rules(policy, direction) if isinstance(policy, NetworkPolicy) else tier_policy(policy, direction)
            hit = (policy, made)
        self._used[key] = hit
        return hit[1]

    def finish(self) -> None:
        self._rules, self._used = self._used, {}


def policy_rules(policy: NetworkPolicy, direction: Direction) -> PolicyRules:
    matches = (m for i, rule in enumerate(policy.rules(direction)) for m in _rule_matches(policy, direction, i, rule))
    return PolicyRules(policy.key, direction, tuple(matches))


def _rule_matches(policy: NetworkPolicy, direction: Direction, index: int, rule: PolicyRule) -> Iterator[RuleMatch]:
    """A rule allows a packet when a peer and a port match (none listed: any).
    Its numeric ports match together; each named port matches on its own, as
    its number depends on the destination pod."""
    ports: list[tuple[PortRange, ...] | NamedPort | None]
    if not rule.ports:
        ports = [None]
    else:
        numeric = tuple(PortRange.of(p) for p in rule.ports if not isinstance(p.port, str))
        ports = [numeric] if numeric else []
        ports += sorted({NamedPort(p.protocol, p.port) for p in rule.ports if isinstance(p.port, str)})
    peers: list[tuple[int | None, PeerRef | None]] = [(None, None)]
    if rule.peers:
        peers = [(j, peer_ref(peer, policy.namespace)) for j, peer in enumerate(rule.peers)]
    for j, peer in peers:
        for port in ports:
            named = port.name if isinstance(port, NamedPort) else None
            yield RuleMatch(peer, port, RuleSource(policy.key, direction, index, j, named))


def tier_policy(policy: ClusterNetworkPolicy, direction: Direction) -> TierPolicy:
    rules = tuple(
        TierRule(rule.action, tuple(_cluster_rule_matches(policy, direction, i, rule)))
        for i, rule in enumerate(policy.rules(direction))
    )
    return TierPolicy(policy.key, policy.tier, policy.priority, direction, rules)


def _cluster_rule_matches(
    policy: ClusterNetworkPolicy, direction: Direction, index: int, rule: ClusterRule
) -> Iterator[RuleMatch]:
    """A rule matches a packet when a peer and a port match (no ports listed: any).
    Numeric ports match together; a named port matches on its own."""
    numeric = tuple(p for p in rule.ports if isinstance(p, PortRange))
    named = sorted(p for p in rule.ports if isinstance(p, NamedPort))
    ports: list[tuple[PortRange, ...] | NamedPort | None] = [None] if not rule.ports else ([numeric] if numeric else []) + named
    tier = f"{policy.tier.value}/{policy.priority}"
    for j, peer in enumerate(rule.peers):
        for ref in _cluster_peer_refs(peer):
            for port in ports:
                named_port = port.name if isinstance(port, NamedPort) else None
                yield RuleMatch(ref, port, RuleSource(policy.key, direction, index, j, named_port, tier, rule.name))


def _cluster_peer_refs(peer: ClusterPeer) -> list[PeerRef]:
    """Pods of the selected namespaces (of all: no namespace selector), nodes, or each network as an ipBlock."""
    if peer.pods is not None:
        pods = peer.pods.pods if peer.pods.pods != LabelSelector() else None
        return [SelectorScope(None, peer.pods.namespaces or LabelSelector(), pods)]
    if peer.nodes is not None:
        return [NodeScope(peer.nodes)]
    return [IPBlock(network) for network in peer.networks]


# --- whom references name ------------------------------------------------------


class Contents(NamedTuple):
    """The pods a reference names, computed only when asked, and a stamp:
    equal stamps mean equal pods, so a backend may reuse what it built from
    them without looking."""

    stamp: tuple
    pods: Callable[[], tuple[Pod, ...]]


class Members:
    """Whom the IR's references name in one state: what a backend fills its
    sets with. One per render: namespace selectors repeat across policies, and
    each is matched once."""

    def __init__(self, state: ClusterState, node: str) -> None:
        self.state = state
        self.node = node
        self._namespaces: dict[SelectorScope, list[str]] = {}

    def of_scope(self, scope: SelectorScope) -> Contents:
        """The policy-target pods a selector peer names; stamped with the pod
        versions of the namespaces it draws from."""
        key = SelectorScope(scope.namespace, scope.namespace_selector, None)
        if key not in self._namespaces:
            self._namespaces[key] = scope.namespaces(self.state)
        namespaces = self._namespaces[key]
        stamp = tuple((ns, self.state.pods_version(ns)) for ns in namespaces)
        return Contents(
            stamp, lambda: tuple(pod for ns in namespaces for pod in self.state.targets_selected(ns, scope.pod_selector))
        )

    def of_nodes(self, scope: NodeScope) -> Contents:
        """The nodes a ``nodes`` peer selects; stamped with every node (few, and rarely changed)."""
        nodes = self.state.nodes
        return Contents(nodes, lambda: tuple(n for n in nodes if scope.selector.matches(n.label_map)))

    def giving(self, port: NamedPort, local: bool) -> Contents:
        """The policy-target pods that give a named port a number: this node's
        (``local``; so few that they are their own stamp) or the cluster's."""
        if local:
            pods = tuple(
                p for p in self.state.pods_on(self.node) if p.is_policy_target and p.named_port(port.name, port.protocol)
            )
            return Contents(pods, lambda: pods)
        return Contents((self.state.pods_version_all(),), lambda: tuple(self.state.targets_with_port_name(port.name)))
