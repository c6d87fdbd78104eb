"""Cluster state as frozen data.

The engine sees flattened objects (labels, IPs, ports), never whole API
objects: that keeps caches slim at scale and makes every function here a pure
function of its inputs. Loading and validation live in ``rules.load``.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
from dataclasses import InitVar, dataclass, field
from enum import Enum
from functools import cached_property
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    from rules.cluster_policy import ClusterNetworkPolicy

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class L4Protocol(str, Enum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class Direction(str, Enum):
    INGRESS = "Ingress"
    EGRESS = "Egress"

    @property
    def field(self) -> str:
        """The spec field holding rules of this direction."""
        return "ingress" if self is Direction.INGRESS else "egress"

    @property
    def peers_field(self) -> str:
        return "from" if self is Direction.INGRESS else "to"


Labels = tuple[tuple[str, str], ...]


def labels_of(mapping: Mapping[str, str] | None) -> Labels:
    """Labels as a sorted tuple: hashable, and deterministic to render."""
    return tuple(sorted((mapping or {}).items()))


@dataclass(frozen=True)
class Requirement:
    """One matchExpressions entry."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        raise ValueError(f"unknown selector operator {self.operator!r}")


@dataclass(frozen=True)
class LabelSelector:
    """A metav1.LabelSelector. The empty selector selects everything."""

    match_labels: Labels = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(r.matches(labels) for r in self.match_expressions)

    def describe(self) -> str:
        """Compact, canonical text: used in nft comments and explanations."""
        parts = [f"{k}={v}" for k, v in self.match_labels]
        for r in self.match_expressions:
            values = ",".join(r.values)
            parts.append(
                {
                    "In": f"{r.key} in ({values})",
                    "NotIn": f"{r.key} notin ({values})",
                    "Exists": r.key,
                    "DoesNotExist": f"!{r.key}",
                }[r.operator]
            )
        return ",".join(parts) if parts else "all"

    def canonical(self) -> LabelSelector:
        """Equal selectors compare equal: sorted expressions and values."""
        exprs = sorted(
            {Requirement(r.key, r.operator, tuple(sorted(set(r.values)))) for r in self.match_expressions},
            key=lambda r: (r.key, r.operator, r.values),
        )
        return LabelSelector(self.match_labels, tuple(exprs))


@dataclass(frozen=True)
class IPBlock:
    cidr: IPNetwork
    except_: tuple[IPNetwork, ...] = ()

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.cidr.version and ip in self.cidr and not any(ip in e for e in self.except_)

    def describe(self) -> str:
        if not self.except_:
            return str(self.cidr)
        return f"{self.cidr} except {', '.join(map(str, self.except_))}"


@dataclass(frozen=True)
class Peer:
    """One entry of a rule's from/to list.

    Exactly one of the three shapes holds: selectors (pod, namespace or both),
    or an ipBlock. ``pod_selector=None`` and ``namespace_selector=None`` mean
    the field was absent, which is not the same as an empty selector.
    """

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    def describe(self, policy_namespace: str) -> str:
        if self.ip_block is not None:
            return f"ipBlock {self.ip_block.describe()}"
        pods = (
            f"pods {self.pod_selector.describe()}" if self.pod_selector and self.pod_selector != LabelSelector() else "all pods"
        )
        if self.namespace_selector is None:
            return f"{pods} in namespace {policy_namespace}"
        if self.namespace_selector == LabelSelector():
            return f"{pods} in all namespaces"
        return f"{pods} in namespaces {self.namespace_selector.describe()}"


@dataclass(frozen=True)
class PolicyPort:
    """One entry of a rule's ports list. ``port`` None means every port."""

    protocol: L4Protocol = L4Protocol.TCP
    port: int | str | None = None
    end_port: int | None = None

    def describe(self) -> str:
        if self.port is None:
            return f"{self.protocol.value}/all"
        if self.end_port is not None:
            return f"{self.protocol.value}/{self.port}-{self.end_port}"
        return f"{self.protocol.value}/{self.port}"


@dataclass(frozen=True)
class PortRange:
    """Destination ports ``first`` to ``last`` of one protocol (NetworkPolicy and ClusterNetworkPolicy alike)."""

    protocol: L4Protocol
    first: int
    last: int

    @classmethod
    def of(cls, port: PolicyPort) -> PortRange:
        """A policy port with a number (or none: every port)."""
        assert not isinstance(port.port, str)
        if port.port is None:
            return cls(port.protocol, 0, 65535)
        return cls(port.protocol, port.port, port.end_port or port.port)


@dataclass(frozen=True, order=True)
class NamedPort:
    """A container port's name: its number is whatever the destination pod gives it."""

    protocol: L4Protocol
    name: str


@dataclass(frozen=True)
class PolicyRule:
    """An ingress or egress rule. Empty ``peers`` means every peer; empty
    ``ports`` means every port (the API does not tell absent from empty)."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: frozenset[Direction]
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def rules(self, direction: Direction) -> tuple[PolicyRule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: L4Protocol = L4Protocol.TCP
    name: str | None = None


TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Labels = ()
    node: str | None = None
    host_network: bool = False
    ips: tuple[IPAddress, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    phase: str = "Running"
    uid: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @cached_property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def is_policy_target(self) -> bool:
        """Whether policies can select this pod or name it as a peer.

        hostNetwork pods share the node's addresses and are never selected;
        terminated pods leave every set at once so that a reused IP never
        inherits their allowances.
        """
        return not self.host_network and self.phase not in TERMINAL_PHASES

    def named_port(self, name: str, protocol: L4Protocol) -> int | None:
        """The number a named port resolves to on this pod, if any."""
        for p in self.ports:
            if p.name == name and p.protocol is protocol:
                return p.port
        return None


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Labels = ()

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class PodInterface:
    """A local pod's network attachment, as the CNI plugin registered it.

    CNI knows a pod's IPs before the API does, and only CNI knows its host-side
    veth and MAC: these bind the pod's addresses to the bridge port it may use.
    """

    namespace: str
    name: str
    container_id: str
    host_ifname: str
    mac: str | None
    ips: tuple[IPAddress, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Node:
    """A node, the addresses its own traffic comes from, and its labels
    (ClusterNetworkPolicy's ``nodes`` peers select nodes by them)."""

    name: str
    ips: tuple[IPAddress, ...] = ()
    labels: Labels = ()

    @cached_property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


_versions = itertools.count(1)  # pod-set versions: never reused, so equal versions mean equal pods


def _cluster_order(policies: Iterable[ClusterNetworkPolicy]) -> tuple[ClusterNetworkPolicy, ...]:
    """Admin before Baseline, then evaluation order (priority; ties by name)."""
    return tuple(sorted(policies, key=lambda p: (p.tier.value != "Admin", p.priority, p.name)))


def _pod_order(pod: Pod) -> tuple[str, str]:
    return pod.namespace, pod.name


class PodIndex:
    """Pods by key, namespace, (namespace, label) and named port, for one state.

    Selection then costs what a selector names, not cluster size. ``updated``
    makes the index of a changed state by copying only the lists a change
    touches, so a watch event costs what it changes. Each namespace has a
    version that changes whenever one of its pods does: a renderer that saw
    the same versions saw the same pods. Lists keep pods in (namespace, name)
    order, as a fresh build would.
    """

    def __init__(self) -> None:
        self.by_key: dict[str, Pod] = {}
        self.ordered: list[Pod] = []
        self.by_ns: dict[str, list[Pod]] = {}
        self.by_node: dict[str | None, list[Pod]] = {}
        self.targets_by_label: dict[tuple[str, str, str], list[Pod]] = {}
        self.targets_by_port_name: dict[str, list[Pod]] = {}
        self.ns_versions: dict[str, int] = {}
        self.version = next(_versions)  # of the whole pod set
        self._own: dict[int, list[Pod]] = {}  # the lists this index made, so may change in place (by id)

    @classmethod
    def of(cls, pods: Iterable[Pod]) -> PodIndex:
        index = cls()
        for pod in pods:
            index.by_key[pod.key] = pod
            index.ordered.append(pod)
            for entries, key in index._lists_of(pod):
                entries.setdefault(key, []).append(pod)
        index.ns_versions = {ns: index.version for ns in index.by_ns}
        return index

    def _lists_of(self, pod: Pod) -> list[tuple[dict, Any]]:
        """(index, key) of every list the pod belongs in."""
        where: list[tuple[dict, Any]] = [(self.by_ns, pod.namespace), (self.by_node, pod.node)]
        if pod.is_policy_target:
            where += [(self.targets_by_label, (pod.namespace, k, v)) for k, v in pod.labels]
            where += [(self.targets_by_port_name, name) for name in sorted({p.name for p in pod.ports if p.name})]
        return where

    def updated(self, changed: Iterable[Pod], removed: Iterable[str]) -> PodIndex:
        """The index with pods added or replaced (by key) and removed; self is unchanged.
        Pods equal to the ones they replace change nothing."""
        new = PodIndex()
        new.by_key, new.ordered = dict(self.by_key), list(self.ordered)
        new.by_ns, new.by_node, new.targets_by_label = dict(self.by_ns), dict(self.by_node), dict(self.targets_by_label)
        new.targets_by_port_name, new.ns_versions = dict(self.targets_by_port_name), dict(self.ns_versions)
        touched = False
        for key in removed:
            old = new.by_key.pop(key, None)
            if old is not None:
                new._remove(old)
                touched = True
        for pod in changed:
            old = new.by_key.get(pod.key)
            if old == pod:
                continue
            if old is not None:
                new._remove(old)
            new.by_key[pod.key] = pod
            new._insert(pod)
            touched = True
        return new if touched else self

    def _list(self, entries: dict, key: Any) -> list[Pod]:
        """The list under ``key``, copied once before this index first changes it."""
        current = entries.get(key)
        if current is None or id(current) not in self._own:
            current = entries[key] = list(current or ())
            self._own[id(current)] = current  # held, so its id is not reused while we look
        return current

    def _remove(self, pod: Pod) -> None:
        self.ordered.pop(bisect.bisect_left(self.ordered, _pod_order(pod), key=_pod_order))
        for entries, key in self._lists_of(pod):
            members = self._list(entries, key)
            members.pop(bisect.bisect_left(members, _pod_order(pod), key=_pod_order))
            if not members:
                del entries[key]
        self.ns_versions[pod.namespace] = self.version

    def _insert(self, pod: Pod) -> None:
        bisect.insort(self.ordered, pod, key=_pod_order)
        for entries, key in self._lists_of(pod):
            bisect.insort(self._list(entries, key), pod, key=_pod_order)
        self.ns_versions[pod.namespace] = self.version


@dataclass(frozen=True)
class ClusterState:
    """A snapshot of everything the engine reads; built once, then queried.

    ``pod_index``, when given, must index exactly ``pods`` (``with_pods`` makes
    such pairs); otherwise the index is built from ``pods``.
    """

    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    policies: tuple[NetworkPolicy, ...] = ()
    nodes: tuple[Node, ...] = ()
    cluster_policies: tuple[ClusterNetworkPolicy, ...] = ()  # both tiers, in (tier, priority, name) order
    pod_index: InitVar[PodIndex | None] = None
    _pods: PodIndex = field(init=False, compare=False, repr=False)
    _ns_index: dict[str, Namespace] = field(default_factory=dict, init=False, compare=False, repr=False)
    _policies_by_ns: dict[str, list[NetworkPolicy]] = field(default_factory=dict, init=False, compare=False, repr=False)
    _ns_labels: dict[str, dict[str, str]] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self, pod_index: PodIndex | None) -> None:
        object.__setattr__(self, "_pods", pod_index or PodIndex.of(self.pods))
        self._ns_index.update({n.name: n for n in self.namespaces})
        for policy in self.policies:
            self._policies_by_ns.setdefault(policy.namespace, []).append(policy)

    @classmethod
    def build(
        cls,
        namespaces: Iterable[Namespace] = (),
        pods: Iterable[Pod] = (),
        policies: Iterable[NetworkPolicy] = (),
        nodes: Iterable[Node] = (),
        cluster_policies: Iterable[ClusterNetworkPolicy] = (),
    ) -> ClusterState:
        """A state in canonical order, so equal inputs render equal output."""
        return cls(
            namespaces=tuple(sorted(namespaces, key=lambda n: n.name)),
            pods=tuple(sorted(pods, key=_pod_order)),
            policies=tuple(sorted(policies, key=lambda p: (p.namespace, p.name))),
            nodes=tuple(sorted(nodes, key=lambda n: n.name)),
            cluster_policies=_cluster_order(cluster_policies),
        )

    def with_pods(self, changed: Iterable[Pod] = (), removed: Iterable[str] = ()) -> ClusterState:
        """This (canonical) state with pods added or replaced by key, and removed by
        key: the pod index is updated, not rebuilt."""
        index = self._pods.updated(changed, removed)
        if index is self._pods:
            return self
        return ClusterState(
            self.namespaces, tuple(index.ordered), self.policies, self.nodes, self.cluster_policies, pod_index=index
        )

    def with_objects(
        self,
        namespaces: Iterable[Namespace] | None = None,
        policies: Iterable[NetworkPolicy] | None = None,
        cluster_policies: Iterable[ClusterNetworkPolicy] | None = None,
        nodes: Iterable[Node] | None = None,
    ) -> ClusterState:
        """This state with all its namespaces, policies, cluster policies or nodes replaced; pods and their index kept."""
        return ClusterState(
            tuple(sorted(namespaces, key=lambda n: n.name)) if namespaces is not None else self.namespaces,
            self.pods,
            tuple(sorted(policies, key=lambda p: (p.namespace, p.name))) if policies is not None else self.policies,
            tuple(sorted(nodes, key=lambda n: n.name)) if nodes is not None else self.nodes,
            _cluster_order(cluster_policies) if cluster_policies is not None else self.cluster_policies,
            pod_index=self._pods,
        )

    def pods_version_all(self) -> int:
        """Changes whenever any pod does."""
        return self._pods.version

    def pods_version(self, namespace: str) -> int:
        """Changes whenever a pod of the namespace does (0: it never had pods)."""
        return self._pods.ns_versions.get(namespace, 0)

    def namespace_labels(self, name: str) -> dict[str, str]:
        """Labels of a namespace; an unknown namespace still has its name label."""
        labels = self._ns_labels.get(name)
        if labels is None:
            ns = self._ns_index.get(name)
            labels = self._ns_labels[name] = {NAMESPACE_NAME_LABEL: name, **(ns.label_map if ns else {})}
        return labels

    def pods_in(self, namespace: str) -> list[Pod]:
        return self._pods.by_ns.get(namespace, [])

    def pods_on(self, node: str) -> list[Pod]:
        return self._pods.by_node.get(node, [])

    def policies_in(self, namespace: str) -> list[NetworkPolicy]:
        return self._policies_by_ns.get(namespace, [])

    def targets_selected(self, namespace: str, selector: LabelSelector | None) -> list[Pod]:
        """The policy-target pods of a namespace that a pod selector matches (None: all)."""
        if selector is None or not selector.match_labels:
            candidates = [p for p in self.pods_in(namespace) if p.is_policy_target]
            rest = selector
        else:
            by_label = self._pods.targets_by_label
            indexed = min(selector.match_labels, key=lambda kv: len(by_label.get((namespace, *kv), ())))
            candidates = by_label.get((namespace, *indexed), [])
            rest = LabelSelector(tuple(kv for kv in selector.match_labels if kv != indexed), selector.match_expressions)
        if rest is None or rest == LabelSelector():
            return candidates
        return [p for p in candidates if rest.matches(p.label_map)]

    def targets_with_port_name(self, name: str) -> list[Pod]:
        """The policy-target pods that declare a container port of this name."""
        return self._pods.targets_by_port_name.get(name, [])

    def namespace_names(self) -> list[str]:
        """Every namespace that exists or holds pods."""
        return sorted(set(self._ns_index) | set(self._pods.by_ns))

    def pod(self, key: str) -> Pod | None:
        return self._pods.by_key.get(key)

    def pod_by_ip(self, ip: IPAddress) -> Pod | None:
        """The policy-target pod that owns an address, if any."""
        return next((p for p in self.pods if p.is_policy_target and ip in p.ips), None)

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def node_by_ip(self, ip: IPAddress) -> Node | None:
        return next((n for n in self.nodes if ip in n.ips), None)
