"""Hypothesis strategies for small random cluster states and flows.

States are built straight from the frozen dataclasses of ``rules.model`` (no
YAML, no loader), kept deliberately tiny so that a few hundred examples run in
seconds while still hitting the interesting corners of the spec: selectors with
every operator, peers of every shape, ipBlocks with excepts, named ports,
endPort ranges, hostNetwork and terminated pods, dual-stack pods, and external
addresses that may or may not belong to a pod.

Every state is one the API server would accept: label keys/values, port names
and endPort ranges are valid, and pod addresses are unique across pods.
hostNetwork pods carry their node's addresses, as they do in a real cluster,
so the state always lists both nodes with their IPs.
"""
from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from rules.model import (
    NAMESPACE_NAME_LABEL,
    ClusterState,
    ContainerPort,
    Direction,
    IPBlock,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    Node,
    Peer,
    Pod,
    PolicyPort,
    PolicyRule,
    Protocol,
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
FLOW_PROTOCOLS = (Protocol.TCP, Protocol.UDP)

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


def label_maps(universe: dict[str, tuple[str, ...]]) -> st.SearchStrategy[dict[str, str]]:
    """A random subset of the keys, each with one of its values."""
    return st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in universe.items()})


@st.composite
def requirements(draw, universe: dict[str, tuple[str, ...]]) -> Requirement:
    # "zone" is never set on anything: Exists/In on it never match, NotIn/DoesNotExist always do.
    key = draw(st.sampled_from(sorted(universe) + ["zone"]))
    values = universe.get(key, ("x", "y"))
    op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
    if op in ("In", "NotIn"):
        chosen = draw(st.lists(st.sampled_from(values), min_size=1, max_size=2, unique=True))
        return Requirement(key, op, tuple(chosen))
    return Requirement(key, op)


@st.composite
def label_selectors(draw, universe: dict[str, tuple[str, ...]]) -> LabelSelector:
    match_labels = draw(
        st.one_of(st.just({}), label_maps(universe).filter(lambda m: len(m) <= 1), label_maps(universe))
    )
    exprs = draw(st.lists(requirements(universe), max_size=2))
    return LabelSelector(tuple(sorted(match_labels.items())), tuple(exprs))


POD_SELECTORS = label_selectors(POD_LABEL_UNIVERSE)
NAMESPACE_SELECTORS = label_selectors(
    {**NAMESPACE_LABEL_UNIVERSE, NAMESPACE_NAME_LABEL: NAMESPACE_NAMES}
)


# --- namespaces and pods -----------------------------------------------------


@st.composite
def namespaces(draw) -> tuple[Namespace, ...]:
    names = draw(st.lists(st.sampled_from(NAMESPACE_NAMES), min_size=1, max_size=3, unique=True))
    out = []
    for name in names:
        labels = draw(label_maps(NAMESPACE_LABEL_UNIVERSE))
        labels[NAMESPACE_NAME_LABEL] = name
        out.append(Namespace(name, tuple(sorted(labels.items()))))
    return tuple(out)


@st.composite
def container_ports(draw) -> tuple[ContainerPort, ...]:
    names = draw(st.lists(st.sampled_from(PORT_NAMES), max_size=3, unique=True))
    ports = [
        ContainerPort(
            draw(st.sampled_from(CONTAINER_PORT_NUMBERS)),
            draw(st.sampled_from(FLOW_PROTOCOLS)),
            name,
        )
        for name in names
    ]
    if draw(st.booleans()):  # an unnamed port: never matches a named policy port
        ports.append(ContainerPort(draw(st.sampled_from(CONTAINER_PORT_NUMBERS)), draw(st.sampled_from(FLOW_PROTOCOLS))))
    return tuple(ports)


RARELY = st.integers(0, 9).map(lambda n: n == 0)


@st.composite
def pods(draw, namespace_names: tuple[str, ...]) -> tuple[Pod, ...]:
    n = draw(st.integers(2, 6))
    v4_hosts = draw(st.lists(st.sampled_from(POD_V4_HOSTS), min_size=n, max_size=n, unique=True))
    v6_hosts = draw(st.lists(st.sampled_from(POD_V6_HOSTS), min_size=n, max_size=n, unique=True))
    out = []
    for i in range(n):
        node = draw(st.sampled_from(NODE_NAMES))
        host_network = draw(RARELY)
        if host_network:
            ips = NODE_IPS[node]
        else:
            ips = (ipaddress.ip_address(f"10.0.0.{v4_hosts[i]}"),)
            if draw(st.booleans()):
                ips += (ipaddress.ip_address(f"fd00::{v6_hosts[i]:x}"),)
        out.append(
            Pod(
                namespace=draw(st.sampled_from(namespace_names)),
                name=f"pod-{i}",
                labels=tuple(sorted(draw(label_maps(POD_LABEL_UNIVERSE)).items())),
                node=node,
                host_network=host_network,
                ips=ips,
                ports=draw(container_ports()),
                phase="Succeeded" if draw(RARELY) else "Running",
                uid=f"uid-{i}",
            )
        )
    return tuple(out)


# --- policies ----------------------------------------------------------------


@st.composite
def peers(draw) -> Peer:
    kind = draw(st.sampled_from(("pod", "namespace", "both", "ipblock")))
    if kind == "pod":
        return Peer(pod_selector=draw(POD_SELECTORS))
    if kind == "namespace":
        return Peer(namespace_selector=draw(NAMESPACE_SELECTORS))
    if kind == "both":
        return Peer(pod_selector=draw(POD_SELECTORS), namespace_selector=draw(NAMESPACE_SELECTORS))
    return Peer(ip_block=draw(st.sampled_from(IP_BLOCKS)))


@st.composite
def policy_ports(draw) -> PolicyPort:
    # SCTP rarely: it must never match the TCP/UDP flows we ask about.
    protocol = Protocol.SCTP if draw(RARELY) else draw(st.sampled_from(FLOW_PROTOCOLS))
    kind = draw(st.sampled_from(("all", "number", "range", "name")))
    if kind == "all":
        return PolicyPort(protocol)
    if kind == "name":
        # "grpc" is never a container port name: such a port never matches.
        return PolicyPort(protocol, draw(st.sampled_from(PORT_NAMES + ("grpc",))))
    port = draw(st.sampled_from(CONTAINER_PORT_NUMBERS + (81,)))
    if kind == "number":
        return PolicyPort(protocol, port)
    end = draw(st.sampled_from([p for p in (80, 81, 8080, 9090, 65535) if p >= port]))
    return PolicyPort(protocol, port, end)


RULES = st.builds(
    PolicyRule,
    peers=st.lists(peers(), max_size=2).map(tuple),
    ports=st.lists(policy_ports(), max_size=2).map(tuple),
)

POLICY_TYPES = st.sets(st.sampled_from(tuple(Direction)), min_size=1).map(frozenset)


@st.composite
def policies(draw, namespace_names: tuple[str, ...]) -> tuple[NetworkPolicy, ...]:
    n = draw(st.integers(0, 4))
    return tuple(
        NetworkPolicy(
            namespace=draw(st.sampled_from(namespace_names)),
            name=f"np-{i}",
            pod_selector=draw(POD_SELECTORS),
            policy_types=draw(POLICY_TYPES),
            ingress=tuple(draw(st.lists(RULES, max_size=2))),
            egress=tuple(draw(st.lists(RULES, max_size=2))),
        )
        for i in range(n)
    )


NODES = tuple(Node(name, NODE_IPS[name]) for name in NODE_NAMES)


@st.composite
def cluster_parts(draw) -> tuple[tuple[Namespace, ...], tuple[Pod, ...], tuple[NetworkPolicy, ...], tuple[Node, ...]]:
    """The pieces of a state, unsorted, for tests that build it themselves."""
    nss = draw(namespaces())
    names = tuple(n.name for n in nss)
    return nss, draw(pods(names)), draw(policies(names)), NODES


cluster_states = cluster_parts().map(lambda parts: ClusterState.build(*parts))


# --- flows -------------------------------------------------------------------

Flow = tuple  # (src, dst, port, protocol); src/dst a Pod or an address string


@st.composite
def flows(draw, state: ClusterState) -> Flow:
    """A flow the evaluator accepts: both ends resolve to one IP family.

    Ends are pods (passed as ``Pod``, the evaluator picks the address), pod or
    node addresses as strings, or external addresses.
    """
    family = draw(st.sampled_from((4, 4, 6)))

    fam_pods = [p for p in state.pods if any(ip.version == family for ip in p.ips)]
    addresses = sorted(
        {str(ip) for p in state.pods for ip in p.ips if ip.version == family}
        | {str(ip) for n in state.nodes for ip in n.ips if ip.version == family}
        | {str(ip) for ip in EXTERNAL_IPS if ip.version == family}
    )
    end = st.one_of(st.sampled_from(fam_pods), st.sampled_from(addresses)) if fam_pods else st.sampled_from(addresses)
    # Two pods with family 6 drawn still make an IPv4 flow (the evaluator
    # takes the first family both pods have); either way the flow is valid.
    src, dst = draw(end), draw(end)
    return src, dst, draw(st.sampled_from(FLOW_PORTS)), draw(st.sampled_from(FLOW_PROTOCOLS))


@st.composite
def states_and_flows(draw, max_flows: int = 6) -> tuple[ClusterState, list[Flow]]:
    state = draw(cluster_states)
    return state, draw(st.lists(flows(state), min_size=1, max_size=max_flows))
