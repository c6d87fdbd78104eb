"""An in-memory stand-in for ``enforcer.kernel.Kernel``, for unit tests of the
enforcer's logic (backoff, status, drift, takeover) without root.

It applies the same ``Transaction`` objects the real kernel gets, all or
nothing, and refuses what nftables refuses in our use: a verb on an object
that does not exist, deleting a chain or set that is still referenced, a
chain or set redeclared with another hook or type. ``tests/test_plan.py``
runs the same random sequences of transactions through it and through the
real kernel and compares what each reads back.

Refusals are typed as the real backend types them (``NotFound``, ``Exists``,
``Busy``), so tests need not match error text. ``dump`` lists everything
sorted, for comparing kernels.

Two hooks let a test steer it: ``gate`` (a commit waits until it is set) and
``refuse`` (the next commits raise ``KernelError`` with that message).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from enforcer.kernel import Busy, Exists, KernelError, NotFound
from rules.nft import Chain, Ruleset, Set, SetRef, Table, Transaction, Verdict, VMap, render_text


@dataclass
class _Table:
    comment: str | None
    chains: dict[str, Chain] = field(default_factory=dict)  # insertion order is creation order, as nft lists
    sets: dict[str, Set] = field(default_factory=dict)

    def freeze(self, family: str, name: str) -> Table:
        return Table(family, name, self.comment, tuple(self.chains.values()), tuple(self.sets.values()))


class FakeKernel:
    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], _Table] = {}
        self.commits: list[list[Transaction]] = []  # every transaction batch that committed, oldest first
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a commit starts waiting at the gate
        self.refuse: str | None = None

    # --- the Kernel interface ---------------------------------------------

    def apply(self, transactions: Sequence[Transaction]) -> None:
        """One atomic batch: every transaction of it, or none."""
        if not any(len(tx) for tx in transactions):
            return
        self.entered.set()
        self.gate.wait()
        if self.refuse is not None:
            raise KernelError(self.refuse)
        tables = {key: _Table(t.comment, dict(t.chains), dict(t.sets)) for key, t in self.tables.items()}
        for tx in transactions:
            for verb, kind, payload in tx.ops:
                _apply_op(tables, (tx.family, tx.table), verb, kind, payload)
        self.tables = tables
        self.commits.append(list(transactions))

    def observe(self, family: str, name: str) -> Table | None:
        table = self.tables.get((family, name))
        if table is None:
            return None
        return Table(
            family,
            name,
            None,
            tuple(replace(c, rules=None, comment=None) for c in table.chains.values()),
            tuple(replace(s, elements=None) for s in table.sets.values()),
        )

    def dump(self) -> str:
        """Every table as nft would list it, tables, chains, sets and elements sorted:
        equal kernels dump equal text, whatever order they were built in."""
        tables = []
        for family, name in sorted(self.tables):
            t = self.tables[(family, name)]
            chains = tuple(sorted(t.chains.values(), key=lambda c: c.name))
            sets = tuple(
                replace(x, elements=tuple(sorted(x.elements, key=repr))) for x in sorted(t.sets.values(), key=lambda x: x.name)
            )
            tables.append(Table(family, name, t.comment, chains, sets))
        return render_text(Ruleset(tuple(tables)))

    def read(self, family: str, name: str, elements: bool = True) -> Table | None:
        table = self.tables.get((family, name))
        if table is None:
            return None
        frozen = table.freeze(family, name)
        return frozen if elements else replace(frozen, sets=tuple(replace(s, elements=()) for s in frozen.sets))


def _apply_op(tables: dict[tuple[str, str], _Table], key: tuple[str, str], verb: str, kind: str, payload: Any) -> None:
    where = f"table {key[0]} {key[1]}"
    if kind == "table":
        if verb == "add":
            tables.setdefault(key, _Table(payload))
        elif tables.pop(key, None) is None:
            raise NotFound(f"Error: No such file or directory: delete {where}")
        return
    table = tables.get(key)
    if table is None:
        raise NotFound(f"Error: No such file or directory: {verb} {kind} in {where}")
    if kind == "chain":
        _chain_op(table, where, verb, payload)
    elif kind in ("set", "map"):
        _set_op(table, where, verb, payload)
    elif kind == "element":
        s, items = payload
        _element_op(table, where, verb, s, items)
    elif kind == "rule":
        chain_name, rule = payload
        chain = _need(table.chains, chain_name, f"chain {chain_name} in {where}")
        for statement in rule.statements:
            _check_reference(table, where, statement)
        table.chains[chain_name] = replace(chain, rules=chain.rules + (rule,))
    else:
        raise KernelError(f"unknown object kind {kind}")


def _need(objects: dict, name: str, what: str) -> Any:
    if name not in objects:
        raise NotFound(f"Error: No such file or directory: {what}")
    return objects[name]


def _chain_op(table: _Table, where: str, verb: str, payload: Any) -> None:
    if verb == "add":
        old = table.chains.get(payload.name)
        if old is not None and old.hook != payload.hook:
            raise Exists(f"Error: Operation not supported: chain {payload.name} in {where} exists with another hook")
        if old is None:
            table.chains[payload.name] = Chain(payload.name, payload.comment, payload.hook, ())
        return
    chain = _need(table.chains, payload, f"chain {payload} in {where}")
    if verb == "flush":
        table.chains[payload] = replace(chain, rules=())
        return
    if chain.rules or _chain_referenced(table, payload):
        raise Busy(f"Error: Device or resource busy: chain {payload} in {where} is not empty or still referenced")
    del table.chains[payload]


def _set_op(table: _Table, where: str, verb: str, payload: Any) -> None:
    if verb == "add":
        old = table.sets.get(payload.name)
        if old is not None and (old.type, old.flags, old.map_verdicts) != (payload.type, payload.flags, payload.map_verdicts):
            raise Exists(f"Error: File exists: {payload.kind} {payload.name} in {where} has another type")
        if old is None:
            table.sets[payload.name] = replace(payload, elements=())
        return
    s = _need(table.sets, payload, f"set {payload} in {where}")
    if verb == "flush":
        table.sets[payload] = replace(s, elements=())
        return
    if any(
        _refers_to_set(statement, payload)
        for chain in table.chains.values()
        for rule in chain.rules
        for statement in rule.statements
    ):
        raise Busy(f"Error: Device or resource busy: set {payload} in {where} is still referenced")
    del table.sets[payload]


def _element_op(table: _Table, where: str, verb: str, s: Set, items: tuple) -> None:
    current = _need(table.sets, s.name, f"set {s.name} in {where}")
    if current.map_verdicts and verb == "add":
        by_key = dict(current.elements)
        for k, verdict in items:
            if verdict.target and verdict.target not in table.chains:
                raise NotFound(f"Error: No such file or directory: chain {verdict.target} in {where}")
            by_key[k] = verdict
        elements = tuple(by_key.items())
    elif current.map_verdicts:
        by_key = dict(current.elements)
        for k in items:
            _need(by_key, k, f"element {k!r} of map {s.name} in {where}")
            del by_key[k]
        elements = tuple(by_key.items())
    elif verb == "add":
        elements = current.elements + tuple(e for e in dict.fromkeys(items) if e not in set(current.elements))
    else:
        gone = set(items)
        missing = gone - set(current.elements)
        if missing:
            raise NotFound(f"Error: No such file or directory: elements {sorted(map(repr, missing))} of set {s.name} in {where}")
        elements = tuple(e for e in current.elements if e not in gone)
    table.sets[s.name] = replace(current, elements=elements)


def _check_reference(table: _Table, where: str, statement: Any) -> None:
    target = getattr(statement, "target", None) if isinstance(statement, Verdict) else None
    if target and target not in table.chains:
        raise NotFound(f"Error: No such file or directory: chain {target} in {where}")
    for name in _set_names(statement):
        _need(table.sets, name, f"set {name} in {where}")


def _set_names(node: Any) -> list[str]:
    """The named sets a statement refers to, however deep in it."""
    if isinstance(node, SetRef):
        return [node.name]
    if isinstance(node, VMap):
        return [node.map] + _set_names(node.key)
    if isinstance(node, (tuple, list)):
        return [n for item in node for n in _set_names(item)]
    if hasattr(node, "__dataclass_fields__"):
        return [n for f in node.__dataclass_fields__ for n in _set_names(getattr(node, f))]
    return []


def _refers_to_set(statement: Any, name: str) -> bool:
    return name in _set_names(statement)


def _chain_referenced(table: _Table, name: str) -> bool:
    in_rules = any(
        isinstance(s, Verdict) and s.target == name
        for chain in table.chains.values()
        for rule in chain.rules
        for s in rule.statements
    )
    in_maps = any(verdict.target == name for s in table.sets.values() if s.map_verdicts for _, verdict in s.elements)
    return in_rules or in_maps
