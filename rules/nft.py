"""nftables objects as plain data, rendered as nft text or libnftables JSON.

Modelled on kubernetes-sigs/knftables: tables, chains, sets, maps and rules are
frozen dataclasses; a ``Transaction`` is an ordered list of verbs over them
that renders to one nft script or one JSON document, applied atomically by
whoever owns the kernel. Only the expressions nftpolicy needs are modelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Union

COMMENT_MAX = 128  # nft refuses longer comments


def clean_comment(text: str) -> str:
    """A comment nft accepts: no double quotes, at most 128 bytes."""
    text = text.replace('"', "'").replace("\n", " ")
    if len(text.encode()) <= COMMENT_MAX:
        return text
    cut = text.encode()[: COMMENT_MAX - 3].decode(errors="ignore")
    return cut + "..."


# --- expressions: what a match or a lookup reads from the packet ------------


@dataclass(frozen=True)
class Payload:
    protocol: str  # ip, ip6, th, tcp, icmpv6, ...
    field: str

    def text(self) -> str:
        return f"{self.protocol} {self.field}"

    def json(self) -> Any:
        return {"payload": {"protocol": self.protocol, "field": self.field}}


@dataclass(frozen=True)
class RawPayload:
    """Bits of a header nft has no name for: ``@th,64,128`` is the ICMPv6
    neighbour advertisement's target address (nft 1.0.6 has no ``icmpv6 taddr``)."""

    base: str
    offset: int
    length: int

    def text(self) -> str:
        return f"@{self.base},{self.offset},{self.length}"

    def json(self) -> Any:
        return {"payload": {"base": self.base, "offset": self.offset, "len": self.length}}


@dataclass(frozen=True)
class Meta:
    key: str

    def text(self) -> str:
        return f"meta {self.key}"

    def json(self) -> Any:
        return {"meta": {"key": self.key}}


@dataclass(frozen=True)
class Ct:
    key: str

    def text(self) -> str:
        return f"ct {self.key}"

    def json(self) -> Any:
        return {"ct": {"key": self.key}}


@dataclass(frozen=True)
class Concat:
    items: tuple[Any, ...]

    def text(self) -> str:
        return " . ".join(_text(i) for i in self.items)

    def json(self) -> Any:
        return {"concat": [_json(i) for i in self.items]}


# --- values: what set elements and match operands hold --------------------


@dataclass(frozen=True)
class Range:
    low: Any
    high: Any

    def text(self) -> str:
        return f"{_text(self.low)}-{_text(self.high)}"

    def json(self) -> Any:
        return {"range": [_json(self.low), _json(self.high)]}


@dataclass(frozen=True)
class Prefix:
    addr: str
    length: int

    def text(self) -> str:
        return f"{self.addr}/{self.length}"

    def json(self) -> Any:
        return {"prefix": {"addr": self.addr, "len": self.length}}


@dataclass(frozen=True)
class AnonSet:
    """An inline set, ``{ a, b }``: static values that belong to one rule."""

    items: tuple[Any, ...]

    def text(self) -> str:
        return "{ " + ", ".join(_text(i) for i in self.items) + " }"

    def json(self) -> Any:
        return {"set": [_json(i) for i in self.items]}


@dataclass(frozen=True)
class SetRef:
    name: str

    def text(self) -> str:
        return f"@{self.name}"

    def json(self) -> Any:
        return f"@{self.name}"


@dataclass(frozen=True)
class Str:
    """A quoted string operand, such as an interface name or ``"veth*"`` wildcard."""

    value: str

    def text(self) -> str:
        if '"' in self.value or "\n" in self.value or "\\" in self.value:
            raise ValueError(f"cannot quote {self.value!r} for nft")  # the last guard: inputs are checked before
        return f'"{self.value}"'

    def json(self) -> Any:
        return self.value


@dataclass(frozen=True)
class Flags:
    """Bit flags matched together, as in ``ct state established,related``."""

    values: tuple[str, ...]

    def text(self) -> str:
        return ",".join(self.values)

    def json(self) -> Any:
        return list(self.values)


def _text(x: Any) -> str:
    return x.text() if hasattr(x, "text") else str(x)


def _json(x: Any) -> Any:
    return x.json() if hasattr(x, "json") else x


# --- statements --------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    left: Any
    right: Any
    op: str = "=="

    def text(self) -> str:
        op = "" if self.op in ("==", "in") else f"{self.op} "
        return f"{_text(self.left)} {op}{_text(self.right)}"

    def json(self) -> Any:
        return {"match": {"op": self.op, "left": _json(self.left), "right": _json(self.right)}}


@dataclass(frozen=True)
class VMap:
    """A verdict-map lookup: one hash lookup dispatches to the right chain."""

    key: Any
    map: str

    def text(self) -> str:
        return f"{_text(self.key)} vmap @{self.map}"

    def json(self) -> Any:
        return {"vmap": {"key": _json(self.key), "data": f"@{self.map}"}}


@dataclass(frozen=True)
class Counter:
    """A rule's packet and byte counter; the counts are what the kernel read
    back, and never make two rules differ."""

    packets: int = field(default=0, compare=False)
    bytes: int = field(default=0, compare=False)

    def text(self) -> str:
        return "counter"

    def json(self) -> Any:
        return {"counter": None}


@dataclass(frozen=True)
class Limit:
    """A rate limit: matches while under ``rate`` per ``per`` (with a burst)."""

    rate: int
    per: str = "second"
    burst: int = 5

    def text(self) -> str:
        return f"limit rate {self.rate}/{self.per} burst {self.burst} packets"

    def json(self) -> Any:
        return {"limit": {"rate": self.rate, "burst": self.burst, "per": self.per}}


@dataclass(frozen=True)
class Log:
    """Send the packet to an NFLOG group, with a prefix that says why."""

    prefix: str
    group: int

    def text(self) -> str:
        return f'log prefix "{self.prefix}" group {self.group}'

    def json(self) -> Any:
        return {"log": {"prefix": self.prefix, "group": self.group}}


@dataclass(frozen=True)
class Verdict:
    kind: str  # accept, drop, return, jump, goto
    target: str | None = None

    def text(self) -> str:
        return f"{self.kind} {self.target}" if self.target else self.kind

    def json(self) -> Any:
        return {self.kind: {"target": self.target} if self.target else None}


Statement = Union[Match, VMap, Counter, Limit, Log, Verdict]

ACCEPT = Verdict("accept")
DROP = Verdict("drop")
RETURN = Verdict("return")


def jump(chain: str) -> Verdict:
    return Verdict("jump", chain)


def goto(chain: str) -> Verdict:
    return Verdict("goto", chain)


# --- objects -----------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    statements: tuple[Statement, ...]
    comment: str | None = None

    def text(self) -> str:
        body = " ".join(s.text() for s in self.statements)
        return f'{body} comment "{clean_comment(self.comment)}"' if self.comment else body

    def json(self) -> dict:
        out: dict[str, Any] = {"expr": [s.json() for s in self.statements]}
        if self.comment:
            out["comment"] = clean_comment(self.comment)
        return out


@dataclass(frozen=True)
class Hook:
    """What makes a chain a base chain."""

    type: str
    hook: str
    priority: int
    policy: str = "accept"


@dataclass(frozen=True)
class Chain:
    name: str
    comment: str | None = None
    hook: Hook | None = None
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Set:
    """A named set, or a verdict map when ``map_verdicts`` is set.

    ``type`` lists the key's data types (more than one: a concatenation).
    Elements of a map are (key, Verdict) pairs.
    """

    name: str
    type: tuple[str, ...]
    comment: str | None = None
    flags: tuple[str, ...] = ()
    elements: tuple[Any, ...] = ()
    map_verdicts: bool = False
    typeof: str | None = None  # declare the key by expression (raw payloads need it); ``type`` is what the kernel reports

    @property
    def kind(self) -> str:
        return "map" if self.map_verdicts else "set"


@dataclass(frozen=True)
class Table:
    family: str
    name: str
    comment: str | None = None
    chains: tuple[Chain, ...] = ()
    sets: tuple[Set, ...] = ()

    def chain(self, name: str) -> Chain | None:
        return next((c for c in self.chains if c.name == name), None)

    def set(self, name: str) -> Set | None:
        return next((s for s in self.sets if s.name == name), None)


@dataclass(frozen=True)
class Ruleset:
    tables: tuple[Table, ...]

    def table(self, family: str, name: str) -> Table | None:
        return next((t for t in self.tables if (t.family, t.name) == (family, name)), None)

    def object_count(self) -> dict[str, int]:
        """Tables, chains, sets and maps, rules and elements: the ruleset's size."""
        sets = [s for t in self.tables for s in t.sets]
        return {
            "tables": len(self.tables),
            "chains": sum(len(t.chains) for t in self.tables),
            "sets": sum(1 for s in sets if not s.map_verdicts),
            "maps": sum(1 for s in sets if s.map_verdicts),
            "rules": sum(len(c.rules) for t in self.tables for c in t.chains),
            "elements": sum(len(s.elements) for s in sets),
        }


# --- transactions ------------------------------------------------------------

ELEMENT_CHUNK = 1000  # elements per command: keeps each netlink message bounded


@dataclass
class Transaction:
    """Ordered verbs over one table, rendered as one atomic nft script or JSON batch."""

    family: str
    table: str
    ops: list[tuple[str, str, Any]] = field(default_factory=list)  # (verb, kind, payload)

    def add_table(self, comment: str | None) -> None:
        self.ops.append(("add", "table", comment))

    def delete_table(self) -> None:
        self.ops.append(("delete", "table", None))

    def add_chain(self, chain: Chain) -> None:
        self.ops.append(("add", "chain", chain))

    def add_set(self, s: Set) -> None:
        self.ops.append(("add", s.kind, s))

    def add_elements(self, s: Set, elements: Iterable[Any]) -> None:
        elements = list(elements)
        for i in range(0, len(elements), ELEMENT_CHUNK):
            self.ops.append(("add", "element", (s, tuple(elements[i : i + ELEMENT_CHUNK]))))

    def add_rule(self, chain: str, rule: Rule) -> None:
        self.ops.append(("add", "rule", (chain, rule)))

    def flush_chain(self, name: str) -> None:
        self.ops.append(("flush", "chain", name))

    def delete_chain(self, name: str) -> None:
        self.ops.append(("delete", "chain", name))

    def flush_set(self, s: Set) -> None:
        self.ops.append(("flush", s.kind, s.name))

    def delete_set(self, s: Set) -> None:
        self.ops.append(("delete", s.kind, s.name))

    def delete_elements(self, s: Set, elements: Iterable[Any]) -> None:
        """Remove elements; of a map, only the keys are named."""
        keys = [e[0] if s.map_verdicts else e for e in elements]
        plain = Set(s.name, s.type)  # keys render as plain set elements
        for i in range(0, len(keys), ELEMENT_CHUNK):
            self.ops.append(("delete", "element", (plain, tuple(keys[i : i + ELEMENT_CHUNK]))))

    def __len__(self) -> int:
        return len(self.ops)

    # text --------------------------------------------------------------

    def text(self) -> str:
        return "".join(self._op_text(verb, kind, payload) + "\n" for verb, kind, payload in self.ops)

    def _op_text(self, verb: str, kind: str, payload: Any) -> str:
        where = f"{self.family} {self.table}"
        if kind == "table":
            body = f' {{ comment "{clean_comment(payload)}" ; }}' if payload else ""
            return f"{verb} table {where}{body}"
        if isinstance(payload, str):  # flush or delete by name
            return f"{verb} {kind} {where} {payload}"
        if kind == "chain":
            return f"{verb} chain {where} {payload.name}{_chain_spec_text(payload)}"
        if kind in ("set", "map"):
            return f"{verb} {kind} {where} {payload.name} {_set_spec_text(payload)}"
        if kind == "element":
            s, elements = payload
            return f"{verb} element {where} {s.name} {{ {', '.join(element_text(e, s) for e in elements)} }}"
        if kind == "rule":
            chain, rule = payload
            return f"{verb} rule {where} {chain} {rule.text()}"
        raise ValueError(kind)

    # json --------------------------------------------------------------

    def json(self) -> dict:
        return {"nftables": [{verb: self._op_json(kind, payload)} for verb, kind, payload in self.ops]}

    def _op_json(self, kind: str, payload: Any) -> dict:
        where = {"family": self.family, "table": self.table}
        if kind == "table":
            obj = {"family": self.family, "name": self.table}
            if payload:
                obj["comment"] = clean_comment(payload)
            return {"table": obj}
        if isinstance(payload, str):  # flush or delete by name
            return {kind: {**where, "name": payload}}
        if kind == "chain":
            obj = {**where, "name": payload.name}
            if payload.hook:
                h = payload.hook
                obj.update(type=h.type, hook=h.hook, prio=h.priority, policy=h.policy)
            if payload.comment:
                obj["comment"] = clean_comment(payload.comment)
            return {"chain": obj}
        if kind in ("set", "map"):
            s = payload
            obj = {**where, "name": s.name, "type": list(s.type) if len(s.type) > 1 else s.type[0]}
            if s.map_verdicts:
                obj["map"] = "verdict"
            if s.flags:
                obj["flags"] = list(s.flags)
            if s.comment:
                obj["comment"] = clean_comment(s.comment)
            return {kind: obj}
        if kind == "element":
            s, elements = payload
            return {"element": {**where, "name": s.name, "elem": [_element_json(e, s) for e in elements]}}
        if kind == "rule":
            chain, rule = payload
            return {"rule": {**where, "chain": chain, **rule.json()}}
        raise ValueError(kind)


def _chain_spec_text(chain: Chain) -> str:
    parts = []
    if chain.hook:
        h = chain.hook
        parts.append(f"type {h.type} hook {h.hook} priority {h.priority} ; policy {h.policy} ;")
    if chain.comment:
        parts.append(f'comment "{clean_comment(chain.comment)}" ;')
    return f" {{ {' '.join(parts)} }}" if parts else ""


def _set_spec_text(s: Set) -> str:
    key = " . ".join(s.type)
    parts = [f"typeof {s.typeof} ;" if s.typeof else f"type {key} : verdict ;" if s.map_verdicts else f"type {key} ;"]
    if s.flags:
        parts.append(f"flags {','.join(s.flags)} ;")
    if s.comment:
        parts.append(f'comment "{clean_comment(s.comment)}" ;')
    return "{ " + " ".join(parts) + " }"


def element_text(e: Any, s: Set) -> str:
    """A set or map element as nft lists it."""
    if s.map_verdicts:
        key, verdict = e
        return f"{_text(key)} : {verdict.text()}"
    return _text(e)


def _element_json(e: Any, s: Set) -> Any:
    if s.map_verdicts:
        key, verdict = e
        return [_json(key), verdict.json()]
    return _json(e)


def create_transaction(table: Table) -> Transaction:
    """Every object of a table, in an order the kernel accepts: chains before
    the map elements and rules that name them, sets before the rules that read them."""
    tx = Transaction(table.family, table.name)
    tx.add_table(table.comment)
    for chain in table.chains:
        tx.add_chain(Chain(chain.name, chain.comment, chain.hook))
    for s in table.sets:
        tx.add_set(s)
        tx.add_elements(s, s.elements)
    for chain in table.chains:
        for rule in chain.rules:
            tx.add_rule(chain.name, rule)
    return tx


def render_text(ruleset: Ruleset) -> str:
    """The ruleset as one nft script (``nft -f``)."""
    return "".join(create_transaction(t).text() for t in ruleset.tables)


def render_json(ruleset: Ruleset) -> dict:
    """The ruleset as one libnftables JSON batch (``nft -j -f``)."""
    return {"nftables": [op for t in ruleset.tables for op in create_transaction(t).json()["nftables"]]}
