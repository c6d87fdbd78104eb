"""The kernel backend: the only module that talks to nftables (libnftables through
its Python binding). Transactions go in as nft scripts, one atomic batch each;
the text form keeps every comment (nft 1.0.6's JSON parser drops chain and
set comments)."""

from __future__ import annotations

import json
from typing import Any, Sequence

from enforcer.kernel import KernelError, NotFound, refusal
from rules.nft import Chain, Hook, Set, Table, Transaction
from rules.nft_json import table_from_json


class NftablesKernel:
    def __init__(self) -> None:
        import nftables  # Debian's python3-nftables, over libnftables

        self._nft = nftables.Nftables()
        self._nft.set_handle_output(False)

    def apply(self, transactions: Sequence[Transaction]) -> None:
        """Apply transactions as one atomic batch: all of them, or none."""
        script = "".join(tx.text() for tx in transactions)
        if not script:
            return
        rc, _, err = self._nft.cmd(script)
        if rc != 0:
            raise refusal(err.strip() or f"nft failed with code {rc}")

    def _list_json(self, command: str) -> list[dict[str, Any]] | None:
        self._nft.set_json_output(True)
        try:
            rc, out, err = self._nft.cmd(command)
        finally:
            self._nft.set_json_output(False)
        if rc != 0:
            error = refusal(err.strip())
            if isinstance(error, NotFound):
                return None
            raise error
        try:
            return json.loads(out)["nftables"]
        except (ValueError, KeyError, TypeError):
            # nft 1.0.6 follows the JSON of a table another process owns with a
            # "# progname" comment line; anything else unreadable is an error.
            try:
                return json.loads(out.split("\n", 1)[0])["nftables"]
            except (ValueError, KeyError, TypeError):
                raise KernelError(f"{command}: unreadable JSON listing: {out[:200]!r}") from None

    def observe(self, family: str, name: str) -> Table | None:
        """The table's chains and sets by name, without rules or elements
        (``rules=None``, ``elements=None``): enough to take it over atomically,
        without dumping large sets. None when the table does not exist."""
        self._nft.set_terse_output(True)
        try:
            items = self._list_json(f"list table {family} {name}")
        finally:
            self._nft.set_terse_output(False)
        if items is None:
            return None
        chains, sets = [], []
        for item in items:
            if "chain" in item:
                c = item["chain"]
                hook = Hook(c["type"], c["hook"], c["prio"], c.get("policy", "accept")) if "hook" in c else None
                chains.append(Chain(c["name"], None, hook, None))
            for kind in ("set", "map"):
                if kind in item:
                    s = item[kind]
                    types = tuple(s["type"]) if isinstance(s["type"], list) else (s["type"],)
                    sets.append(Set(s["name"], types, s.get("comment"), tuple(s.get("flags", ())), None, kind == "map"))
        return Table(family, name, None, tuple(chains), tuple(sets))

    def read(self, family: str, name: str, elements: bool = True) -> Table | None:
        """The whole table, rules with their counters included (for audits, not
        the hot path); set elements only if asked for, since dumping large sets is
        the costly part."""
        self._nft.set_terse_output(not elements)
        try:
            items = self._list_json(f"list table {family} {name}")
        finally:
            self._nft.set_terse_output(False)
        return None if items is None else table_from_json(items, family, name)
