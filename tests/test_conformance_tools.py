"""The helpers around the ClusterNetworkPolicy conformance run: the copy
without SCTP probes deletes those and nothing else, and the summary counts
every declared subtest, run or not."""

from __future__ import annotations

import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))

from conformance_summary import suite_subtests  # noqa: E402
from conformance_without_sctp import without_sctp_probes  # noqa: E402

GO = """\
\tShortName:   "CNPAdminTierGress",
\t\tt.Run("allow across protocols", func(t *testing.T) {
\t\t\tkubernetes.PokeServer(t, s.ClientSet, &s.KubeConfig, "ns", "pod-0", "tcp",
\t\t\t\tserverPod.Status.PodIP, int32(80), s.TimeoutConfig, true)
\t\t\tkubernetes.PokeServer(t, s.ClientSet, &s.KubeConfig, "ns", "pod-0", "sctp",
\t\t\t\tserverPod.Status.PodIP, int32(9003), s.TimeoutConfig, f(g(1)))
\t\t\tkubernetes.PokeServer(t, s.ClientSet, &s.KubeConfig, "ns", "pod-1", "udp",
\t\t\t\tserverPod.Status.PodIP, int32(53), s.TimeoutConfig, false)
\t\t})
\t\tt.Run("tcp only", func(t *testing.T) {
\t\t\tkubernetes.PokeServer(t, s.ClientSet, &s.KubeConfig, "ns", "pod-0", "tcp",
\t\t\t\tserverPod.Status.PodIP, int32(80), s.TimeoutConfig, true)
\t\t})
"""


def test_only_the_sctp_probes_are_deleted_each_to_its_closing_parenthesis() -> None:
    text, removed = without_sctp_probes(GO)
    assert removed == 1
    assert '"sctp"' not in text and "int32(9003)" not in text
    assert text == GO.replace(
        '\t\t\tkubernetes.PokeServer(t, s.ClientSet, &s.KubeConfig, "ns", "pod-0", "sctp",\n'
        "\t\t\t\tserverPod.Status.PodIP, int32(9003), s.TimeoutConfig, f(g(1)))\n",
        "",
    )


def test_the_summary_knows_which_subtests_probe_sctp(tmp_path) -> None:
    tests = tmp_path / "conformance" / "tests"
    tests.mkdir(parents=True)
    (tests / "gress.go").write_text(GO)
    assert suite_subtests(str(tmp_path)) == {"CNPAdminTierGress": [("allow across protocols", True), ("tcp only", False)]}
