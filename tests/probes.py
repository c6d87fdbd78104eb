"""Comparing real packets on a test bed with the reference evaluator."""

from __future__ import annotations

from enforcer.testbed.simulation import Testbed, expected, observed


def assert_matrix(bed: Testbed, port: int, protocol: str = "TCP", family: int = 4) -> None:
    want = expected(bed, port, protocol, family)
    got = observed(bed, port, protocol, family, expect=want)
    assert not want.mismatches(got), f"{protocol}/{port} IPv{family}\n{want.compare(got)}"
