"""Map a node's live tables back to pods and policies: what ``nftpolicy dump`` shows.

Pure: it reads a ``Table`` (as ``rules.nft_json`` parses it from the kernel)
and names pods with what the caller knows (CNI records, cluster state). The
comments the translator writes on every rule are what make this possible.
"""

from __future__ import annotations

from typing import Any, Mapping

from rules.model import Direction
from rules.nft import Counter, Match, SetRef, Table, Verdict
from rules.naming import dispatch_map_name, is_named_port_set, policy_of
from rules.translate import FAMILIES

SCHEMA = "nftpolicy.dump/v1"


def _counts(statements) -> dict[str, int]:
    c = next((s for s in statements if isinstance(s, Counter)), Counter())
    return {"packets": c.packets, "bytes": c.bytes}


def _rule_entry(table: Table, rule, names: Mapping[str, str]) -> dict[str, Any]:
    peers = []
    for stmt in rule.statements:
        if isinstance(stmt, Match) and isinstance(stmt.right, SetRef):
            s = table.set(stmt.right.name)
            if s is not None and not is_named_port_set(s.name):
                members = [str(e.text() if hasattr(e, "text") else e) for e in s.elements]
                peers.append(
                    {
                        "set": s.name,
                        "describes": s.comment,
                        "members": [f"{names[m]} ({m})" if m in names else m for m in members],
                    }
                )
    match = " ".join(s.text() for s in rule.statements if not isinstance(s, (Counter, Verdict)))
    return {"rule": rule.comment, "match": match or "everything", "peers": peers, **_counts(rule.statements)}


def _direction(table: Table, chain_name: str | None, names: Mapping[str, str]) -> dict[str, Any]:
    if chain_name is None:
        return {"isolated": False, "policies": [], "rules": []}
    isolate = table.chain(chain_name)
    policies, rules, denied = [], [], {"packets": 0, "bytes": 0}
    for rule in isolate.rules if isolate else ():
        verdict = next((s for s in rule.statements if isinstance(s, Verdict)), None)
        if verdict and verdict.kind == "jump":
            policies.append(policy_of(rule.comment or verdict.target))
            chain = table.chain(verdict.target)
            rules += [_rule_entry(table, r, names) for r in (chain.rules if chain else ())]
        elif verdict and verdict.kind == "drop":
            denied = _counts(rule.statements)
    return {"isolated": True, "policies": policies, "rules": rules, "denied": denied}


def dump(table: Table, node: str, pods: Mapping[str, tuple[str, str | None]], names: Mapping[str, str]) -> dict[str, Any]:
    """``pods``: pod key -> (one of its IPs, its host interface); ``names``: IP -> pod key, to name peers."""
    dispatch = {}
    for direction in Direction:
        for family in FAMILIES:
            s = table.set(dispatch_map_name(direction, family))
            for key, verdict in s.elements if s else ():
                dispatch[(direction, str(key))] = verdict.target
    entries = []
    for key, (ip, ifname) in sorted(pods.items()):
        entries.append(
            {
                "pod": key,
                "ips": sorted(i for i, k in names.items() if k == key),
                "interface": ifname,
                **{d.field: _direction(table, dispatch.get((d, ip)), names) for d in Direction},
            }
        )
    return {"schemaVersion": SCHEMA, "node": node, "pods": entries}


def as_table(report: dict[str, Any]) -> str:
    """The report as text for people."""
    lines = [f"node {report['node']}"]
    for pod in report["pods"]:
        lines.append(f"\n{pod['pod']}  {', '.join(pod['ips'])}  {pod['interface'] or ''}".rstrip())
        for direction in ("ingress", "egress"):
            d = pod[direction]
            if not d["isolated"]:
                lines.append(f"  {direction}: not isolated")
                continue
            lines.append(f"  {direction}: isolated by {', '.join(d['policies'])}; denied {d['denied']['packets']} packets")
            for r in d["rules"]:
                lines.append(f"    {r['rule']}: {r['match']}  [{r['packets']} packets, {r['bytes']} bytes]")
                for p in r["peers"]:
                    lines.append(f"      {p['describes']}: {', '.join(p['members']) or '(none)'}")
    return "\n".join(lines) + "\n"
