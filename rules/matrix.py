"""Connectivity matrices in the style of the upstream NetworkPolicy e2e tests:
rows are sources, columns destinations, ``.`` allowed and ``X`` denied; when
expected and observed differ, the cell shows ``!`` and the two are printed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class Matrix:
    names: tuple[str, ...]
    cells: dict[tuple[str, str], bool]  # (src, dst) -> allowed

    @classmethod
    def probe(cls, names: Sequence[str], allowed: Callable[[str, str], bool]) -> Matrix:
        """Fill every off-diagonal cell by asking ``allowed(src, dst)``."""
        return cls(tuple(names), {(s, d): allowed(s, d) for s in names for d in names if s != d})

    def render(self, marks: Callable[[str, str], str] | None = None) -> str:
        def mark(s: str, d: str) -> str:
            if s == d:
                return "-"
            return marks(s, d) if marks else ("." if self.cells[(s, d)] else "X")

        index = {n: str(i) for i, n in enumerate(self.names)}
        width = max(len(n) for n in self.names) + 4
        lines = [" " * width + " ".join(index[n].rjust(2) for n in self.names)]
        for s in self.names:
            lines.append(f"{index[s].rjust(2)} {s}".ljust(width) + " ".join(mark(s, d).rjust(2) for d in self.names))
        return "\n".join(lines) + "\n"

    def mismatches(self, observed: Matrix) -> list[tuple[str, str]]:
        return [k for k, v in self.cells.items() if observed.cells.get(k) != v]

    def compare(self, observed: Matrix) -> str:
        """Expected and observed side by side, or one matrix when they agree."""
        wrong = set(self.mismatches(observed))
        if not wrong:
            return self.render()
        return (
            f"expected:\n{self.render()}\nobserved:\n{observed.render()}\n"
            f"differences ({len(wrong)}, marked !):\n"
            + self.render(lambda s, d: "!" if (s, d) in wrong else ("." if self.cells[(s, d)] else "X"))
        )
