"""The kernel edge. The enforcer programs nftables only through a ``Kernel``:
``nftables.NftablesKernel`` (libnftables) on a node, ``fake.FakeKernel`` (in
memory, same transactions, same refusals) in unit tests."""

from __future__ import annotations

from typing import Protocol, Sequence

from rules.nft import Table, Transaction


class KernelError(RuntimeError):
    """The kernel refused a transaction; nothing of it was applied."""


class NotFound(KernelError):
    """A command named a table, chain, set or element that does not exist (ENOENT)."""


class Exists(KernelError):
    """An object exists already with another type or hook (EEXIST, EOPNOTSUPP)."""


class Busy(KernelError):
    """A chain or set to delete is still referenced, or a chain not empty (EBUSY)."""


def refusal(message: str) -> KernelError:
    """The typed error for nft's message: the one place its wording is read."""
    for errno_text, kind in (
        ("No such file or directory", NotFound),
        ("File exists", Exists),
        ("Operation not supported", Exists),
        ("Device or resource busy", Busy),
    ):
        if errno_text in message:
            return kind(message)
    return KernelError(message)


class Kernel(Protocol):
    def apply(self, transactions: Sequence[Transaction]) -> None:
        """Apply the transactions as one atomic batch: all of them, or none (KernelError)."""

    def observe(self, family: str, name: str) -> Table | None:
        """The table's chains and sets by name, without rules or elements; None if absent."""

    def read(self, family: str, name: str, elements: bool = True) -> Table | None:
        """The whole table with rules and counters (elements if asked); None if absent."""
