"""Read a table back from libnftables JSON (``nft -j list table``) into the
same data as ``rules.nft``, so the live kernel can be compared with, traced
like, and mapped back to what the translator renders.

Only the subset nftpolicy writes is understood; any other expression becomes
``Unknown``, which compares unequal to everything we render, so a hand-made
change always shows as drift.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rules.nft import (
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
    RawPayload,
    Rule,
    Set,
    SetRef,
    Str,
    Table,
    Verdict,
    VMap,
)

IFNAME_KEYS = ("iifname", "oifname")


@dataclass(frozen=True)
class Unknown:
    """An expression or statement nftpolicy never writes."""

    raw: str

    def text(self) -> str:
        return f"<unknown {self.raw}>"

    def json(self) -> Any:
        return json.loads(self.raw)


def _expr(j: Any) -> Any:
    if isinstance(j, dict):
        if "payload" in j:
            if "base" in j["payload"]:
                return RawPayload(j["payload"]["base"], j["payload"]["offset"], j["payload"]["len"])
            return Payload(j["payload"]["protocol"], j["payload"]["field"])
        if "meta" in j:
            return Meta(j["meta"]["key"])
        if "ct" in j:
            return Ct(j["ct"]["key"])
        if "concat" in j:
            return Concat(tuple(_expr(e) for e in j["concat"]))
    return Unknown(json.dumps(j, sort_keys=True))


# libnftables names protocols from /etc/protocols; where that file is missing
# (a slim container image) it prints their numbers. Read back, both are names.
PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}


def _value(j: Any, types: tuple[str, ...] = ()) -> Any:
    """A constant; ``types`` says which positions are interface names (quoted
    strings) and which are layer 4 protocols (names, not numbers)."""
    if isinstance(j, str):
        if j.startswith("@"):
            return SetRef(j[1:])
        return Str(j) if types[:1] == ("ifname",) else j
    if isinstance(j, (int, float)):
        return PROTOCOL_NAMES.get(j, j) if types[:1] == ("l4proto",) else j
    if isinstance(j, list):
        return Flags(tuple(j))
    if "prefix" in j:
        return Prefix(j["prefix"]["addr"], j["prefix"]["len"])
    if "range" in j:
        low, high = j["range"]
        return Range(_value(low), _value(high))
    if "concat" in j:
        return Concat(tuple(_value(v, types[i : i + 1]) for i, v in enumerate(j["concat"])))
    if "set" in j:
        return AnonSet(tuple(_value(v, types) for v in j["set"]))
    return Unknown(json.dumps(j, sort_keys=True))


def _verdict(j: dict) -> Verdict | None:
    for kind in ("accept", "drop", "return"):
        if kind in j:
            return Verdict(kind)
    for kind in ("jump", "goto"):
        if kind in j:
            return Verdict(kind, j[kind]["target"])
    return None


def _statement(j: dict) -> Any:
    if "match" in j:
        m = j["match"]
        left = _expr(m["left"])
        keys = left.items if isinstance(left, Concat) else (left,)
        types = tuple(
            "ifname" if isinstance(k, Meta) and k.key in IFNAME_KEYS else "l4proto" if k == Meta("l4proto") else "" for k in keys
        )
        return Match(left, _value(m["right"], types), m["op"])
    if "vmap" in j:
        return VMap(_expr(j["vmap"]["key"]), j["vmap"]["data"].lstrip("@"))
    if "limit" in j:
        return Limit(j["limit"]["rate"], j["limit"].get("per", "second"), j["limit"].get("burst", 5))
    if "log" in j:
        return Log(j["log"].get("prefix", ""), j["log"].get("group", 0))
    if "counter" in j:
        counts = j["counter"] or {}
        return Counter(counts.get("packets", 0), counts.get("bytes", 0))
    return _verdict(j) or Unknown(json.dumps(j, sort_keys=True))


def _element(j: Any, s: Set) -> Any:
    if s.map_verdicts:
        key, verdict = j
        return (_value(key, s.type), _verdict(verdict))
    return _value(j, s.type)


def table_from_json(items: list[dict], family: str, name: str) -> Table:
    """The table's chains (with rules), sets and maps (with elements)."""
    chains: dict[str, list] = {}
    hooks: dict[str, Hook | None] = {}
    comments: dict[str, str | None] = {}
    sets = []
    for item in items:
        if "chain" in item:
            c = item["chain"]
            chains[c["name"]] = []
            hooks[c["name"]] = Hook(c["type"], c["hook"], c["prio"], c.get("policy", "accept")) if "hook" in c else None
            comments[c["name"]] = c.get("comment")
        elif "set" in item or "map" in item:
            kind = "map" if "map" in item else "set"
            raw = item[kind]
            types = tuple(raw["type"]) if isinstance(raw["type"], list) else (raw["type"],)
            shell = Set(raw["name"], types, raw.get("comment"), tuple(raw.get("flags", ())), (), kind == "map")
            elements = tuple(_element(e, shell) for e in raw.get("elem", ()))
            sets.append(Set(shell.name, types, shell.comment, shell.flags, elements, shell.map_verdicts))
        elif "rule" in item:
            r = item["rule"]
            chains.setdefault(r["chain"], []).append(Rule(tuple(_statement(e) for e in r["expr"]), r.get("comment")))
    return Table(
        family,
        name,
        None,
        tuple(Chain(n, comments.get(n), hooks.get(n), tuple(rules)) for n, rules in chains.items()),
        tuple(sets),
    )
