"""Throwaway network namespaces for kernel tests: made by the test, always removed."""
from __future__ import annotations

import contextlib
import subprocess
import uuid
from typing import Iterator


@contextlib.contextmanager
def netns() -> Iterator[str]:
    name = f"nftpolicy-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def nft(ns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=stdin, capture_output=True, text=True)
