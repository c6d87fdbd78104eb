"""Cluster state to the nftables ruleset one node needs: ``desired_ruleset()``.

The ``inet nftpolicy`` table: local pod IPs map to one isolation chain per
distinct set of isolating policies, which jumps to each policy's chain and
then drops; peers, ipBlocks and named ports are sets (names and comments:
``rules.naming``).

Per-packet cost: established traffic stops at the first rule; a new
connection costs two hash lookups plus the rules of the policies that select
its own endpoints, whatever the number of pods or policies in the cluster.
Size: chains grow with local pods' distinct policy sets and policies; sets
with distinct selectors; elements with the pods those selectors name.
"""
from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple

from rules.model import (
    ClusterState,
    Direction,
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    Peer,
    Pod,
    PodInterface,
    PolicyPort,
    PolicyRule,
    Protocol,
)
from rules.nft import (
    ACCEPT,
    DROP,
    AnonSet,
    Chain,
    Concat,
    Counter,
    Ct,
    Flags,
    Hook,
    Limit,
    Log,
    Match,
    Meta,
    Payload,
    Prefix,
    Range,
    Rule,
    Ruleset,
    Set,
    SetRef,
    Table,
    VMap,
    goto,
    jump,
)
from rules.bridge import bridge_table, with_interfaces
from rules.naming import (DISPATCH_CHAIN, FORWARD_CHAIN, POLICY_TABLE, deny_log_prefix, dispatch_map_name, ip_block_set_name,
                          isolate_chain_name, named_port_set_name, peer_set_name, policy_chain_name, policy_comment, rule_comment)
from rules.selection import policy_selects

FAMILIES = (4, 6)
FORWARD_PRIORITY = 0  # filter: after kube-proxy's DNAT, so Service traffic is policed on the pod address
DENY_LOG_RATE, DENY_LOG_BURST = 10, 20  # denied packets logged per second per isolation chain

ND_TYPES = ("nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert")



def _addr_payload(family: int, field: str) -> Payload:
    return Payload("ip" if family == 4 else "ip6", field)


def _addr_type(family: int) -> str:
    return "ipv4_addr" if family == 4 else "ipv6_addr"


@dataclass(frozen=True)
class SelectorScope:
    """Whom a selector peer names, independent of the policy it appears in.

    A podSelector alone is scoped to the policy's namespace; with a
    namespaceSelector it is scoped to the matching namespaces. Equal scopes
    share one set across policies.
    """

    namespace: str | None
    namespace_selector: LabelSelector | None
    pod_selector: LabelSelector | None

    @classmethod
    def of(cls, peer: Peer, policy_namespace: str) -> SelectorScope:
        if peer.namespace_selector is None:
            return cls(policy_namespace, None, peer.pod_selector)
        return cls(None, peer.namespace_selector, peer.pod_selector)

    def as_peer(self) -> tuple[Peer, str]:
        return Peer(self.pod_selector, self.namespace_selector), self.namespace or ""

    def namespaces(self, state: ClusterState) -> list[str]:
        """The namespaces whose pods this scope can name."""
        if self.namespace is not None:
            return [self.namespace]
        assert self.namespace_selector is not None
        return [n for n in state.namespace_names() if self.namespace_selector.matches(state.namespace_labels(n))]

    def describe(self) -> str:
        peer, ns = self.as_peer()
        return peer.describe(ns)

    @functools.lru_cache(maxsize=1 << 16)
    def set_name(self, family: int) -> str:
        return peer_set_name(repr(self), family)


@functools.lru_cache(maxsize=4096)
def ip_block_elements(block: IPBlock) -> tuple:
    """cidr minus every except, as the fewest disjoint prefixes: one sweep over
    the sorted excepts, so 10,000 of them cost milliseconds."""
    cidr = block.cidr
    low, high = int(cidr.network_address), int(cidr.broadcast_address)
    holes = sorted(
        (max(low, int(e.network_address)), min(high, int(e.broadcast_address)))
        for e in block.except_
        if e.version == cidr.version and e.overlaps(cidr)
    )
    ranges, start = [], low
    for first, last in holes:
        if first > start:
            ranges.append((start, first - 1))
        start = max(start, last + 1)
    if start <= high:
        ranges.append((start, high))
    address = type(cidr.network_address)
    nets = (n for first, last in ranges for n in ipaddress.summarize_address_range(address(first), address(last)))
    return tuple(
        str(n.network_address) if n.prefixlen == n.max_prefixlen else Prefix(str(n.network_address), n.prefixlen)
        for n in nets
    )


def _sorted_ips(ips: Iterable) -> tuple[str, ...]:
    return tuple(str(ip) for ip in sorted(set(ips), key=lambda ip: (ip.version, int(ip))))


class _MemoSet(NamedTuple):
    versions: tuple  # the pod-set versions it was built at
    inputs: tuple  # the pods it names
    set: Set


class RenderMemo:
    """What the previous render built, for the next to reuse; the enforcer
    keeps one across syncs, so a render costs what changed since the last one.

    - A named set is reused without looking at a pod when the versions of the
      namespaces it draws from are the ones it was built at; otherwise when the
      pods it names compare equal (after a relist, say).
    - A policy's chain is reused when the policy compares equal, with the sets
      its rules need.

    Rendering with or without a memo gives equal rulesets."""

    def __init__(self) -> None:
        self._sets: dict[str, _MemoSet] = {}
        self._chains: dict[str, tuple[NetworkPolicy, Chain, tuple]] = {}
        self._used_sets: dict[str, _MemoSet] = {}
        self._used_chains: dict[str, tuple[NetworkPolicy, Chain, tuple]] = {}

    def set(self, name: str, versions: tuple, inputs: Callable[[], tuple], build: Callable[[tuple], Set]) -> Set:
        hit = self._sets.get(name)
        if hit is None or hit.versions != versions:
            pods = inputs()
            hit = hit._replace(versions=versions) if hit is not None and hit.inputs == pods else _MemoSet(versions, pods, build(pods))
        self._used_sets[name] = hit
        return hit.set

    def chain(self, name: str, policy: NetworkPolicy) -> tuple[Chain, tuple] | None:
        """The chain and set needs rendered for an equal policy last time, if any."""
        hit = self._chains.get(name)
        if hit is None or hit[0] != policy:
            return None
        self._used_chains[name] = hit
        return hit[1], hit[2]

    def keep_chain(self, name: str, policy: NetworkPolicy, chain: Chain, needs: tuple) -> None:
        self._used_chains[name] = (policy, chain, needs)

    def finish(self) -> None:
        """Keep only what the render just used."""
        self._sets, self._used_sets = self._used_sets, {}
        self._chains, self._used_chains = self._used_chains, {}


class _Builder:
    """Accumulates the named sets that rules refer to, so each is made once."""

    def __init__(self, state: ClusterState, node: str, memo: RenderMemo | None) -> None:
        self.state = state
        self.node = node
        self.memo = memo or RenderMemo()
        self.sets: dict[str, Set] = {}
        self._namespaces: dict[SelectorScope, list[str]] = {}
        self._needs: list[tuple] | None = None  # while a chain renders: the sets its rules asked for

    def peer_set(self, peer: Peer, policy_namespace: str, family: int) -> str:
        if self._needs is not None:
            self._needs.append(("peer_set", peer, policy_namespace, family))
        if peer.ip_block is not None:
            block = peer.ip_block
            name = ip_block_set_name(block)
            if name not in self.sets:
                self.sets[name] = Set(
                    name, (_addr_type(family),), f"ipBlock {block.describe()}", ("interval",), ip_block_elements(block)
                )
            return name
        scope = SelectorScope.of(peer, policy_namespace)
        name = scope.set_name(family)
        if name not in self.sets:
            namespaces = self._scope_namespaces(scope)

            def pods() -> tuple:
                return tuple(pod for ns in namespaces for pod in self.state.targets_selected(ns, scope.pod_selector))

            def build(pods: tuple) -> Set:
                members = (ip for pod in pods for ip in pod.ips if ip.version == family)
                return Set(name, (_addr_type(family),), scope.describe(), (), _sorted_ips(members))

            versions = tuple((ns, self.state.pods_version(ns)) for ns in namespaces)
            self.sets[name] = self.memo.set(name, versions, pods, build)
        return name

    def _scope_namespaces(self, scope: SelectorScope) -> list[str]:
        """Namespace selectors repeat across policies: match each once per render."""
        key = SelectorScope(scope.namespace, scope.namespace_selector, None)
        if key not in self._namespaces:
            self._namespaces[key] = scope.namespaces(self.state)
        return self._namespaces[key]

    def named_port_set(self, protocol: Protocol, port_name: str, family: int, direction: Direction) -> str:
        """Ingress chains only ever see traffic to this node's pods, so theirs
        holds only those; egress can go anywhere, so its set holds every pod."""
        if self._needs is not None:
            self._needs.append(("named_port_set", protocol, port_name, family, direction))
        name = named_port_set_name(protocol, port_name, family, direction)
        if name not in self.sets:
            whose = "this node's pods" if direction is Direction.INGRESS else "pods"

            if direction is Direction.INGRESS:  # a few local pods: cheaper to look at than to version
                local = tuple(p for p in self.state.pods_on(self.node) if p.is_policy_target and p.named_port(port_name, protocol))
                pods, versions = (lambda: local), local
            else:
                pods, versions = (lambda: tuple(self.state.targets_with_port_name(port_name))), (self.state.pods_version_all(),)

            def build(pods: tuple) -> Set:
                elements = sorted(
                    {
                        (ip, number)
                        for pod in pods
                        if (number := pod.named_port(port_name, protocol)) is not None
                        for ip in pod.ips
                        if ip.version == family
                    },
                    key=lambda e: (int(e[0]), e[1]),
                )
                return Set(
                    name,
                    (_addr_type(family), "inet_service"),
                    f"{whose} giving {protocol.value} port {port_name!r} a number",
                    (),
                    tuple(Concat((str(ip), number)) for ip, number in elements),
                )

            self.sets[name] = self.memo.set(name, versions, pods, build)
        return name

    # --- one policy rule -------------------------------------------------

    def rules_for(self, policy: NetworkPolicy, direction: Direction, index: int, rule: PolicyRule) -> list[Rule]:
        """nft rules for one policy rule: one per (peer, port group, family) that can match."""
        numeric = tuple(p for p in rule.ports if not isinstance(p.port, str))
        named = sorted({(p.protocol, p.port) for p in rule.ports if isinstance(p.port, str)})
        port_groups: list[tuple[str, object]] = []
        if not rule.ports:
            port_groups.append(("all", None))
        if numeric:
            port_groups.append(("numeric", numeric))
        port_groups += [("named", n) for n in named]
        peers: list[tuple[int | None, Peer | None]] = [(None, None)] if not rule.peers else list(enumerate(rule.peers))
        verdict = ACCEPT if direction is Direction.INGRESS else goto(DISPATCH_CHAIN)
        peer_field = "saddr" if direction is Direction.INGRESS else "daddr"
        out = []
        for j, peer in peers:
            for kind, group in port_groups:
                needs_family = peer is not None or kind == "named"
                for family in FAMILIES if needs_family else (None,):
                    if peer is not None and peer.ip_block is not None and peer.ip_block.cidr.version != family:
                        continue
                    matches: list = []
                    if peer is not None:
                        set_name = self.peer_set(peer, policy.namespace, family)
                        matches.append(Match(_addr_payload(family, peer_field), SetRef(set_name)))
                    if kind == "numeric":
                        matches.append(Match(Concat((Meta("l4proto"), Payload("th", "dport"))), AnonSet(_port_items(group))))
                    elif kind == "named":
                        protocol, port_name = group
                        set_name = self.named_port_set(protocol, port_name, family, direction)
                        dport = Payload(protocol.value.lower(), "dport")
                        matches.append(Match(Concat((_addr_payload(family, "daddr"), dport)), SetRef(set_name)))
                    where = rule_comment(policy.key, direction, index, j, group[1] if kind == "named" else None)
                    out.append(Rule((*matches, Counter(), verdict), where))
        return out

    def policy_chain(self, policy: NetworkPolicy, direction: Direction) -> Chain:
        name = policy_chain_name(policy.key, direction)
        hit = self.memo.chain(name, policy)
        if hit is not None:
            chain, needs = hit
            for method, *args in needs:  # the sets its rules name, from this state
                getattr(self, method)(*args)
            return chain
        self._needs = []
        rules = [r for i, rule in enumerate(policy.rules(direction)) for r in self.rules_for(policy, direction, i, rule)]
        needs, self._needs = tuple(self._needs), None
        # The comment depends on the name alone: an existing chain keeps its comment when its rules change.
        chain = Chain(name, policy_comment(policy.key, direction), None, tuple(rules))
        self.memo.keep_chain(name, policy, chain, needs)
        return chain


def _port_items(ports: tuple[PolicyPort, ...]) -> tuple:
    """``proto . port`` items for an inline interval set; a missing port is every
    port. Overlapping ranges are merged: the kernel refuses overlaps."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for p in ports:
        low = 0 if p.port is None else p.port
        high = 65535 if p.port is None else (p.end_port or p.port)
        ranges.setdefault(p.protocol.value.lower(), []).append((low, high))
    items = []
    for proto in sorted(ranges):
        merged: list[list[int]] = []
        for low, high in sorted(ranges[proto]):
            if merged and low <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        items += [Concat((proto, low if low == high else Range(low, high))) for low, high in merged]
    return tuple(items)


def _base_chains() -> list[Chain]:
    forward_rules = [
        Rule((Match(Ct("state"), Flags(("established", "related")), "in"), ACCEPT), "replies of allowed connections"),
        Rule((Match(Payload("icmpv6", "type"), AnonSet(ND_TYPES)), ACCEPT), "IPv6 neighbour discovery"),
        *(
            Rule((VMap(_addr_payload(f, "saddr"), dispatch_map_name(Direction.EGRESS, f)),), f"egress of local pods, IPv{f}")
            for f in FAMILIES
        ),
        Rule((goto(DISPATCH_CHAIN),), "source not isolated for egress"),
    ]
    dispatch_rules = [
        *(
            Rule((VMap(_addr_payload(f, "daddr"), dispatch_map_name(Direction.INGRESS, f)),), f"ingress of local pods, IPv{f}")
            for f in FAMILIES
        ),
        Rule((ACCEPT,), "destination not isolated for ingress"),
    ]
    return [
        Chain(FORWARD_CHAIN, "NetworkPolicy for pod traffic", Hook("filter", "forward", FORWARD_PRIORITY), tuple(forward_rules)),
        Chain(DISPATCH_CHAIN, "ingress check, after the source's egress allowed the flow", None, tuple(dispatch_rules)),
    ]


def local_pods(state: ClusterState, node: str) -> list[Pod]:
    """The pods this node enforces policy for: its own, with addresses, that policies can select."""
    return [p for p in state.pods_on(node) if p.is_policy_target and p.ips]


def isolating_policies(state: ClusterState, pod: Pod, direction: Direction) -> tuple[NetworkPolicy, ...]:
    return tuple(p for p in state.policies_in(pod.namespace) if direction in p.policy_types and policy_selects(p, pod))


def _dispatch_map(direction: Direction, family: int, entries: dict) -> Set:
    """Local pod IP -> goto the chain of the policies isolating it."""
    return Set(
        dispatch_map_name(direction, family),
        (_addr_type(family),),
        f"local pods isolated for {direction.field}",
        (),
        tuple((str(ip), goto(chain)) for ip, chain in sorted(entries.items(), key=lambda e: int(e[0]))),
        map_verdicts=True,
    )


def desired_ruleset(
    state: ClusterState,
    node: str,
    interfaces: Iterable[PodInterface] | None = None,
    log_group: int | None = None,
    memo: RenderMemo | None = None,
    foreign_ports: Iterable[str] = (),
) -> Ruleset:
    """The nftables ruleset that enforces ``state``'s policies for the pods on ``node``.

    ``interfaces`` are the CNI registrations of the node's pods. With them
    (the enforcer), local pods take their IPs from CNI and the bridge table
    binds each pod port to its pod's sources. Without them (offline
    rendering), only the policy table is rendered. With ``log_group``, denied
    new connections are also logged to that NFLOG group, rate-limited. A
    ``memo`` kept across calls makes a render cost what changed since the last.
    ``foreign_ports`` are the node's ports of bridges that are not pod bridges:
    the bridge table leaves them alone and checks every other bridge port.
    """
    if interfaces is not None:
        interfaces = tuple(interfaces)
        state = with_interfaces(state, node, interfaces)
    builder = _Builder(state, node, memo)
    policy_chains: dict[str, Chain] = {}
    isolate_chains: dict[str, Chain] = {}
    registered = {i.key for i in interfaces or ()}
    dispatch: dict[tuple[Direction, int], dict] = {(d, f): {} for d in Direction for f in FAMILIES}
    for direction in Direction:
        for pod in local_pods(state, node):
            policies = isolating_policies(state, pod, direction)
            if not policies:
                continue
            isolate = isolate_chain_name(direction, tuple(p.key for p in policies))
            if isolate not in isolate_chains:
                for p in policies:
                    name = policy_chain_name(p.key, direction)
                    if name not in policy_chains:
                        policy_chains[name] = builder.policy_chain(p, direction)
                logging = (
                    (Rule((Limit(DENY_LOG_RATE, "second", DENY_LOG_BURST), Log(deny_log_prefix(direction, isolate), log_group)),
                          f"log denied {direction.field} to NFLOG group {log_group}, rate-limited"),)
                    if log_group is not None else ()
                )
                isolate_chains[isolate] = Chain(
                    isolate,
                    f"pods isolated for {direction.field} by {', '.join(p.key for p in policies)}",
                    None,
                    (
                        *(Rule((jump(policy_chain_name(p.key, direction)),), policy_comment(p.key, direction)) for p in policies),
                        *logging,
                        Rule((Counter(), DROP), f"{direction.field} denied: no rule of the policies above allows it"),
                    ),
                )
            for ip in pod.ips:
                entries = dispatch[(direction, ip.version)]
                # Two local pods with one address (a stale status): a map key is unique,
                # and the pod CNI registered there now wins.
                if ip not in entries or pod.key in registered:
                    entries[ip] = isolate

    def by_name(chains: dict[str, Chain]) -> list[Chain]:
        return sorted(chains.values(), key=lambda c: c.name)

    table = Table(
        *POLICY_TABLE,
        f"nftpolicy: NetworkPolicy for pods on node {node}",
        chains=tuple(_base_chains() + by_name(isolate_chains) + by_name(policy_chains)),
        sets=tuple(sorted(builder.sets.values(), key=lambda s: s.name))
        + tuple(_dispatch_map(d, f, entries) for (d, f), entries in dispatch.items()),
    )
    builder.memo.finish()
    return Ruleset((table,) if interfaces is None else (table, bridge_table(interfaces, foreign_ports)))
