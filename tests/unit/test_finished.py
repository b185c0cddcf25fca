"""mmt_ard.finished: a result is reused only under the key it was computed with, and only when whole."""

import json
import os

from mmt_ard.finished import FinishedWork, digest, file_stamp


def test_a_result_is_reused_only_under_its_own_key(tmp_path):
    work = FinishedWork(tmp_path / "r.json", {"eval": {"eps": [1, 2]}, "model": "a"}, tmp_path / "r.key.json")
    assert not work.done() and work.load() is None
    work.save({"acc": 1.5})
    assert work.load() == {"acc": 1.5}
    # the same key rebuilt (tuples as JSON writes them) is the same key; another value is not
    assert FinishedWork(work.result, {"model": "a", "eval": {"eps": (1, 2)}}, work.key_file).done()
    assert not FinishedWork(work.result, {"eval": {"eps": [1, 3]}, "model": "a"}, work.key_file).done()


def test_a_result_without_its_key_or_with_a_torn_key_is_not_trusted(tmp_path):
    work = FinishedWork(tmp_path / "r.json", {"k": 1}, tmp_path / "r.key.json")
    work.result.write_text(json.dumps({"acc": 1.0}))  # a crash between the result and its key
    assert not work.done()
    work.key_file.write_text('{"k": ')  # a torn key file
    assert not work.done()
    work.mark_done()  # a result somebody else wrote (a run's summary.json), now recorded under the key
    assert work.load() == {"acc": 1.0}


def test_named_work_carries_the_key_in_its_file_name(tmp_path):
    a = FinishedWork.named(tmp_path, "evaluation", {"w": 1})
    b = FinishedWork.named(tmp_path, "evaluation", {"w": 2})
    assert a.result != b.result and a.result.name == f"evaluation-{digest({'w': 1})}.json"
    a.save([1])
    assert a.load() == [1] and not b.done()


def test_a_changed_input_file_changes_its_stamp(tmp_path):
    f = tmp_path / "w.safetensors"
    assert file_stamp(f) == [str(f), 0, 0] and file_stamp(None) == [None, 0, 0]
    f.write_bytes(b"12")
    first = file_stamp(f)
    f.write_bytes(b"123")  # other size
    assert file_stamp(f) != first
    os.utime(f, ns=(1, 10**9))
    second = file_stamp(f)
    os.utime(f, ns=(1, 2 * 10**9))  # same size, newer file
    assert file_stamp(f) != second
