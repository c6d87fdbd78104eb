"""The connectivity matrix helper: agreement prints one matrix, disagreement marks the cells."""

from rules.matrix import Matrix


def test_matching_matrices_print_once() -> None:
    m = Matrix.probe(["a", "b"], lambda s, d: s == "a")
    assert m.compare(m) == m.render()
    assert m.render().splitlines()[1].split()[-2:] == ["-", "."]


def test_differences_are_marked() -> None:
    expected = Matrix.probe(["a", "b", "c"], lambda s, d: True)
    observed = Matrix.probe(["a", "b", "c"], lambda s, d: (s, d) != ("b", "c"))
    assert expected.mismatches(observed) == [("b", "c")]
    report = expected.compare(observed)
    assert "differences (1, marked !)" in report
    assert report.rstrip().splitlines()[-2].split()[-1] == "!"
