from __future__ import annotations

import random
import re

import pytest

from tabes.tasks import word_problems as wp


def test_problems_are_seeded_and_consistent():
    a, b = wp.problems(300, seed=11), wp.problems(300, seed=11)
    assert a == b and a != wp.problems(300, seed=12)
    for p in a:
        assert p.prompt == f"Question: {p.question}\nAnswer:"
        assert wp.extract_answer(p.answer) == str(p.result) and p.result >= 0
        equations = re.findall(r"(\d+) ([+-]) (\d+) = (\d+)", p.answer)
        assert 3 <= len(equations) <= 4
        for x, op, y, z in equations:
            assert int(x) + (int(y) if op == "+" else -int(y)) == int(z)
            assert 10 <= int(x) <= 99 and 10 <= int(z) <= 99 and 2 <= int(y) <= 9
        assert {op for p in a for _, op, _, _ in re.findall(r"(\d+) ([+-]) (\d+) = (\d+)", p.answer)} == {"+", "-"}
        assert int(equations[0][0]) == int(re.search(r"has (\d+)", p.question).group(1))
        assert equations[-1][3] == str(p.result)


def test_make_problem_rejects_bad_change_counts():
    with pytest.raises(ValueError, match="min_changes"):
        wp.make_problem(random.Random(0), min_changes=3, max_changes=2)


def test_splits_are_fixed_and_disjoint_from_training():
    dev, test = wp.split("dev"), wp.split("test")
    assert len(dev) == len(test) == 1000
    held = wp.held_out_questions()
    assert len(held) > 1900
    stream = wp.TrainStream(0)
    assert not {p.question for p in stream.take(3000)} & held
    # the exclusion is what keeps them apart: a stream told to skip its own next question skips it
    nxt = wp.make_problem(random.Random(5)).question
    s = wp.TrainStream(5)
    s.exclude = {nxt}
    assert s.take(1)[0].question != nxt
    with pytest.raises(ValueError, match="split must be one of"):
        wp.split("train")


def test_shipped_test_file_is_the_test_split():
    from pathlib import Path

    import tabes

    shipped = Path(tabes.__file__).parent / "integrations" / "lm_eval_tasks" / "tabes_text_demo" / "test.jsonl"
    assert wp.read_jsonl(shipped) == wp.split("test")


def test_diagnose_names_where_an_answer_went_wrong():
    p = wp.Problem(question="q", answer="47 + 25 = 72. 72 - 18 = 54.\n#### 54", result=54)
    assert wp.diagnose(" 47 + 25 = 72. 72 - 18 = 54.\n#### 54", p) == {"correct": True, "kind": None, "places": []}
    assert wp.diagnose(" 47 + 25 = 72. 72 - 18 = 54.", p)["kind"] == "no_answer"
    d = wp.diagnose(" 47 + 25 = 72. 72 - 18 = 64.\n#### 64", p)
    assert d["kind"] == "arithmetic" and d["places"] == ["tens"]
    assert wp.diagnose(" 47 + 25 = 72. 72 - 18 = 54.\n#### 53", p) == {"correct": False, "kind": "copy", "places": ["ones"]}
    d = wp.diagnose(" 47 + 25 = 72. 72 - 17 = 55.\n#### 55", p)
    assert d["kind"] == "reasoning" and d["places"] == ["ones"]
    assert wp.diagnose(" 47 + 25 = 72. 72 + 54 = 126.\n#### 126", p)["places"][0] == "length"


def test_jsonl_round_trip_and_bad_rows(tmp_path):
    items = wp.problems(5, seed=3)
    wp.write_jsonl(tmp_path / "p.jsonl", items)
    assert wp.read_jsonl(tmp_path / "p.jsonl") == items
    (tmp_path / "bad.jsonl").write_text('{"question": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        wp.read_jsonl(tmp_path / "bad.jsonl")
