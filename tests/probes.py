"""Probing a test bed with real packets and comparing with the reference evaluator."""
from __future__ import annotations

import random

from rules.evaluate import verdict
from rules.load import load_state
from rules.matrix import Matrix
from testbed import Pod, Testbed


def send_probe(src: Pod, dst_ip: str, port: int, protocol: str, timeout: float = 1.0):
    """Start a probe; returns a function that waits for its result."""
    if protocol == "SCTP":
        tag = random.randrange(1, 2**31)
        src.result_of(src.send(op="sctp-send", host=dst_ip, port=port, tag=tag))
        return tag
    return src.send(op=protocol.lower(), host=dst_ip, port=port, timeout=timeout)


def observed(bed: Testbed, port: int, protocol: str = "TCP", family: int = 4) -> Matrix:
    """Every pod to every other pod at once, with real packets."""
    pods = sorted(bed.pods(), key=lambda p: p.key)
    started = {(s.key, d.key): send_probe(s, d.ip(family), port, protocol) for s in pods for d in pods if s is not d}
    if protocol == "SCTP":
        seen = {k: bed.pod(k[1]).send(op="sctp-seen", tag=tag, timeout=1.0) for k, tag in started.items()}
        results = {k: bed.pod(k[1]).result_of(rid) for k, rid in seen.items()}
    else:
        results = {k: bed.pod(k[0]).result_of(rid) for k, rid in started.items()}
    return Matrix(tuple(p.key for p in pods), results)


def expected(bed: Testbed, port: int, protocol: str = "TCP", family: int = 4) -> Matrix:
    """The reference evaluator on the state the enforcers read."""
    state = load_state([bed.source])
    pods = sorted(bed.pods(), key=lambda p: p.key)

    def allowed(src: str, dst: str) -> bool:
        return verdict(state, bed.pod(src).ip(family), bed.pod(dst).ip(family), port, protocol).allowed

    return Matrix.probe([p.key for p in pods], allowed)


def assert_matrix(bed: Testbed, port: int, protocol: str = "TCP", family: int = 4) -> None:
    want, got = expected(bed, port, protocol, family), observed(bed, port, protocol, family)
    assert not want.mismatches(got), f"{protocol}/{port} IPv{family}\n{want.compare(got)}"
