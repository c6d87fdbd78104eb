"""Pod records: written atomically, read back exactly, and corrupt ones named, not dropped silently."""

from __future__ import annotations

import os

import pytest

from cni.records import PodRecord, RecordError, read_all_records, read_record, records_signature, remove_record, write_record

RECORD = PodRecord(
    "c0ffee", "x", "a", "uid-1", "veth1234", "02:00:00:00:00:01", ("10.0.0.2", "fd00::2"), "/var/run/netns/p", "eth0"
)


def test_a_record_reads_back_as_written(tmp_path) -> None:
    write_record(tmp_path, RECORD)
    assert read_record(tmp_path, "c0ffee") == RECORD
    assert os.listdir(tmp_path / "pods") == ["c0ffee.json"], "no temporary file is left behind"
    write_record(tmp_path, RECORD._replace(held=True))
    assert read_record(tmp_path, "c0ffee").held


def test_missing_records_are_none_and_removal_is_idempotent(tmp_path) -> None:
    assert read_record(tmp_path, "nope") is None
    write_record(tmp_path, RECORD)
    assert remove_record(tmp_path, "c0ffee") and not remove_record(tmp_path, "c0ffee")


@pytest.mark.parametrize("text", ["{truncated", "[1, 2]", '{"container_id": "c", "surprise": 1}', '{"container_id": "c"}'])
def test_corrupt_records_are_reported_by_name(tmp_path, text: str) -> None:
    write_record(tmp_path, RECORD)
    (tmp_path / "pods" / "bad.json").write_text(text)
    records, errors = read_all_records(tmp_path)
    assert records == [RECORD]
    assert len(errors) == 1 and "bad.json: corrupt record" in errors[0]
    with pytest.raises(RecordError):
        read_record(tmp_path, "bad")


def test_container_ids_cannot_escape_the_directory(tmp_path) -> None:
    with pytest.raises(RecordError):
        write_record(tmp_path, RECORD._replace(container_id="../../etc/x"))


def test_the_signature_changes_with_the_records(tmp_path) -> None:
    empty = records_signature(tmp_path)
    write_record(tmp_path, RECORD)
    assert records_signature(tmp_path) != empty
