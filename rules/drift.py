"""Drift: how a live table differs from the desired one, object by object.

Compared as the kernel keeps them: element order and the order of items in
an inline set do not matter, rule order does; comments on chains and sets
are not compared (the kernel's JSON output does not carry chain comments).

Rules and elements are shown in nft syntax, as ``nft list`` shows them:
``- wanted, missing:`` what the cluster state calls for and the kernel lacks,
``+ unwanted, present:`` what the kernel has and the state does not call for.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rules.nft import AnonSet, Match, Rule, Set, Table, element_text

MISSING, EXTRA = "    - wanted, missing: ", "    + unwanted, present: "


def _rule_key(rule: Rule) -> str:
    def normal(stmt: Any) -> Any:
        if isinstance(stmt, Match) and isinstance(stmt.right, AnonSet):
            return replace(stmt, right=AnonSet(tuple(sorted(stmt.right.items, key=repr))))
        return stmt

    return Rule(tuple(normal(s) for s in rule.statements), rule.comment).text()


def _elements(s: Set) -> dict[str, str]:
    """Each element's identity (its repr) -> its nft text."""
    return {repr(e): element_text(e, s) for e in s.elements}


def table_drift(desired: Table, live: Table | None) -> list[str]:
    """One line per difference: missing, extra or changed chains and sets."""
    where = f"table {desired.family} {desired.name}"
    if live is None:
        return [f"missing: {where}"]
    lines = []
    live_chains = {c.name: c for c in live.chains}
    for chain in desired.chains:
        got = live_chains.pop(chain.name, None)
        if got is None:
            lines.append(f"missing: {where} chain {chain.name}")
        elif chain.hook != got.hook or [_rule_key(r) for r in chain.rules] != [_rule_key(r) for r in got.rules]:
            want, have = [_rule_key(r) for r in chain.rules], [_rule_key(r) for r in got.rules]
            detail = [MISSING + r for r in want if r not in have] + [EXTRA + r for r in have if r not in want]
            lines.append(
                f"changed: {where} chain {chain.name}"
                + ("".join("\n" + d for d in detail) if detail else " (rule order or hook)")
            )
    lines += [f"extra: {where} chain {name}" for name in live_chains]
    live_sets = {s.name: s for s in live.sets}
    for s in desired.sets:
        got = live_sets.pop(s.name, None)
        if got is None:
            lines.append(f"missing: {where} {s.kind} {s.name}")
            continue
        want, have = _elements(s), _elements(got)
        if (s.type, s.flags, s.map_verdicts) != (got.type, got.flags, got.map_verdicts):
            lines.append(f"changed: {where} {s.kind} {s.name}: type {got.type} flags {got.flags}, want {s.type} {s.flags}")
        elif want.keys() != have.keys():
            detail = [MISSING + want[e] for e in sorted(want.keys() - have.keys())]
            detail += [EXTRA + have[e] for e in sorted(have.keys() - want.keys())]
            lines.append(f"changed: {where} {s.kind} {s.name}" + "".join("\n" + d for d in detail))
    lines += [f"extra: {where} {s.kind} {name}" for name, s in live_sets.items()]
    return lines
