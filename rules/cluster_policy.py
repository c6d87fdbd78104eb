"""ClusterNetworkPolicy (``policy.networking.k8s.io`` v1beta1/v1alpha2, from
sigs.k8s.io/network-policy-api v0.3.0): the model, its validation as the
CRD's schema and CEL rules validate, and its tiered semantics, written
straight from the API's documentation (docs/clusternetworkpolicy/) as the
reference the renderer is held to (``rules.evaluate.tiered_verdict``).

For a connection, each direction is decided on its own, in this order:

1. Admin tier: the policies whose subject selects the pod, by priority (lower
   first; ties by name, a fixed order the API allows), each policy's rules in
   list order. The first rule that matches decides: Accept and Deny are final,
   Pass skips the rest of the Admin tier.
2. NetworkPolicy: if one isolates the pod for this direction, it decides.
3. Baseline tier, as Admin; Pass goes on to the default.
4. Default: allow.

A ClusterNetworkPolicy never isolates a pod by selecting it: a policy with no
rules for a direction does not affect it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum
from typing import Any

from rules.model import Direction, IPAddress, L4Protocol, LabelSelector, NamedPort, Node, Pod, PortRange

MAX_PRIORITY = 1000
MAX_RULES = 25  # rules per direction, peers per rule, protocols per rule, networks per peer
MAX_RULE_NAME = 100


class Tier(str, Enum):
    ADMIN = "Admin"
    BASELINE = "Baseline"


class Action(str, Enum):
    ACCEPT = "Accept"
    DENY = "Deny"
    PASS = "Pass"


@dataclass(frozen=True)
class PodsSelector:
    """Pods by namespace and pod labels; ``namespaces`` None: in every namespace."""

    namespaces: LabelSelector | None
    pods: LabelSelector

    def matches(self, pod: Pod, namespace_labels: dict[str, str]) -> bool:
        """Host-network pods are never selected, as subject or as peer."""
        return (
            pod.is_policy_target
            and (self.namespaces is None or self.namespaces.matches(namespace_labels))
            and self.pods.matches(pod.label_map)
        )


@dataclass(frozen=True)
class ClusterPeer:
    """One peer: pods (``namespaces:`` is pods of every namespace it selects,
    any labels), or, for egress, addresses: of nodes by their labels
    (experimental ``nodes``) or ``networks``."""

    pods: PodsSelector | None = None
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    nodes: LabelSelector | None = None

    def matches(self, ip: IPAddress, pod: Pod | None, namespace_labels: dict[str, str], node: Node | None) -> bool:
        """``node``: the node whose address ``ip`` is, if any."""
        if self.pods is not None:
            return pod is not None and self.pods.matches(pod, namespace_labels)
        if self.nodes is not None:
            return node is not None and self.nodes.matches(node.label_map)
        return any(ip in network for network in self.networks)


@dataclass(frozen=True)
class ClusterRule:
    name: str  # may be empty; not unique
    action: Action
    peers: tuple[ClusterPeer, ...]
    # Empty: every port of every protocol. A named port (experimental
    # ``destinationNamedPort``) is one NamedPort per protocol: it matches the
    # destination pod's container port of that name, whatever its protocol.
    ports: tuple[PortRange | NamedPort, ...]

    def matches(
        self,
        peer_ip: IPAddress,
        peer: Pod | None,
        namespace_labels: dict[str, str],
        peer_node: Node | None,
        port: int,
        protocol: L4Protocol,
        destination: Pod | None,
    ) -> bool:
        return any(p.matches(peer_ip, peer, namespace_labels, peer_node) for p in self.peers) and (
            not self.ports or any(_port_matches(r, port, protocol, destination) for r in self.ports)
        )


def _port_matches(ports: PortRange | NamedPort, port: int, protocol: L4Protocol, destination: Pod | None) -> bool:
    if isinstance(ports, NamedPort):
        return ports.protocol is protocol and destination is not None and destination.named_port(ports.name, protocol) == port
    return ports.protocol is protocol and ports.first <= port <= ports.last


@dataclass(frozen=True)
class ClusterNetworkPolicy:
    name: str
    tier: Tier
    priority: int
    subject: PodsSelector
    ingress: tuple[ClusterRule, ...] = ()
    egress: tuple[ClusterRule, ...] = ()

    @property
    def key(self) -> str:
        return f"cnp/{self.name}"

    def rules(self, direction: Direction) -> tuple[ClusterRule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress


@dataclass(frozen=True)
class ClusterRuleRef:
    """The deciding rule: ``cnp/NAME egress[i] (rule name)``, with its tier and priority."""

    policy: str
    tier: Tier
    priority: int
    direction: Direction
    index: int
    name: str
    action: Action

    def __str__(self) -> str:
        named = f" ({self.name})" if self.name else ""
        return f"cnp/{self.policy} {self.direction.field}[{self.index}]{named}"


def ordered(policies: tuple[ClusterNetworkPolicy, ...], tier: Tier) -> list[ClusterNetworkPolicy]:
    """A tier's policies in evaluation order: priority, then name."""
    return sorted((p for p in policies if p.tier is tier), key=lambda p: (p.priority, p.name))


def tier_decision(
    policies: tuple[ClusterNetworkPolicy, ...],
    tier: Tier,
    direction: Direction,
    subject: Pod,
    subject_ns_labels: dict[str, str],
    peer_ip: IPAddress,
    peer: Pod | None,
    peer_ns_labels: dict[str, str],
    peer_node: Node | None,
    port: int,
    protocol: L4Protocol,
) -> ClusterRuleRef | None:
    """The first rule of ``tier`` that matches, if any (a Pass included).
    ``peer_node``: the node whose address ``peer_ip`` is, if any."""
    destination = subject if direction is Direction.INGRESS else peer
    for policy in ordered(policies, tier):
        if not policy.subject.matches(subject, subject_ns_labels):
            continue
        for i, rule in enumerate(policy.rules(direction)):
            if rule.matches(peer_ip, peer, peer_ns_labels, peer_node, port, protocol, destination):
                return ClusterRuleRef(policy.name, tier, policy.priority, direction, i, rule.name, rule.action)
    return None


# --- parsing, as the CRD validates ---------------------------------------------


class InvalidClusterPolicy(ValueError):
    """An object the API server would reject; the message names the policy and each field."""


def parse_cluster_network_policy(obj: dict, selector: Any) -> ClusterNetworkPolicy:
    """``selector(errors, value, path)`` parses a LabelSelector (``rules.load``'s,
    so both kinds validate selectors alike); errors name ``cnp/NAME: path``."""
    errors: list[str] = []

    def error(path: str, message: str) -> None:
        errors.append(f"{path}: {message}")

    def mapping(value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            error(path, "must be an object")
            return {}
        return value

    def items(value: Any, path: str, least: int, most: int = MAX_RULES) -> list:
        if value is None:
            if least:
                error(path, "Required value")
            return []
        if not isinstance(value, list):
            error(path, "must be a list")
            return []
        if len(value) < least:
            error(path, f"must have at least {least} item")
        if len(value) > most:
            error(path, f"must have at most {most} items")
        return value

    def one_of(value: dict, path: str, allowed: tuple[str, ...]) -> str | None:
        keys = [k for k in value if k in allowed]
        for unknown in set(value) - set(allowed):
            error(f"{path}.{unknown}", "unknown field")
        if len(keys) != 1:
            error(path, f"must have exactly one of {', '.join(allowed)}")
            return None
        return keys[0]

    def pods_selector(value: Any, path: str) -> PodsSelector:
        value = mapping(value, path)
        if "podSelector" not in value:
            error(f"{path}.podSelector", "Required value")
        namespaces = (
            selector(error, value["namespaceSelector"], f"{path}.namespaceSelector") if "namespaceSelector" in value else None
        )
        return PodsSelector(namespaces, selector(error, value.get("podSelector", {}), f"{path}.podSelector"))

    def peer(value: Any, path: str, direction: Direction) -> ClusterPeer:
        value = mapping(value, path)
        kinds = ("namespaces", "pods") if direction is Direction.INGRESS else ("namespaces", "pods", "nodes", "networks")
        kind = one_of(value, path, kinds)
        if kind == "namespaces":
            return ClusterPeer(pods=PodsSelector(selector(error, value["namespaces"], f"{path}.namespaces"), LabelSelector()))
        if kind == "pods":
            return ClusterPeer(pods=pods_selector(value["pods"], f"{path}.pods"))
        if kind == "nodes":
            return ClusterPeer(nodes=selector(error, value["nodes"], f"{path}.nodes"))
        if kind == "networks":
            networks = []
            raw = items(value["networks"], f"{path}.networks", 1)
            for i, text in enumerate(raw):
                networks += _cidr(text, f"{path}.networks[{i}]", error)
            if len(set(map(str, raw))) != len(raw):
                error(f"{path}.networks", "must not contain duplicates")
            return ClusterPeer(networks=tuple(networks))
        return ClusterPeer()  # invalid: reported above

    def port_range(value: Any, path: str) -> tuple[PortRange | NamedPort, ...]:
        value = mapping(value, path)
        kind = one_of(value, path, ("tcp", "udp", "sctp", "destinationNamedPort"))
        if kind is None:
            return ()
        if kind == "destinationNamedPort":
            name = value[kind]
            if not isinstance(name, str) or not name:
                error(f"{path}.destinationNamedPort", "must be a non-empty string")
                return ()
            return tuple(NamedPort(protocol, name) for protocol in L4Protocol)
        body = mapping(value[kind], f"{path}.{kind}")
        if "destinationPort" not in body:
            error(f"{path}.{kind}", "must have at least 1 property (destinationPort)")
            return ()
        where = f"{path}.{kind}.destinationPort"
        dest = mapping(body["destinationPort"], where)
        form = one_of(dest, where, ("number", "range"))
        protocol = L4Protocol(kind.upper())
        if form == "number":
            n = _port(dest["number"], f"{where}.number", error)
            return (PortRange(protocol, n, n),) if n else ()
        if form == "range":
            r = mapping(dest["range"], f"{where}.range")
            start = _port(r.get("start"), f"{where}.range.start", error)
            end = _port(r.get("end"), f"{where}.range.end", error)
            if start and end and not start < end:
                error(f"{where}.range", "Start port must be less than End port")
            return (PortRange(protocol, start, end),) if start and end and start < end else ()
        return ()

    def rule(value: Any, path: str, direction: Direction) -> ClusterRule:
        value = mapping(value, path)
        peers_field = "from" if direction is Direction.INGRESS else "to"
        for unknown in set(value) - {"name", "action", peers_field, "protocols"}:
            error(f"{path}.{unknown}", "unknown field")
        name = value.get("name", "")
        if not isinstance(name, str) or len(name) > MAX_RULE_NAME:
            error(f"{path}.name", f"must be a string of at most {MAX_RULE_NAME} characters")
            name = ""
        try:
            action = Action(value.get("action"))
        except ValueError:
            error(f"{path}.action", f'Unsupported value: {value.get("action")!r}: supported values: "Accept", "Deny", "Pass"')
            action = Action.DENY
        peers = tuple(
            peer(p, f"{path}.{peers_field}[{i}]", direction)
            for i, p in enumerate(items(value.get(peers_field), f"{path}.{peers_field}", 1))
        )
        protocols = items(value.get("protocols"), f"{path}.protocols", 1) if "protocols" in value else []
        ports = tuple(r for i, p in enumerate(protocols) for r in port_range(p, f"{path}.protocols[{i}]"))
        if any(isinstance(p, NamedPort) for p in ports) and any(p.pods is None for p in peers):
            error(
                path,
                "networks/nodes/domainNames peer cannot be set with namedPorts since there are no namedPorts for networks/nodes/domainNames",
            )
        return ClusterRule(name, action, peers, ports)

    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = metadata.get("name") if isinstance(metadata.get("name"), str) else ""
    if not name:
        error("metadata.name", "Required value")
    spec = mapping(obj.get("spec"), "spec")
    for unknown in set(spec) - {"tier", "priority", "subject", "ingress", "egress"}:
        error(f"spec.{unknown}", "unknown field")
    try:
        tier = Tier(spec.get("tier"))
    except ValueError:
        error("spec.tier", f'Unsupported value: {spec.get("tier")!r}: supported values: "Admin", "Baseline"')
        tier = Tier.ADMIN
    priority = spec.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= MAX_PRIORITY:
        error("spec.priority", f"must be an integer from 0 to {MAX_PRIORITY}" if priority is not None else "Required value")
        priority = 0
    subject_spec = mapping(spec.get("subject"), "spec.subject")
    kind = one_of(subject_spec, "spec.subject", ("namespaces", "pods"))
    if kind == "namespaces":
        subject = PodsSelector(selector(error, subject_spec["namespaces"], "spec.subject.namespaces"), LabelSelector())
    elif kind == "pods":
        subject = pods_selector(subject_spec["pods"], "spec.subject.pods")
    else:
        subject = PodsSelector(None, LabelSelector())
    rules = {
        d: tuple(rule(r, f"spec.{d.field}[{i}]", d) for i, r in enumerate(items(spec.get(d.field), f"spec.{d.field}", 0)))
        for d in Direction
    }
    if errors:
        raise InvalidClusterPolicy(f"cnp/{name or '?'}: " + "; ".join(errors))
    return ClusterNetworkPolicy(name, tier, priority, subject, rules[Direction.INGRESS], rules[Direction.EGRESS])


def _port(value: Any, path: str, error) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        error(path, "must be an integer from 1 to 65535")
        return 0
    return value


def _cidr(text: Any, path: str, error) -> list:
    """A canonical CIDR, as the CRD's CEL rule ``isCIDR(self) && cidr(self) == cidr(self).masked()`` wants."""
    if not isinstance(text, str) or len(text) > 43 or "/" not in text or "%" in text:
        error(path, "Invalid CIDR format provided")
        return []
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        error(path, "Invalid CIDR format provided")
        return []
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None:
        error(path, "Invalid CIDR format provided")
        return []
    return [network]
