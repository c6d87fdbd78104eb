"""Cluster state from a directory of Kubernetes YAML, watched for changes.

A change is seen by polling the files' names, sizes and mtimes (cheap, and it
works on any filesystem). Invalid input never replaces the last good state:
the error is reported with the object and field it names, and what is
enforced stays enforced until the files are fixed.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from enforcer.sources.manifests import load_state
from rules.load import InvalidObject
from rules.model import ClusterState


class DirectorySource:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._signature: tuple | None = None
        self.state: ClusterState | None = None  # the last good state
        self.error: str | None = None  # why the files on disk are not in force
        self.loaded: str | None = None  # digest of the files the good state came from
        self.changed_at: float | None = None  # when poll saw the files change

    def start(self, stop, wake) -> None:
        """Nothing runs in the background: ``poll`` looks at the files."""

    def digest(self) -> str:
        """A short digest of the files as they are now; ``loaded`` equals it once they are in force."""
        return signature_digest(self._current_signature())

    def _current_signature(self) -> tuple:
        files = [self.path] if self.path.is_file() else sorted(self.path.rglob("*"))
        signature = []
        for f in files:
            try:
                st = f.stat()
            except FileNotFoundError:
                continue
            signature.append((str(f), st.st_size, st.st_mtime_ns))
        return tuple(signature)

    def poll(self) -> bool:
        """Reload when the files changed; True when a new good state was loaded."""
        signature = self._current_signature()
        if signature == self._signature:
            return False
        self._signature = signature
        self.changed_at = time.monotonic()
        try:
            self.state = load_state([self.path])
        except InvalidObject as e:
            self.error = str(e)
            return False
        self.error = None
        self.loaded = signature_digest(signature)
        return True


def signature_digest(signature: tuple) -> str:
    return hashlib.sha256(repr(signature).encode()).hexdigest()[:16]
