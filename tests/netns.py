"""Throwaway network namespaces for kernel tests: made by the test, always removed."""

from __future__ import annotations

import contextlib
import json
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


def table_state(ns: str, family: str = "inet", table: str = "nftpolicy") -> list:
    """A table's contents as comparable data: no handles, objects and set elements sorted,
    rules kept in their chain's order."""
    listed = nft(ns, "-j", "list", "table", family, table)
    assert listed.returncode == 0, listed.stderr
    objects = []
    for item in json.loads(listed.stdout)["nftables"]:
        ((kind, body),) = item.items()
        if kind == "metainfo":
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        if "elem" in body:
            body["elem"] = sorted(body["elem"], key=json.dumps)
        objects.append((kind, json.dumps(body, sort_keys=True)))
    rules = sorted((o for o in objects if o[0] == "rule"), key=lambda o: json.loads(o[1])["chain"])  # stable: keeps rule order
    return sorted(o for o in objects if o[0] != "rule") + rules
