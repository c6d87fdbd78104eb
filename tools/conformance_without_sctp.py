"""Make a copy of the ClusterNetworkPolicy conformance suite with its SCTP
probes deleted, for a kernel without SCTP (scripts/build-conformance
--without-sctp-probes).

    python tools/conformance_without_sctp.py MODULE_DIR COPY_DIR

The unmodified suite cannot run the subtests that probe SCTP here; this copy
runs the rest of each of them: every ``kubernetes.PokeServer(...)`` statement
whose protocol is ``"sctp"`` is deleted, and the four tests that probe
nothing else (``*-sctp-rules.go``) are left out. Nothing else changes. It is a
modified suite: its results are reported apart from the unmodified run's.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

POKE = re.compile(r"kubernetes\.PokeServer\(")


def without_sctp_probes(source: str) -> tuple[str, int]:
    """``source`` with each SCTP PokeServer statement (to its closing parenthesis and line end) removed."""
    out, i, removed = [], 0, 0
    while (m := POKE.search(source, i)) is not None:
        depth, j = 0, m.end() - 1
        while True:
            depth += {"(": 1, ")": -1}.get(source[j], 0)
            if depth == 0:
                break
            j += 1
        if '"sctp"' in source[m.start() : j + 1]:
            out.append(source[i : source.rfind("\n", 0, m.start()) + 1])
            i = j + 1 + (source[j + 1 : j + 2] == "\n")
            removed += 1
        else:
            out.append(source[i : j + 1])
            i = j + 1
    out.append(source[i:])
    return "".join(out), removed


def main(module: str, copy: str) -> None:
    target = Path(copy)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(module, target)
    removed = 0
    for path in sorted((target / "conformance" / "tests").glob("*.go")):
        path.chmod(0o644)
        if path.name.endswith("-sctp-rules.go"):
            path.unlink()
            continue
        text, n = without_sctp_probes(path.read_text())
        path.write_text(text)
        removed += n
    print(f"conformance_without_sctp: {removed} SCTP probes deleted, *-sctp-rules.go left out", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:3])
