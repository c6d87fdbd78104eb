"""Fixtures: a test bed of simulated nodes, shared by the dataplane tests of a module."""
from __future__ import annotations

import pytest

from enforcer.testbed.simulation import Testbed, build_shim


@pytest.fixture(scope="session")
def shim():
    """The CNI shim executable (cni/shim), built by scripts/build-shim: instant once cached."""
    return build_shim()


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    """Two nodes joined by an underlay, each with its enforcer; pods in namespaces x, y, z."""
    with Testbed(tmp_path_factory.mktemp("bed"), nodes=2) as bed:
        bed.namespace("x", team="a")
        bed.namespace("y", team="b")
        bed.namespace("z")
        for node in bed.nodes:
            node.start_enforcer()
        n1, n2 = bed.nodes
        n1.add_pod("x/a", {"app": "a"}, ports=[("http", 80, "TCP")], publish=False)
        n1.add_pod("x/b", {"app": "b"}, ports=[("http", 8080, "TCP")], publish=False)
        n2.add_pod("y/a", {"app": "a"}, ports=[("http", 81, "TCP")], publish=False)
        n1.add_pod("y/b", {"app": "b"}, publish=False)
        n2.add_pod("z/c", {"app": "c"}, ports=[("dns", 53, "UDP")], publish=False)
        bed.publish()
        bed.wait_converged()
        yield bed
