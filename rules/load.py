"""Cluster state from the dicts the Kubernetes API returns (files are read, and
YAML parsed, by ``enforcer.sources.manifests``).

Every object is validated as the API server would; an invalid object raises
``InvalidObject`` naming the object and each offending field path, e.g.
``x/deny-all: spec.ingress[0].ports[1].endPort: must not be less than port``.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Iterable, Iterator

from rules import cluster_policy, validation
from rules.model import (
    ClusterState,
    ContainerPort,
    Direction,
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    Namespace,
    NAMESPACE_NAME_LABEL,
    Node,
    Peer,
    Pod,
    PolicyPort,
    PolicyRule,
    L4Protocol,
    Requirement,
    labels_of,
)


class InvalidObject(ValueError):
    """An object the API server would reject; the message names object and fields."""


class _Fields:
    """Reads one object's fields while collecting errors against their paths."""

    def __init__(self, obj_name: str) -> None:
        self.obj_name = obj_name
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def check(self, path: str, messages: list[str]) -> bool:
        for m in messages:
            self.error(path, m)
        return not messages

    def raise_if_any(self) -> None:
        if self.errors:
            raise InvalidObject(f"{self.obj_name}: " + "; ".join(self.errors))

    def typed(self, value: Any, path: str, kind: type, default: Any) -> Any:
        """``value`` when it has the expected JSON type, else ``default`` and an error."""
        if value is None:
            return default
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            self.error(path, f"must be {_TYPE_NAMES[kind]}")
            return default
        return value

    def mapping(self, value: Any, path: str) -> dict:
        return self.typed(value, path, dict, {})

    def items(self, value: Any, path: str) -> list:
        return self.typed(value, path, list, [])

    def string(self, value: Any, path: str) -> str | None:
        return self.typed(value, path, str, None)


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "a boolean"}


def _labels(f: _Fields, value: Any, path: str) -> dict[str, str]:
    labels = f.mapping(value, path)
    for k, v in labels.items():
        f.check(f"{path}.{k}", validation.qualified_name(str(k)))
        if f.string(v, f"{path}.{k}") is not None:
            f.check(f"{path}.{k}", validation.label_value(v))
    return {str(k): v for k, v in labels.items() if isinstance(v, str)}


def _selector(f: _Fields, value: Any, path: str) -> LabelSelector:
    raw = f.mapping(value, path)
    for unknown in set(raw) - {"matchLabels", "matchExpressions"}:
        f.error(f"{path}.{unknown}", "unknown field")
    match_labels = _labels(f, raw.get("matchLabels"), f"{path}.matchLabels")
    requirements = []
    for i, expr in enumerate(f.items(raw.get("matchExpressions"), f"{path}.matchExpressions")):
        epath = f"{path}.matchExpressions[{i}]"
        expr = f.mapping(expr, epath)
        key = f.string(expr.get("key"), f"{epath}.key")
        operator = f.string(expr.get("operator"), f"{epath}.operator")
        values = [v for v in f.items(expr.get("values"), f"{epath}.values") if f.string(v, f"{epath}.values") is not None]
        if key is None:
            f.error(f"{epath}.key", "Required value")
        else:
            f.check(f"{epath}.key", validation.qualified_name(key))
        if operator in ("In", "NotIn"):
            if not values:
                f.error(f"{epath}.values", "must be specified when `operator` is 'In' or 'NotIn'")
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                f.error(f"{epath}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        else:
            f.error(f"{epath}.operator", f"not a valid selector operator: {operator!r}")
            continue
        for j, v in enumerate(values):
            f.check(f"{epath}.values[{j}]", validation.label_value(v))
        if key is not None:
            requirements.append(Requirement(key, operator, tuple(values)))
    return LabelSelector(labels_of(match_labels), tuple(requirements)).canonical()


def _network(f: _Fields, value: Any, path: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    text = f.string(value, path)
    if text is None:
        f.error(path, "Required value")
        return None
    try:
        if "%" in text:  # an IPv6 zone: the API refuses it, and nft cannot express it
            raise ValueError(text)
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        f.error(path, f"must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64): {text!r}")
        return None


def _ip_block(f: _Fields, value: Any, path: str) -> IPBlock | None:
    raw = f.mapping(value, path)
    cidr = _network(f, raw.get("cidr"), f"{path}.cidr")
    excepts = []
    for i, text in enumerate(f.items(raw.get("except"), f"{path}.except")):
        epath = f"{path}.except[{i}]"
        net = _network(f, text, epath)
        if net is None or cidr is None:
            continue
        if net.version != cidr.version or not net.subnet_of(cidr) or net.prefixlen <= cidr.prefixlen:
            f.error(epath, "must be a strict subset of `cidr`")
            continue
        excepts.append(net)
    if cidr is None:
        return None
    return IPBlock(cidr, tuple(sorted(set(excepts), key=lambda n: (n.network_address, n.prefixlen))))


def _peer(f: _Fields, value: Any, path: str) -> Peer | None:
    raw = f.mapping(value, path)
    pod_sel = _selector(f, raw["podSelector"], f"{path}.podSelector") if raw.get("podSelector") is not None else None
    ns_sel = (
        _selector(f, raw["namespaceSelector"], f"{path}.namespaceSelector") if raw.get("namespaceSelector") is not None else None
    )
    block = _ip_block(f, raw["ipBlock"], f"{path}.ipBlock") if raw.get("ipBlock") is not None else None
    if pod_sel is None and ns_sel is None and raw.get("ipBlock") is None:
        f.error(path, "must specify a peer")
        return None
    if raw.get("ipBlock") is not None and (pod_sel is not None or ns_sel is not None):
        f.error(path, "may not specify both ipBlock and another peer")
        return None
    return Peer(pod_sel, ns_sel, block)


def _protocol(f: _Fields, value: Any, path: str) -> L4Protocol:
    text = f.string(value, path)
    if text is None:
        return L4Protocol.TCP
    try:
        return L4Protocol(text)
    except ValueError:
        f.error(path, f'Unsupported value: "{text}": supported values: "TCP", "UDP", "SCTP"')
        return L4Protocol.TCP


def _policy_port(f: _Fields, value: Any, path: str) -> PolicyPort:
    raw = f.mapping(value, path)
    protocol = _protocol(f, raw.get("protocol"), f"{path}.protocol")
    port = raw.get("port")
    end_port = f.typed(raw.get("endPort"), f"{path}.endPort", int, None)
    if isinstance(port, bool) or not isinstance(port, (int, str, type(None))):
        f.error(f"{path}.port", "must be an integer or a port name")
        port = None
    elif isinstance(port, int):
        f.check(f"{path}.port", validation.port_number(port))
        if end_port is not None:
            if end_port < port:
                f.error(f"{path}.endPort", "must not be less than port")
            f.check(f"{path}.endPort", validation.port_number(end_port))
    elif isinstance(port, str):
        if end_port is not None:
            f.error(f"{path}.endPort", "may not be specified when `port` is non-numeric")
        f.check(f"{path}.port", validation.port_name(port))
    elif end_port is not None:
        f.error(f"{path}.endPort", "may not be specified when `port` is not specified")
    return PolicyPort(protocol, port, end_port)


def _rule(f: _Fields, value: Any, path: str, direction: Direction) -> PolicyRule:
    raw = f.mapping(value, path)
    peers_key = direction.peers_field
    for unknown in set(raw) - {peers_key, "ports"}:
        f.error(f"{path}.{unknown}", "unknown field")
    ports = tuple(_policy_port(f, p, f"{path}.ports[{i}]") for i, p in enumerate(f.items(raw.get("ports"), f"{path}.ports")))
    peers = tuple(
        _peer(f, p, f"{path}.{peers_key}[{i}]") for i, p in enumerate(f.items(raw.get(peers_key), f"{path}.{peers_key}"))
    )
    return PolicyRule(tuple(p for p in peers if p is not None), ports)


def _metadata(f: _Fields, obj: dict, namespaced: bool) -> tuple[str, str, dict[str, str]]:
    meta = f.mapping(obj.get("metadata"), "metadata")
    name = f.string(meta.get("name"), "metadata.name")
    if not name:
        f.error("metadata.name", "Required value: name or generateName is required")
        name = ""
    namespace = ""
    if namespaced:
        namespace = f.string(meta.get("namespace"), "metadata.namespace") or "default"
        f.check("metadata.namespace", validation.dns_label(namespace))
    labels = _labels(f, meta.get("labels"), "metadata.labels")
    return namespace, name, labels


def _object_name(obj: dict) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name") or "<unnamed>"
    kind = obj.get("kind") or "object"
    if kind in ("Namespace", "Node"):
        return f"{kind.lower()} {name}"
    return f"{meta.get('namespace') or 'default'}/{name}"


def parse_network_policy(obj: dict) -> NetworkPolicy:
    f = _Fields(_object_name(obj))
    namespace, name, _ = _metadata(f, obj, namespaced=True)
    if name:
        f.check("metadata.name", validation.dns_subdomain(name))
    spec = f.mapping(obj.get("spec"), "spec")
    for unknown in set(spec) - {"podSelector", "policyTypes", "ingress", "egress"}:
        f.error(f"spec.{unknown}", "unknown field")
    pod_selector = _selector(f, spec.get("podSelector"), "spec.podSelector")
    rules = {
        d: tuple(_rule(f, r, f"spec.{d.field}[{i}]", d) for i, r in enumerate(f.items(spec.get(d.field), f"spec.{d.field}")))
        for d in Direction
    }
    raw_types = f.items(spec.get("policyTypes"), "spec.policyTypes")
    if len(raw_types) > 2:
        f.error("spec.policyTypes", "may not specify more than two policyTypes")
    types = set()
    for i, t in enumerate(raw_types):
        try:
            types.add(Direction(t))
        except ValueError:
            f.error(f"spec.policyTypes[{i}]", f'Unsupported value: "{t}": supported values: "Ingress", "Egress"')
    if not raw_types:
        # The API's defaulting: Ingress always, Egress only when egress rules exist.
        types = {Direction.INGRESS} | ({Direction.EGRESS} if rules[Direction.EGRESS] else set())
    f.raise_if_any()
    return NetworkPolicy(namespace, name, pod_selector, frozenset(types), rules[Direction.INGRESS], rules[Direction.EGRESS])


def _container_ports(f: _Fields, spec: dict) -> tuple[ContainerPort, ...]:
    ports = []
    for i, c in enumerate(f.items(spec.get("containers"), "spec.containers")):
        cpath = f"spec.containers[{i}]"
        c = f.mapping(c, cpath)
        for j, p in enumerate(f.items(c.get("ports"), f"{cpath}.ports")):
            ppath = f"{cpath}.ports[{j}]"
            p = f.mapping(p, ppath)
            number = f.typed(p.get("containerPort"), f"{ppath}.containerPort", int, None)
            if number is None:
                f.error(f"{ppath}.containerPort", "Required value")
                continue
            f.check(f"{ppath}.containerPort", validation.port_number(number))
            name = f.string(p.get("name"), f"{ppath}.name")
            if name is not None:
                f.check(f"{ppath}.name", validation.port_name(name))
            ports.append(ContainerPort(number, _protocol(f, p.get("protocol"), f"{ppath}.protocol"), name))
    return tuple(ports)


def _ips(f: _Fields, texts: Iterable[tuple[str, Any]]) -> tuple:
    ips = []
    for path, text in texts:
        try:
            ip = ipaddress.ip_address(f.string(text, path) or "")
            if getattr(ip, "scope_id", None):  # an IPv6 zone: the API refuses it, and nft cannot express it
                raise ValueError(text)
        except ValueError:
            f.error(path, f"must be a valid IP address: {text!r}")
            continue
        if ip not in ips:
            ips.append(ip)
    return tuple(ips)


def parse_pod(obj: dict) -> Pod:
    f = _Fields(_object_name(obj))
    namespace, name, labels = _metadata(f, obj, namespaced=True)
    spec = f.mapping(obj.get("spec"), "spec")
    status = f.mapping(obj.get("status"), "status")
    pod_ips = f.items(status.get("podIPs"), "status.podIPs")
    if pod_ips:
        texts = [(f"status.podIPs[{i}].ip", f.mapping(e, f"status.podIPs[{i}]").get("ip")) for i, e in enumerate(pod_ips)]
    else:
        texts = [("status.podIP", status["podIP"])] if status.get("podIP") else []
    if name:
        f.check("metadata.name", validation.dns_subdomain(name))
    node = f.string(spec.get("nodeName"), "spec.nodeName")
    if node:
        f.check("spec.nodeName", validation.dns_subdomain(node))
    pod = Pod(
        namespace=namespace,
        name=name,
        labels=labels_of(labels),
        node=node,
        host_network=bool(f.typed(spec.get("hostNetwork"), "spec.hostNetwork", bool, False)),
        ips=_ips(f, texts),
        ports=_container_ports(f, spec),
        phase=f.string(status.get("phase"), "status.phase") or "Running",
        uid=f.string(f.mapping(obj.get("metadata"), "metadata").get("uid"), "metadata.uid") or "",
    )
    f.raise_if_any()
    return pod


def parse_namespace(obj: dict) -> Namespace:
    f = _Fields(_object_name(obj))
    _, name, labels = _metadata(f, obj, namespaced=False)
    if name:
        f.check("metadata.name", validation.dns_label(name))
    f.raise_if_any()
    labels.setdefault(NAMESPACE_NAME_LABEL, name)  # the API server always sets it
    return Namespace(name, labels_of(labels))


def parse_node(obj: dict) -> Node:
    f = _Fields(_object_name(obj))
    _, name, labels = _metadata(f, obj, namespaced=False)
    if name:
        f.check("metadata.name", validation.dns_subdomain(name))
    addresses = f.items(f.mapping(obj.get("status"), "status").get("addresses"), "status.addresses")
    texts = [
        (f"status.addresses[{i}].address", a.get("address"))
        for i, a in enumerate(addresses)
        if isinstance(a, dict) and a.get("type") in ("InternalIP", "ExternalIP")
    ]
    node = Node(name, _ips(f, texts), labels_of(labels))
    f.raise_if_any()
    return node


def flatten(objects: Iterable[Any], origin: str) -> Iterator[dict]:
    """Objects one by one, with ``kind: List`` (and ``*List``) unwrapped."""
    for i, obj in enumerate(objects):
        if obj is None:
            continue  # an empty YAML document
        if not isinstance(obj, dict):
            raise InvalidObject(f"{origin}: document {i}: must be an object, not {type(obj).__name__}")
        kind = obj.get("kind")
        if not isinstance(kind, str) or not kind:
            raise InvalidObject(f"{origin}: document {i} ({_object_name(obj)}): kind: Required value")
        if kind.endswith("List"):
            items = obj.get("items")
            if not isinstance(items, list):
                raise InvalidObject(f"{origin}: document {i} ({kind}): items: must be a list")
            item_kind = kind[: -len("List")]
            yield from flatten(({"kind": item_kind, **x} if isinstance(x, dict) and item_kind else x for x in items), origin)
        else:
            yield obj


def state_from_objects(objects: Iterable[Any], origin: str = "input") -> ClusterState:
    """A cluster state from API-shaped dicts; kinds the engine does not use are skipped."""
    buckets: dict[str, list] = {kind: [] for kind in _PARSERS}
    seen: set[tuple[str, str]] = set()
    for obj in flatten(objects, origin):
        parser = _PARSERS.get(obj["kind"])
        if parser is None:
            continue
        parsed = parser(obj)
        ident = (obj["kind"], getattr(parsed, "key", getattr(parsed, "name", "")))
        if ident in seen:
            raise InvalidObject(f"{origin}: {obj['kind']} {ident[1]}: defined more than once")
        seen.add(ident)
        buckets[obj["kind"]].append(parsed)
    return ClusterState.build(
        namespaces=buckets["Namespace"],
        pods=buckets["Pod"],
        policies=buckets["NetworkPolicy"],
        nodes=buckets["Node"],
        cluster_policies=buckets["ClusterNetworkPolicy"],
    )


def parse_cluster_network_policy(obj: dict) -> cluster_policy.ClusterNetworkPolicy:
    """A ClusterNetworkPolicy as the CRD validates it; its label selectors as
    NetworkPolicy's are (the CRD itself leaves operators and values unchecked)."""

    def selector(error: Callable[[str, str], None], value: Any, path: str) -> LabelSelector:
        f = _Fields("")
        parsed = _selector(f, value, path)
        for e in f.errors:
            error(*e.split(": ", 1))
        return parsed

    try:
        return cluster_policy.parse_cluster_network_policy(obj, selector)
    except cluster_policy.InvalidClusterPolicy as e:
        raise InvalidObject(str(e)) from e


_PARSERS: dict[str, Callable[[dict], object]] = {
    "Namespace": parse_namespace,
    "Pod": parse_pod,
    "NetworkPolicy": parse_network_policy,
    "Node": parse_node,
    "ClusterNetworkPolicy": parse_cluster_network_policy,
}
