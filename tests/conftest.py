"""Fixtures: a test bed of simulated nodes, shared by the dataplane tests of a
module. Hypothesis runs derandomized under HYPOTHESIS_PROFILE=ci (CI sets it),
so a CI failure reproduces with the same examples."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from enforcer.testbed.simulation import Testbed, build_shim

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Kernel and cluster tests fail, never skip, where they cannot run."""
    needs = [m for m in ("kernel", "cluster") if item.get_closest_marker(m)]
    if needs and os.geteuid() != 0:
        pytest.fail(f"{item.nodeid}: marked {', '.join(needs)}: needs root (network namespaces, nftables)", pytrace=False)


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
