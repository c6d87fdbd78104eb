"""Plan the transaction that turns the table in the kernel into the desired one.

Pure: it compares two ``Table`` values. ``current`` is what the enforcer last
committed, or what it observed in the kernel at start-up; there a chain whose
rules are unknown (``rules=None``) is rebuilt, and a set whose elements are
unknown (``elements=None``) is flushed and refilled. Either way the whole
change is one transaction, so packets see the old ruleset or the new one,
never a mixture. Base chains are never deleted and recreated; a chain's rules
are replaced by flushing the chain and adding them again (knftables' advice);
set elements change one by one, so a pod's IP change touches only its
elements.

Order inside the transaction, chosen so that nothing is referenced before it
exists or deleted while referenced:

1. new chains (empty) and new sets with their elements;
2. flush chains whose rules change or that go away;
3. element changes in sets and maps that stay;
4. rules of new and changed chains;
5. delete sets that go away, then chains that go away: a verdict map going
   away may still hold elements that go to a chain going away.

A table holding objects of our names that cannot become ours in place (a set
of another type, a chain on another hook) is replaced whole, atomically.
"""

from __future__ import annotations

from rules.nft import Chain, Table, Transaction, create_transaction


def plan(desired: Table, current: Table | None) -> Transaction:
    """The transaction from ``current`` (None: no table yet) to ``desired``."""
    tx = Transaction(desired.family, desired.name)
    if current is None:
        tx.add_table(desired.comment)
    current_chains = {c.name: c for c in (current.chains if current else ())}
    current_sets = {s.name: s for s in (current.sets if current else ())}
    desired_chains = {c.name: c for c in desired.chains}
    desired_sets = {s.name: s for s in desired.sets}

    new_chains = [c for c in desired.chains if c.name not in current_chains]
    changed_chains = [c for c in desired.chains if c.name in current_chains and current_chains[c.name].rules != c.rules]
    gone_chains = [name for name in current_chains if name not in desired_chains]
    new_sets = [s for s in desired.sets if s.name not in current_sets]
    kept_sets = [(current_sets[s.name], s) for s in desired.sets if s.name in current_sets]
    gone_sets = [current_sets[name] for name in current_sets if name not in desired_sets]
    if _incompatible(current_chains, desired_chains, kept_sets):
        return replace_table(desired)

    for chain in new_chains:
        tx.add_chain(Chain(chain.name, chain.comment, chain.hook))
    for s in new_sets:
        tx.add_set(s)
        tx.add_elements(s, s.elements)
    for chain in changed_chains:
        tx.flush_chain(chain.name)
    for name in gone_chains:
        tx.flush_chain(name)
    for old, new in kept_sets:
        if old.elements == new.elements:
            continue  # the common case, and cheap: an unchanged set is usually the same tuple
        if old.elements is None:
            tx.flush_set(new)
            tx.add_elements(new, new.elements)
            continue
        before, after = set(old.elements), set(new.elements)
        tx.delete_elements(new, sorted(before - after, key=repr))
        tx.add_elements(new, [e for e in new.elements if e not in before])
    for chain in new_chains + changed_chains:
        for rule in chain.rules:
            tx.add_rule(chain.name, rule)
    for s in gone_sets:
        tx.delete_set(s)
    for name in gone_chains:
        tx.delete_chain(name)
    return tx


def _incompatible(current_chains: dict[str, Chain], desired_chains: dict[str, Chain], kept_sets: list) -> bool:
    """Objects of our names that cannot be changed into ours in place: a set of
    another type, a chain hooked elsewhere (planted by hand, or left by another
    version). Our own commits never produce them: names fix types and hooks."""
    return any(
        (old.type, old.flags, old.map_verdicts) != (new.type, new.flags, new.map_verdicts) for old, new in kept_sets
    ) or any(name in current_chains and current_chains[name].hook != chain.hook for name, chain in desired_chains.items())


def replace_table(desired: Table) -> Transaction:
    """Delete the table and create it anew, in one transaction: packets see the
    old table or the new one, never neither."""
    tx = Transaction(desired.family, desired.name)
    tx.delete_table()
    tx.ops += create_transaction(desired).ops
    return tx


PRELOAD_ELEMENTS = 5000  # most set elements one transaction loads ahead of the switch


def preload(desired: Table, current: Table | None, budget: int = PRELOAD_ELEMENTS) -> tuple[list[Transaction], Table | None]:
    """Transactions of at most ``budget`` elements that create and fill the
    sets ``desired`` adds, and the table as it will be after them: plan the
    switch from that.

    A large transaction holds the kernel's nftables mutex, and so every other
    netlink writer on the node, for its whole length. New sets are not
    referenced by any rule until the switch, so loading them early changes no
    verdict; the switch still swaps every rule, map entry and changed element
    at once. A crash between the steps leaves unreferenced sets behind, which
    the next sync (observing the kernel) flushes and refills, or deletes.
    Small changes need no preload.
    """
    have = {s.name for s in current.sets} if current else set()
    # Verdict maps name chains that only the switch creates; they hold local pods and stay small.
    new_sets = [s for s in desired.sets if s.name not in have and not s.map_verdicts]
    if sum(len(s.elements) for s in new_sets) <= budget:
        return [], current
    steps = [Transaction(desired.family, desired.name)]
    if current is None:
        steps[0].add_table(desired.comment)
    room = budget
    for s in new_sets:
        steps[-1].add_set(s)
        elements = list(s.elements)
        while elements:
            if room == 0:
                steps.append(Transaction(desired.family, desired.name))
                room = budget
            chunk, elements = elements[:room], elements[room:]
            steps[-1].add_elements(s, chunk)
            room -= len(chunk)
    after = Table(
        desired.family,
        desired.name,
        desired.comment,
        current.chains if current else (),
        (current.sets if current else ()) + tuple(new_sets),
    )
    return steps, after
