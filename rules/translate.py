"""Cluster state to the nftables ruleset one node needs: ``desired_ruleset()``.

Two steps: selection makes the node's policy IR (``rules.ir``: for each local
pod and direction, its tiers of decisions), and ``policy_table`` renders the
IR, and only the IR, as nftables. Who a peer names comes from
``rules.ir.Members`` when a set is filled; no decision is taken here.

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
from typing import Callable, Iterable, NamedTuple

from rules.cluster_policy import Action
from rules.ir import (
    ClusterTier,
    Contents,
    IRMemo,
    Isolation,
    Members,
    NamedPort,
    NodeScope,
    NodePolicy,
    PeerRef,
    PolicyRules,
    PortRange,
    RuleMatch,
    SelectorScope,
    Tier,
    node_policy_ir,
)
from rules.model import ClusterState, Direction, IPBlock, PodInterface
from rules.nft import (
    ACCEPT,
    DROP,
    RETURN,
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
    Verdict,
    VMap,
    goto,
    jump,
)
from rules.bridge import bridge_table, with_interfaces
from rules.naming import (
    DISPATCH_CHAIN,
    cluster_deny_chain_name,
    cluster_tier_chain_name,
    cluster_tier_comment,
    FORWARD_CHAIN,
    INPUT_CHAIN,
    POLICY_TABLE,
    deny_log_prefix,
    dispatch_map_name,
    ip_block_set_name,
    isolate_chain_name,
    named_port_set_name,
    node_egress_chain_name,
    node_egress_map_name,
    node_set_name,
    peer_set_name,
    policy_chain_name,
    policy_comment,
    rule_comment,
)

FAMILIES = (4, 6)
FORWARD_PRIORITY = 0  # filter: after kube-proxy's DNAT, so Service traffic is policed on the pod address
DENY_LOG_RATE, DENY_LOG_BURST = 10, 20  # denied packets logged per second per isolation chain

ND_TYPES = ("nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert")


def _addr_payload(family: int, field: str) -> Payload:
    return Payload("ip" if family == 4 else "ip6", field)


def _addr_type(family: int) -> str:
    return "ipv4_addr" if family == 4 else "ipv6_addr"


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
        str(n.network_address) if n.prefixlen == n.max_prefixlen else Prefix(str(n.network_address), n.prefixlen) for n in nets
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
    - A policy's chain is reused when the policy's rules in the IR compare
      equal, with the sets its rules need.

    The IR is remade with ``ir``, which reuses the rules of unchanged
    policies. Rendering with or without a memo gives equal rulesets."""

    def __init__(self) -> None:
        self.ir = IRMemo()
        self._sets: dict[str, _MemoSet] = {}
        self._chains: dict[str, tuple[PolicyRules, Chain, tuple]] = {}
        self._used_sets: dict[str, _MemoSet] = {}
        self._used_chains: dict[str, tuple[PolicyRules, Chain, tuple]] = {}

    def set(self, name: str, versions: tuple, inputs: Callable[[], tuple], build: Callable[[tuple], Set]) -> Set:
        hit = self._sets.get(name)
        if hit is None or hit.versions != versions:
            pods = inputs()
            hit = (
                hit._replace(versions=versions)
                if hit is not None and hit.inputs == pods
                else _MemoSet(versions, pods, build(pods))
            )
        self._used_sets[name] = hit
        return hit.set

    def chain(self, name: str, rules: PolicyRules) -> tuple[Chain, tuple] | None:
        """The chain and set needs rendered for equal rules last time, if any."""
        hit = self._chains.get(name)
        if hit is None or hit[0] != rules:
            return None
        self._used_chains[name] = hit
        return hit[1], hit[2]

    def keep_chain(self, name: str, rules: PolicyRules, chain: Chain, needs: tuple) -> None:
        self._used_chains[name] = (rules, chain, needs)

    def finish(self) -> None:
        """Keep only what the render just used."""
        self._sets, self._used_sets = self._used_sets, {}
        self._chains, self._used_chains = self._used_chains, {}


class _Renderer:
    """Builds the policy table from the IR: the chains its decisions need, and
    the named sets their rules refer to (each made once), filled through
    ``Members``."""

    def __init__(self, members: Members, memo: RenderMemo | None, log_group: int | None) -> None:
        self.members = members
        self.memo = memo or RenderMemo()
        self.log_group = log_group
        self.sets: dict[str, Set] = {}
        self.policy_chains: dict[str, Chain] = {}
        self.isolate_chains: dict[str, Chain] = {}
        self.tier_chains: dict[str, Chain] = {}
        self.node_chains: dict[str, Chain] = {}
        self._needs: list[tuple] | None = None  # while a policy chain renders: the sets its rules asked for

    # --- sets ------------------------------------------------------------

    def set_for(self, ref: PeerRef | NamedPort, family: int, direction: Direction) -> str:
        """The named set of one family that holds what ``ref`` names."""
        if self._needs is not None:
            self._needs.append((ref, family))
        if isinstance(ref, IPBlock):
            return self._ip_block_set(ref, family)
        if isinstance(ref, NamedPort):
            return self._named_port_set(ref, family, direction)
        if isinstance(ref, NodeScope):
            return self._node_set(ref, family)
        return self._peer_set(ref, family)

    def _ip_block_set(self, block: IPBlock, family: int) -> str:
        name = ip_block_set_name(block)
        if name not in self.sets:
            self.sets[name] = Set(
                name, (_addr_type(family),), f"ipBlock {block.describe()}", ("interval",), ip_block_elements(block)
            )
        return name

    def _peer_set(self, scope: SelectorScope, family: int) -> str:
        name = _peer_set_name(scope, family)
        if name in self.sets:
            return name
        return self._address_set(name, scope.describe(), self.members.of_scope(scope), family)

    def _node_set(self, scope: NodeScope, family: int) -> str:
        name = node_set_name(repr(scope.selector), family)
        if name in self.sets:
            return name
        return self._address_set(name, scope.describe(), self.members.of_nodes(scope), family)

    def _address_set(self, name: str, comment: str, contents: Contents, family: int) -> str:
        """The addresses of one family of the pods (or nodes) ``contents`` names."""

        def build(owners: tuple) -> Set:
            members = (ip for owner in owners for ip in owner.ips if ip.version == family)
            return Set(name, (_addr_type(family),), comment, (), _sorted_ips(members))

        self.sets[name] = self.memo.set(name, contents.stamp, contents.pods, build)
        return name

    def _named_port_set(self, port: NamedPort, family: int, direction: Direction) -> str:
        """Ingress chains only ever see traffic to this node's pods, so theirs
        holds only those; egress can go anywhere, so its set holds every pod."""
        name = named_port_set_name(port.protocol, port.name, family, direction)
        if name not in self.sets:
            whose = "this node's pods" if direction is Direction.INGRESS else "pods"

            def build(pods: tuple) -> Set:
                elements = sorted(
                    {
                        (ip, number)
                        for pod in pods
                        if (number := pod.named_port(port.name, port.protocol)) is not None
                        for ip in pod.ips
                        if ip.version == family
                    },
                    key=lambda e: (int(e[0]), e[1]),
                )
                return Set(
                    name,
                    (_addr_type(family), "inet_service"),
                    f"{whose} giving {port.protocol.value} port {port.name!r} a number",
                    (),
                    tuple(Concat((str(ip), number)) for ip, number in elements),
                )

            contents = self.members.giving(port, local=direction is Direction.INGRESS)
            self.sets[name] = self.memo.set(name, contents.stamp, contents.pods, build)
        return name

    # --- chains ----------------------------------------------------------

    def rules_for(self, match: RuleMatch, direction: Direction, action: tuple[Verdict, str] | None = None) -> list[Rule]:
        """nft rules for one match: one per address family it needs. The
        verdict is NetworkPolicy's allow unless an action (a verdict and the
        word the comment ends with) is given."""
        verdict = action[0] if action else _allow(direction)
        peer_field = "saddr" if direction is Direction.INGRESS else "daddr"
        source = match.source
        where = rule_comment(
            source.policy, source.direction, source.index, source.peer, source.named_port, source.tier, source.name
        ) + (f" {action[1]}" if action else "")
        numeric = (
            Match(Concat((Meta("l4proto"), Payload("th", "dport"))), AnonSet(_port_items(match.ports)))
            if isinstance(match.ports, tuple)
            else None
        )
        out = []
        for family in _families(match):
            matches: list = []
            if match.peer is not None:
                matches.append(Match(_addr_payload(family, peer_field), SetRef(self.set_for(match.peer, family, direction))))
            if isinstance(match.ports, NamedPort):
                dport = Payload(match.ports.protocol.value.lower(), "dport")
                matches.append(
                    Match(Concat((_addr_payload(family, "daddr"), dport)), SetRef(self.set_for(match.ports, family, direction)))
                )
            elif numeric is not None:
                matches.append(numeric)
            out.append(Rule((*matches, Counter(), verdict), where))
        return out

    def policy_chain(self, rules: PolicyRules) -> str:
        """One policy's chain for one direction, reused from the memo when its rules are equal."""
        name = policy_chain_name(rules.policy, rules.direction)
        if name in self.policy_chains:
            return name
        hit = self.memo.chain(name, rules)
        if hit is not None:
            chain, needs = hit
            for ref, family in needs:  # the sets its rules name, from this state
                self.set_for(ref, family, rules.direction)
        else:
            self._needs = []
            nft_rules = tuple(r for match in rules.matches for r in self.rules_for(match, rules.direction))
            needs, self._needs = tuple(self._needs), None
            # The comment depends on the name alone: an existing chain keeps its comment when its rules change.
            chain = Chain(name, policy_comment(rules.policy, rules.direction), None, nft_rules)
            self.memo.keep_chain(name, rules, chain, needs)
        self.policy_chains[name] = chain
        return name

    def isolate_chain(self, direction: Direction, tiers: tuple[Tier, ...]) -> str:
        """The chain a pod's dispatch entry goes to: its tiers in order, then,
        unless NetworkPolicy isolates the pod, allow. Pods with the same
        policies share it; with NetworkPolicy alone it is named after them."""
        keys = _tier_keys(tiers)
        name = isolate_chain_name(direction, keys)
        if name not in self.isolate_chains:
            rules = [r for tier in tiers for r in self._tier_rules(tier, name)]
            if not isinstance(tiers[-1], Isolation):
                rules.append(Rule((_allow(direction),), f"{direction.field}: no tier decided: allowed by default"))
            if all(isinstance(t, Isolation) for t in tiers):
                comment = f"pods isolated for {direction.field} by {', '.join(keys)}"
            else:
                comment = f"pods whose {direction.field} meets {', '.join(keys)}"
            self.isolate_chains[name] = Chain(name, comment, None, tuple(rules))
        return name

    def node_egress_chain(self, tiers: tuple[Tier, ...]) -> str | None:
        """Where a local pod's traffic to its own node goes (the input hook):
        its ClusterNetworkPolicy egress tiers, with NetworkPolicy's in between,
        which always allows a pod's traffic to its node. None when the pod has
        no ClusterNetworkPolicy egress tier: then nothing here polices it."""
        if all(isinstance(t, Isolation) for t in tiers):
            return None
        keys = _tier_keys(tiers)
        name = node_egress_chain_name(keys)
        if name not in self.node_chains:
            rules: list[Rule] = []
            for tier in tiers:
                if isinstance(tier, Isolation):
                    rules.append(Rule((ACCEPT,), "NetworkPolicy isolates the pod, and always allows its traffic to its own node"))
                    break
                rules += self._tier_rules(tier, name)
            else:
                rules.append(Rule((ACCEPT,), "egress to the node: no tier decided: allowed by default"))
            comment = f"pods whose egress to their own node meets {', '.join(keys)}"
            self.node_chains[name] = Chain(name, comment, None, tuple(rules))
        return name

    def _tier_rules(self, tier: Tier, chain: str) -> list[Rule]:
        if isinstance(tier, Isolation):
            return self._isolation_rules(tier, chain)
        comment = cluster_tier_comment(tier.tier.value, tier.direction, tuple((p.policy, p.priority) for p in tier.policies))
        return [Rule((jump(self.cluster_tier_chain(tier, comment)),), comment)]

    def cluster_tier_chain(self, tier: ClusterTier, comment: str) -> str:
        """A ClusterNetworkPolicy tier's chain: every rule of its policies, in
        evaluation order, with its action. Accept and Deny end the walk; Pass
        returns to the pod's chain, which goes on to the next tier, as does a
        packet that no rule matches."""
        name = cluster_tier_chain_name(tier.tier.value, tier.direction, tuple(p.policy for p in tier.policies))
        if name not in self.tier_chains:
            verdicts = {
                Action.ACCEPT: _allow(tier.direction),
                Action.DENY: goto(self._cluster_deny_chain(tier.direction)) if self.log_group is not None else DROP,
                Action.PASS: RETURN,
            }
            rules = tuple(
                r
                for policy in tier.policies
                for rule in policy.rules
                for match in rule.matches
                for r in self.rules_for(match, tier.direction, (verdicts[rule.action], rule.action.value))
            )
            self.tier_chains[name] = Chain(name, comment, None, rules)
        return name

    def _cluster_deny_chain(self, direction: Direction) -> str:
        """Where Deny rules go when denied packets are logged: the log rule is
        rate-limited, so it cannot share a rule with the drop."""
        name = cluster_deny_chain_name(direction)
        if name not in self.tier_chains:
            log = Log(deny_log_prefix(direction, name), self.log_group)
            self.tier_chains[name] = Chain(
                name,
                f"{direction.field} denied by a ClusterNetworkPolicy Deny rule",
                None,
                (
                    Rule(
                        (Limit(DENY_LOG_RATE, "second", DENY_LOG_BURST), log),
                        f"log denied {direction.field} to NFLOG group {self.log_group}, rate-limited",
                    ),
                    Rule((DROP,), f"{direction.field} denied by a ClusterNetworkPolicy Deny rule"),
                ),
            )
        return name

    def _isolation_rules(self, isolation: Isolation, chain: str) -> list[Rule]:
        """NetworkPolicy's tier: each policy's chain accepts what it allows
        (egress: on to the ingress check); what none allows is counted, logged
        if asked, and dropped."""
        direction = isolation.direction
        rules = [Rule((jump(self.policy_chain(p)),), policy_comment(p.policy, direction)) for p in isolation.policies]
        if self.log_group is not None:
            log = Log(deny_log_prefix(direction, chain), self.log_group)
            rules.append(
                Rule(
                    (Limit(DENY_LOG_RATE, "second", DENY_LOG_BURST), log),
                    f"log denied {direction.field} to NFLOG group {self.log_group}, rate-limited",
                )
            )
        rules.append(Rule((Counter(), DROP), f"{direction.field} denied: no rule of the policies above allows it"))
        return rules


def _tier_keys(tiers: tuple[Tier, ...]) -> tuple[str, ...]:
    """What names a combination of tiers: NetworkPolicy's policies as themselves (so
    a pod with NetworkPolicies alone keeps its chain's name), the others with their tier."""
    return tuple(
        key
        for tier in tiers
        for key in (
            (p.policy for p in tier.policies)
            if isinstance(tier, Isolation)
            else (f"{tier.tier.value}:{p.policy}" for p in tier.policies)
        )
    )


def _allow(direction: Direction) -> Verdict:
    """What allowing a packet means: ingress is the last check; egress goes on to the destination's ingress."""
    return ACCEPT if direction is Direction.INGRESS else goto(DISPATCH_CHAIN)


def _families(match: RuleMatch) -> tuple[int | None, ...]:
    """The address families a match needs a rule for: an ipBlock its own; one
    rule per family when it names addresses (peer pods, a named port's
    ``pod IP . port``); otherwise one rule for both (None)."""
    if isinstance(match.peer, IPBlock):
        return (match.peer.cidr.version,)
    if match.peer is not None or isinstance(match.ports, NamedPort):
        return FAMILIES  # pods, nodes
    return (None,)


@functools.lru_cache(maxsize=1 << 16)
def _peer_set_name(scope: SelectorScope, family: int) -> str:
    return peer_set_name(repr(scope), family)


def _port_items(ports: tuple[PortRange, ...]) -> tuple:
    """``proto . port`` items for an inline interval set. Overlapping ranges
    are merged: the kernel refuses overlaps."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for p in ports:
        ranges.setdefault(p.protocol.value.lower(), []).append((p.first, p.last))
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


def _input_chain() -> Chain:
    """A local pod's traffic to its own node: only ClusterNetworkPolicy egress tiers see it."""
    rules = [
        Rule((Match(Ct("state"), Flags(("established", "related")), "in"), ACCEPT), "replies of allowed connections"),
        *(
            Rule((VMap(_addr_payload(f, "saddr"), node_egress_map_name(f)),), f"local pods' egress to this node, IPv{f}")
            for f in FAMILIES
        ),
    ]
    return Chain(
        INPUT_CHAIN, "ClusterNetworkPolicy for pods' traffic to their own node", Hook("filter", "input", 0), tuple(rules)
    )


def _verdict_map(name: str, family: int, comment: str, entries: dict) -> Set:
    """Local pod IP -> goto its chain."""
    return Set(
        name,
        (_addr_type(family),),
        comment,
        (),
        tuple((str(ip), goto(chain)) for ip, chain in sorted(entries.items(), key=lambda e: int(e[0]))),
        map_verdicts=True,
    )


def _dispatch_map(direction: Direction, family: int, entries: dict) -> Set:
    return _verdict_map(dispatch_map_name(direction, family), family, f"local pods isolated for {direction.field}", entries)


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
    memo = memo or RenderMemo()
    ir = node_policy_ir(state, node, memo.ir)
    table = policy_table(ir, Members(state, node), {i.key for i in interfaces or ()}, log_group, memo)
    return Ruleset((table,) if interfaces is None else (table, bridge_table(interfaces, foreign_ports)))


def policy_table(
    policy: NodePolicy,
    members: Members,
    registered: Iterable[str] = (),
    log_group: int | None = None,
    memo: RenderMemo | None = None,
) -> Table:
    """The ``inet nftpolicy`` table that enforces a node's policy IR.

    ``members`` fills the sets its peers and named ports refer to.
    ``registered``: the pods CNI registered on the node; when two local pods
    claim one address (a stale status), the registered one gets it.
    """
    registered = frozenset(registered)
    renderer = _Renderer(members, memo, log_group)
    dispatch: dict[tuple[Direction, int], dict] = {(d, f): {} for d in Direction for f in FAMILIES}
    node_egress: dict[int, dict] = {f: {} for f in FAMILIES}

    def enter(entries: dict, ip, chain: str, pod: str) -> None:
        # Two local pods with one address (a stale status): a map key is unique,
        # and the pod CNI registered there now wins.
        if ip not in entries or pod in registered:
            entries[ip] = chain

    for direction in Direction:
        for pod in policy.pods:
            tiers = pod.tiers(direction)
            if not tiers:
                continue
            isolate = renderer.isolate_chain(direction, tiers)
            to_node = renderer.node_egress_chain(tiers) if direction is Direction.EGRESS else None
            for ip in pod.ips:
                enter(dispatch[(direction, ip.version)], ip, isolate, pod.pod)
                if to_node is not None:
                    enter(node_egress[ip.version], ip, to_node, pod.pod)
    # The input hook only once a pod needs it: a cluster without ClusterNetworkPolicy egress has no input chain.
    input_path = any(node_egress.values())

    def by_name(chains: dict[str, Chain]) -> list[Chain]:
        return sorted(chains.values(), key=lambda c: c.name)

    table = Table(
        *POLICY_TABLE,
        f"nftpolicy: NetworkPolicy for pods on node {policy.node}",
        chains=tuple(
            _base_chains()
            + ([_input_chain()] if input_path else [])
            + by_name(renderer.isolate_chains)
            + by_name(renderer.policy_chains)
            + by_name(renderer.tier_chains)
            + by_name(renderer.node_chains)
        ),
        sets=tuple(sorted(renderer.sets.values(), key=lambda s: s.name))
        + tuple(_dispatch_map(d, f, entries) for (d, f), entries in dispatch.items())
        + tuple(
            _verdict_map(node_egress_map_name(f), f, "local pods whose egress to this node ClusterNetworkPolicy polices", entries)
            for f, entries in node_egress.items()
            if input_path
        ),
    )
    renderer.memo.finish()
    return table
