"""Hypothesis strategies for small random cluster states and flows.

States are built straight from the frozen dataclasses of ``rules.model`` (no
YAML, no loader), kept deliberately tiny so that a few hundred examples run in
seconds while still hitting the interesting corners of the spec: selectors with
every operator, peers of every shape, ipBlocks with excepts, named ports,
endPort ranges, hostNetwork and terminated pods, dual-stack pods, and external
addresses that may or may not belong to a pod.

Every state is one the API server would accept: label keys/values, port names
(unique within a pod) and endPort ranges are valid, and pod addresses are
unique across pods, except that hostNetwork pods carry their node's addresses,
as they do in a real cluster; so the state always lists both nodes with their
addresses.

Hypothesis leans towards the first choice and towards zeros, and shrinks that
way too: the first branch of every ``one_of`` and ``sampled_from`` here is the
simple case (empty selector, TCP, no hostNetwork, Running...).
"""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from rules.cluster_policy import Action, ClusterNetworkPolicy, ClusterPeer, ClusterRule, PodsSelector
from rules.cluster_policy import Tier as ClusterTier
from rules.model import (
    NAMESPACE_NAME_LABEL,
    ClusterState,
    ContainerPort,
    Direction,
    IPBlock,
    LabelSelector,
    NamedPort,
    Namespace,
    NetworkPolicy,
    Node,
    Peer,
    Pod,
    PolicyPort,
    PolicyRule,
    PortRange,
    L4Protocol,
    Requirement,
)

# --- the universe ------------------------------------------------------------

NAMESPACE_NAMES = ("ns-a", "ns-b", "ns-c")
NAMESPACE_LABEL_UNIVERSE = {"team": ("a", "b"), "env": ("prod", "dev")}
POD_LABEL_UNIVERSE = {"app": ("web", "api", "db"), "tier": ("fe", "be")}

NODE_NAMES = ("n1", "n2")
NODE_IPS = {
    "n1": (ipaddress.ip_address("10.0.0.241"), ipaddress.ip_address("fd00::f1")),
    "n2": (ipaddress.ip_address("10.0.0.242"), ipaddress.ip_address("fd00::f2")),
}

# Host parts chosen to straddle the ipBlocks below: inside 10.0.0.0/28, inside
# 10.0.0.0/25 but not /28, and in the upper half of 10.0.0.0/24. 200 is also
# one of the external addresses, so sometimes "external" 10.0.0.200 is a pod.
POD_V4_HOSTS = (3, 9, 17, 60, 127, 128, 150, 200, 254)
POD_V6_HOSTS = (0x1, 0x2, 0x3, 0x10, 0x11, 0xA0, 0xFF)

EXTERNAL_V4 = ("10.0.0.200", "192.0.2.1")
EXTERNAL_V6 = ("fd00::ff", "2001:db8::1")
EXTERNAL_IPS = tuple(ipaddress.ip_address(a) for a in EXTERNAL_V4 + EXTERNAL_V6)

PORT_NAMES = ("http", "dns", "metrics")
CONTAINER_PORT_NUMBERS = (53, 80, 8080, 9090)
FLOW_PORTS = (53, 80, 81, 8080, 9090)
FLOW_PROTOCOLS = (L4Protocol.TCP, L4Protocol.UDP)

IP_BLOCKS = (
    IPBlock(ipaddress.ip_network("10.0.0.0/25")),
    IPBlock(ipaddress.ip_network("10.0.0.0/24"), (ipaddress.ip_network("10.0.0.0/28"),)),
    IPBlock(ipaddress.ip_network("fd00::/64")),
    IPBlock(ipaddress.ip_network("fd00::/64"), (ipaddress.ip_network("fd00::/124"),)),
    IPBlock(ipaddress.ip_network("192.0.2.0/24")),
    IPBlock(
        ipaddress.ip_network("0.0.0.0/0"),
        (ipaddress.ip_network("10.0.0.0/25"), ipaddress.ip_network("10.0.0.240/28")),
    ),
)


# --- selectors ---------------------------------------------------------------
# Strategies are built once at import: building them inside composites on
# every draw costs more than the drawing itself.


def label_maps(universe: dict[str, tuple[str, ...]]) -> st.SearchStrategy[dict[str, str]]:
    """A random subset of the keys, each with one of its values."""
    return st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in universe.items()})


OPERATORS = st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist"))


def requirements(universe: dict[str, tuple[str, ...]]) -> st.SearchStrategy[Requirement]:
    # "zone" is never set on anything: Exists/In on it never match, NotIn/DoesNotExist always do.
    by_key = {**universe, "zone": ("x", "y")}
    values = {k: st.lists(st.sampled_from(v), min_size=1, max_size=2, unique=True).map(tuple) for k, v in by_key.items()}
    keys = st.sampled_from(sorted(by_key))

    @st.composite
    def requirement(draw) -> Requirement:
        key, op = draw(keys), draw(OPERATORS)
        return Requirement(key, op, draw(values[key]) if op in ("In", "NotIn") else ())

    return requirement()


def label_selectors(universe: dict[str, tuple[str, ...]]) -> st.SearchStrategy[LabelSelector]:
    """Mostly broad selectors (empty, one label, one expression), so that
    policies isolate pods and peers name pods often; sometimes narrow ones."""
    labels = label_maps(universe).map(lambda m: tuple(sorted(m.items())))
    exprs = st.lists(requirements(universe), max_size=2).map(tuple)
    return st.one_of(
        st.just(LabelSelector()),
        st.sampled_from([((k, v),) for k, vs in universe.items() for v in vs]).map(LabelSelector),
        requirements(universe).map(lambda r: LabelSelector((), (r,))),
        st.builds(LabelSelector, match_labels=labels, match_expressions=exprs),
    )


POD_SELECTORS = label_selectors(POD_LABEL_UNIVERSE)
NAMESPACE_SELECTORS = label_selectors({**NAMESPACE_LABEL_UNIVERSE, NAMESPACE_NAME_LABEL: NAMESPACE_NAMES})


# --- namespaces and pods -----------------------------------------------------

NAMESPACE_NAME_LISTS = st.lists(st.sampled_from(NAMESPACE_NAMES), min_size=1, max_size=3, unique=True)
NAMESPACE_LABEL_MAPS = label_maps(NAMESPACE_LABEL_UNIVERSE)
POD_LABELS = label_maps(POD_LABEL_UNIVERSE).map(lambda m: tuple(sorted(m.items())))
PROTOCOLS = st.sampled_from(FLOW_PROTOCOLS)
PORT_NUMBERS = st.sampled_from(CONTAINER_PORT_NUMBERS)
PORT_NAME_LISTS = st.lists(st.sampled_from(PORT_NAMES), max_size=3, unique=True)
# About one time in ten, and False when shrinking (which heads for 0). Not
# ``n == 0``: deep inside a large example Hypothesis leans to zeros.
RARELY = st.integers(0, 9).map(lambda n: n == 7)
NODE_CHOICES = st.sampled_from(NODE_NAMES)
V4_HOST_LISTS = {n: st.lists(st.sampled_from(POD_V4_HOSTS), min_size=n, max_size=n, unique=True) for n in range(2, 7)}
V6_HOST_LISTS = {n: st.lists(st.sampled_from(POD_V6_HOSTS), min_size=n, max_size=n, unique=True) for n in range(2, 7)}


@st.composite
def namespaces(draw) -> tuple[Namespace, ...]:
    out = []
    for name in draw(NAMESPACE_NAME_LISTS):
        labels = draw(NAMESPACE_LABEL_MAPS)
        labels[NAMESPACE_NAME_LABEL] = name
        out.append(Namespace(name, tuple(sorted(labels.items()))))
    return tuple(out)


@st.composite
def _container_ports(draw) -> tuple[ContainerPort, ...]:
    # Names are unique within a pod, as the API requires.
    ports = [ContainerPort(draw(PORT_NUMBERS), draw(PROTOCOLS), name) for name in draw(PORT_NAME_LISTS)]
    if draw(st.booleans()):  # an unnamed port: never matches a named policy port
        ports.append(ContainerPort(draw(PORT_NUMBERS), draw(PROTOCOLS)))
    return tuple(ports)


CONTAINER_PORTS = _container_ports()


@st.composite
def pods(draw, namespace_names: tuple[str, ...]) -> tuple[Pod, ...]:
    n = draw(st.integers(2, 6))
    v4_hosts, v6_hosts = draw(V4_HOST_LISTS[n]), draw(V6_HOST_LISTS[n])
    ns_choices = st.sampled_from(namespace_names)
    out = []
    for i in range(n):
        node = draw(NODE_CHOICES)
        host_network = draw(RARELY)
        if host_network:  # a hostNetwork pod has its node's addresses
            ips = NODE_IPS[node]
        else:
            ips = (ipaddress.ip_address(f"10.0.0.{v4_hosts[i]}"),)
            if draw(st.booleans()):
                ips += (ipaddress.ip_address(f"fd00::{v6_hosts[i]:x}"),)
        out.append(
            Pod(
                namespace=draw(ns_choices),
                name=f"pod-{i}",
                labels=draw(POD_LABELS),
                node=node,
                host_network=host_network,
                ips=ips,
                ports=draw(CONTAINER_PORTS),
                phase="Succeeded" if draw(RARELY) else "Running",
                uid=f"uid-{i}",
            )
        )
    return tuple(out)


# --- policies ----------------------------------------------------------------

PEERS = st.one_of(
    st.builds(Peer, pod_selector=POD_SELECTORS),
    st.builds(Peer, namespace_selector=NAMESPACE_SELECTORS),
    st.builds(Peer, pod_selector=POD_SELECTORS, namespace_selector=NAMESPACE_SELECTORS),
    st.builds(Peer, ip_block=st.sampled_from(IP_BLOCKS)),
)

# SCTP rarely: it must never match the TCP/UDP flows asked about.
POLICY_PROTOCOLS = st.sampled_from((L4Protocol.TCP, L4Protocol.UDP) * 5 + (L4Protocol.SCTP,))
PORT_KINDS = st.sampled_from(("all", "number", "range", "name"))
# "grpc" is never a container port name: such a port never matches.
POLICY_PORT_NAMES = st.sampled_from(PORT_NAMES + ("grpc",))
POLICY_PORT_NUMBERS = st.sampled_from(CONTAINER_PORT_NUMBERS + (81,))
END_PORTS = {p: st.sampled_from([e for e in (80, 81, 8080, 9090, 65535) if e >= p]) for p in CONTAINER_PORT_NUMBERS + (81,)}


@st.composite
def _policy_ports(draw) -> PolicyPort:
    protocol, kind = draw(POLICY_PROTOCOLS), draw(PORT_KINDS)
    if kind == "all":
        return PolicyPort(protocol)
    if kind == "name":
        return PolicyPort(protocol, draw(POLICY_PORT_NAMES))
    port = draw(POLICY_PORT_NUMBERS)
    if kind == "number":
        return PolicyPort(protocol, port)
    return PolicyPort(protocol, port, draw(END_PORTS[port]))  # endPort >= port, as the API requires


POLICY_PORTS = _policy_ports()
RULES = st.builds(
    PolicyRule,
    peers=st.lists(PEERS, max_size=2).map(tuple),
    ports=st.lists(POLICY_PORTS, max_size=2).map(tuple),
)
RULE_LISTS = st.lists(RULES, max_size=2).map(tuple)
POLICY_TYPES = st.sets(st.sampled_from(tuple(Direction)), min_size=1).map(frozenset)


@st.composite
def policies(draw, namespace_names: tuple[str, ...]) -> tuple[NetworkPolicy, ...]:
    ns_choices = st.sampled_from(namespace_names)
    return tuple(
        NetworkPolicy(
            namespace=draw(ns_choices),
            name=f"np-{i}",
            pod_selector=draw(POD_SELECTORS),
            policy_types=draw(POLICY_TYPES),
            ingress=draw(RULE_LISTS),
            egress=draw(RULE_LISTS),
        )
        for i in range(0 if draw(RARELY) else draw(st.integers(1, 4)))
    )


# --- ClusterNetworkPolicies --------------------------------------------------
# Few priorities, so that ties (broken by name) come up; networks are the
# ipBlocks' CIDRs without their excepts.

NETWORKS = tuple(sorted({b.cidr for b in IP_BLOCKS}, key=str))
PODS_SELECTORS = st.builds(PodsSelector, namespaces=st.none() | NAMESPACE_SELECTORS, pods=POD_SELECTORS)
INGRESS_CLUSTER_PEERS = st.one_of(
    st.builds(ClusterPeer, pods=st.builds(PodsSelector, namespaces=NAMESPACE_SELECTORS, pods=st.just(LabelSelector()))),
    st.builds(ClusterPeer, pods=PODS_SELECTORS),
)
EGRESS_CLUSTER_PEERS = st.one_of(
    INGRESS_CLUSTER_PEERS,
    st.builds(ClusterPeer, networks=st.lists(st.sampled_from(NETWORKS), min_size=1, max_size=2, unique=True).map(tuple)),
    st.builds(ClusterPeer, nodes=label_selectors({"zone": ("a", "b")})),
)


@st.composite
def _cluster_ports(draw) -> tuple:
    """One ``protocols`` entry: a port or range of one protocol, or a named port (one NamedPort per protocol)."""
    if draw(RARELY):
        name = draw(POLICY_PORT_NAMES)
        return tuple(NamedPort(protocol, name) for protocol in L4Protocol)
    protocol, first = draw(POLICY_PROTOCOLS), draw(POLICY_PORT_NUMBERS)
    return (PortRange(protocol, first, draw(END_PORTS[first]) if draw(st.booleans()) else first),)


def _cluster_rules(peers: st.SearchStrategy) -> st.SearchStrategy:
    rule = st.builds(
        ClusterRule,
        name=st.sampled_from(("", "r")),
        action=st.sampled_from(tuple(Action)),
        peers=st.lists(peers, min_size=1, max_size=2).map(tuple),
        ports=st.lists(_cluster_ports(), max_size=2).map(lambda entries: tuple(p for entry in entries for p in entry)),
    )
    return st.lists(rule, max_size=3).map(tuple)


@st.composite
def cluster_policies(draw) -> tuple[ClusterNetworkPolicy, ...]:
    return tuple(
        ClusterNetworkPolicy(
            name=f"cnp-{i}",
            tier=draw(st.sampled_from(tuple(ClusterTier))),
            priority=draw(st.sampled_from((0, 1, 5))),
            subject=draw(PODS_SELECTORS),
            ingress=draw(_cluster_rules(INGRESS_CLUSTER_PEERS)),
            egress=draw(_cluster_rules(EGRESS_CLUSTER_PEERS)),
        )
        for i in range(draw(st.integers(1, 4)))
    )


NODE_LABELS = {"n1": (("zone", "a"),), "n2": (("zone", "b"),)}
NODES = tuple(Node(name, NODE_IPS[name], NODE_LABELS[name]) for name in NODE_NAMES)


@st.composite
def cluster_parts(draw) -> tuple[tuple[Namespace, ...], tuple[Pod, ...], tuple[NetworkPolicy, ...], tuple[Node, ...]]:
    """The pieces of a state, unsorted, for tests that build it themselves."""
    nss = draw(namespaces())
    names = tuple(n.name for n in nss)
    return nss, draw(pods(names)), draw(policies(names)), NODES


cluster_states = cluster_parts().map(lambda parts: ClusterState.build(*parts))


# --- flows -------------------------------------------------------------------

Flow = tuple  # (src, dst, port, protocol); src/dst a Pod or an address string

FAMILIES = st.sampled_from((4, 4, 6))
FLOW_PORT_CHOICES = st.sampled_from(FLOW_PORTS)


def _addresses(end: Pod | str) -> set:
    return set(end.ips) if isinstance(end, Pod) else {ipaddress.ip_address(end)}


@st.composite
def flows(draw, state: ClusterState) -> Flow:
    """A flow the evaluator accepts: both ends resolve to one IP family.

    Ends are pods (passed as ``Pod``: the evaluator picks the address), pod or
    node addresses as strings, or external addresses (one of which may be a
    pod's). Two pods make an IPv4 flow even when family 6 was drawn: the
    evaluator takes the first family both have, and every pod has IPv4.
    A pod's traffic to itself is drawn now and then, not one time in five;
    and the port is often one the destination pod declares, so that named
    policy ports get to match.
    """
    family = draw(FAMILIES)
    fam_pods = [p for p in state.pods if any(ip.version == family for ip in p.ips)]
    addresses = sorted(
        {str(ip) for p in state.pods for ip in p.ips if ip.version == family}
        | {str(ip) for n in state.nodes for ip in n.ips if ip.version == family}
        | {str(ip) for ip in EXTERNAL_IPS if ip.version == family},
        key=lambda a: ipaddress.ip_address(a),
    )
    src = draw(st.sampled_from(fam_pods + addresses))
    if draw(RARELY):
        dst = src
    else:
        dst = draw(st.sampled_from([d for d in fam_pods + addresses if not _addresses(d) & _addresses(src)]))
    dst_pod = dst if isinstance(dst, Pod) else next((p for p in state.pods if ipaddress.ip_address(dst) in p.ips), None)
    if dst_pod is not None and dst_pod.ports and draw(st.booleans()):
        declared = draw(st.sampled_from(dst_pod.ports))
        return src, dst, declared.port, declared.protocol
    return src, dst, draw(FLOW_PORT_CHOICES), draw(PROTOCOLS)


@st.composite
def states_and_flows(draw, max_flows: int = 8, tiered: bool = False) -> tuple[ClusterState, list[Flow]]:
    """``tiered``: with ClusterNetworkPolicies too."""
    state = draw(cluster_states)
    if tiered:
        state = state.with_objects(cluster_policies=draw(cluster_policies()))
    return state, draw(st.lists(flows(state), min_size=2, max_size=max_flows))
