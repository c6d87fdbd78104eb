"""The kernel edge. The enforcer programs nftables only through a ``Kernel``:
``nftables.NftablesKernel`` (libnftables) on a node, ``fake.FakeKernel`` (in
memory, same transactions, same refusals) in unit tests."""
from __future__ import annotations

from typing import Protocol, Sequence

from rules.nft import Table, Transaction


class KernelError(RuntimeError):
    """The kernel refused a transaction; nothing of it was applied."""


class Kernel(Protocol):
    def apply(self, transactions: Sequence[Transaction]) -> None:
        """Apply the transactions as one atomic batch: all of them, or none (KernelError)."""

    def observe(self, family: str, name: str) -> Table | None:
        """The table's chains and sets by name, without rules or elements; None if absent."""

    def read(self, family: str, name: str, elements: bool = True) -> Table | None:
        """The whole table with rules and counters (elements if asked); None if absent."""
