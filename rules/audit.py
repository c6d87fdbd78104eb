"""Map a node's live tables back to pods and policies: what ``nftpolicy dump`` shows.

Pure: it reads a ``Table`` (as ``rules.nft_json`` parses it from the kernel)
and names pods with what the caller knows (CNI records, cluster state). The
comments the translator writes on every rule are what make this possible.
"""

from __future__ import annotations

from typing import Any, Mapping

from rules.model import Direction
from rules.nft import Counter, Match, SetRef, Table, Verdict
from rules.naming import dispatch_map_name, is_cluster_tier_chain, is_named_port_set, named_port_of, policy_of
from rules.translate import FAMILIES

SCHEMA = "nftpolicy.dump/v2"


def _counts(statements) -> dict[str, int]:
    c = next((s for s in statements if isinstance(s, Counter)), Counter())
    return {"packets": c.packets, "bytes": c.bytes}


def _element_parts(e: Any) -> tuple:
    """An element's parts as text: ``("10.0.1.1", "8080")`` for ``10.0.1.1 . 8080``."""
    items = getattr(e, "items", None)
    return tuple(str(i) for i in items) if items is not None else (str(e.text() if hasattr(e, "text") else e),)


def _named_port(s, direction: Direction, own_ips: set[str], names: Mapping[str, str]) -> dict[str, Any]:
    """A named port as this pod meets it. Ingress: the number this pod gives the
    name (none: the rule matches nothing here). Egress: each destination pod
    that gives the name a number, with it."""
    protocol, name = named_port_of(s.name)
    pairs = [p for p in map(_element_parts, s.elements) if len(p) == 2]
    if direction is Direction.INGRESS:
        ports = sorted({int(port) for ip, port in pairs if ip in own_ips})
        return {"name": name, "protocol": protocol, "ports": ports, "matchesNothingHere": not ports}
    destinations = [f"{names[ip]} ({ip}) port {port}" if ip in names else f"{ip} port {port}" for ip, port in pairs]
    return {"name": name, "protocol": protocol, "destinations": destinations, "matchesNothingHere": not destinations}


def _rule_entry(
    table: Table, rule, direction: Direction, own_ips: set[str], names: Mapping[str, str], counted_for: list[str]
) -> dict[str, Any]:
    peers, named_ports = [], []
    for stmt in rule.statements:
        if isinstance(stmt, Match) and isinstance(stmt.right, SetRef):
            s = table.set(stmt.right.name)
            if s is None:
                continue
            if is_named_port_set(s.name):
                named_ports.append(_named_port(s, direction, own_ips, names))
                continue
            members = [_element_parts(e)[0] for e in s.elements]
            peers.append(
                {
                    "set": s.name,
                    "describes": s.comment,
                    "members": [f"{names[m]} ({m})" if m in names else m for m in members],
                }
            )
    match = " ".join(s.text() for s in rule.statements if not isinstance(s, (Counter, Verdict)))
    return {
        "rule": rule.comment,
        "match": match or "everything",
        "peers": peers,
        "namedPorts": named_ports,
        **_counts(rule.statements),
        "countedFor": counted_for,
    }


def _jumps(chain) -> list[tuple[Any, Verdict]]:
    return [(r, v) for r in (chain.rules if chain else ()) for v in r.statements if isinstance(v, Verdict) and v.kind == "jump"]


def _direction(
    table: Table,
    direction: Direction,
    chain_name: str | None,
    own_ips: set[str],
    names: Mapping[str, str],
    pods_of_chain: Mapping[str, list[str]],
) -> dict[str, Any]:
    if chain_name is None:
        return {"isolated": False, "policies": [], "clusterTiers": [], "rules": []}
    isolate = table.chain(chain_name)
    policies, tiers, rules, denied = [], [], [], {"packets": 0, "bytes": 0}
    for rule, verdict in _jumps(isolate):
        if is_cluster_tier_chain(verdict.target):
            tiers.append(rule.comment or verdict.target)  # "Admin tier ingress: cnp/NAME (PRIORITY), ..."
        else:
            policies.append(policy_of(rule.comment or verdict.target))
        chain = table.chain(verdict.target)
        rules += [
            _rule_entry(table, r, direction, own_ips, names, pods_of_chain.get(verdict.target, []))
            for r in (chain.rules if chain else ())
        ]
    for rule in isolate.rules if isolate else ():
        if any(isinstance(v, Verdict) and v.kind == "drop" for v in rule.statements):
            denied = _counts(rule.statements)
    return {
        "isolated": bool(policies),  # by NetworkPolicy; ClusterNetworkPolicy never isolates
        "policies": policies,
        "clusterTiers": tiers,
        "rules": rules,
        "denied": {**denied, "countedFor": pods_of_chain.get(chain_name, [])},
    }


def dump(table: Table, node: str, pods: Mapping[str, tuple[str, str | None]], names: Mapping[str, str]) -> dict[str, Any]:
    """``pods``: pod key -> (one of its IPs, its host interface); ``names``: IP -> pod key, to name peers.

    Counters belong to chains, and chains are shared: pods isolated by the same
    policies share an isolation chain (its drop counter), and a policy's chain
    serves every pod it isolates. So each figure says whose packets it counts
    (``countedFor``): more than one pod means it is not this pod's alone."""
    dispatch = {}
    for direction in Direction:
        for family in FAMILIES:
            s = table.set(dispatch_map_name(direction, family))
            for key, verdict in s.elements if s else ():
                dispatch[(direction, str(key))] = verdict.target
    chain_of = {(d, key): dispatch.get((d, ip)) for key, (ip, _) in pods.items() for d in Direction}
    pods_of_chain: dict[str, list[str]] = {}
    for (direction, key), isolate in sorted(chain_of.items(), key=lambda item: item[0][1]):
        if isolate is None:
            continue
        pods_of_chain.setdefault(isolate, []).append(key)
        for _, verdict in _jumps(table.chain(isolate)):
            counted = pods_of_chain.setdefault(verdict.target, [])
            if key not in counted:
                counted.append(key)
    entries = []
    for key, (_, ifname) in sorted(pods.items()):
        own = {i for i, k in names.items() if k == key}
        entries.append(
            {
                "pod": key,
                "ips": sorted(own),
                "interface": ifname,
                **{d.field: _direction(table, d, chain_of[(d, key)], own, names, pods_of_chain) for d in Direction},
            }
        )
    return {"schemaVersion": SCHEMA, "node": node, "pods": entries}


def _shared(pod: str, counted_for: list[str]) -> str:
    others = [p for p in counted_for if p != pod]
    return f", shared with {', '.join(others)}" if others else ""


def _named_port_text(n: dict[str, Any]) -> str:
    if n["matchesNothingHere"]:
        return f"named port {n['name']}/{n['protocol']}: matches nothing here (no pod gives it a number)"
    if "ports" in n:
        return f"named port {n['name']}/{n['protocol']}: port {', '.join(map(str, n['ports']))} on this pod"
    return f"named port {n['name']}/{n['protocol']}: {', '.join(n['destinations'])}"


def as_table(report: dict[str, Any]) -> str:
    """The report as text for people."""
    lines = [f"node {report['node']}"]
    for pod in report["pods"]:
        lines.append(f"\n{pod['pod']}  {', '.join(pod['ips'])}  {pod['interface'] or ''}".rstrip())
        for direction in ("ingress", "egress"):
            d = pod[direction]
            if not d["isolated"] and not d["clusterTiers"]:
                lines.append(f"  {direction}: not isolated")
                continue
            lines += [f"  {direction}: {tier}" for tier in d["clusterTiers"]]
            if d["isolated"]:
                denied = d["denied"]
                lines.append(
                    f"  {direction}: isolated by {', '.join(d['policies'])};"
                    f" denied {denied['packets']} packets{_shared(pod['pod'], denied['countedFor'])}"
                )
            for r in d["rules"]:
                counts = f"{r['packets']} packets, {r['bytes']} bytes{_shared(pod['pod'], r['countedFor'])}"
                lines.append(f"    {r['rule']}: {r['match']}  [{counts}]")
                for p in r["peers"]:
                    lines.append(f"      {p['describes']}: {', '.join(p['members']) or '(none)'}")
                for n in r["namedPorts"]:
                    lines.append(f"      {_named_port_text(n)}")
    return "\n".join(lines) + "\n"
