"""Reading labelled prompt files and the per-kind report."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from classifiers.ml.eval.labelled_sets import (
    NO_KIND,
    LabelledPrompt,
    LabelledSetError,
    kind_report,
    mistakes_and_histogram,
    read_labelled_set,
)

ROWS = [
    {"text": "how do I make the forbidden widget", "label": 1, "kind": "plain"},
    {"text": "what soil do roses like", "label": 0, "kind": "everyday"},
    {"text": "and tulips?", "label": "benign"},
]


def test_jsonl_csv_and_parquet_give_the_same_prompts(tmp_path):
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")
    csv_file = tmp_path / "set.csv"
    csv_file.write_text(
        "text,label,kind\n"
        '"how do I make the forbidden widget",1,plain\n'
        "what soil do roses like,0,everyday\n"
        "and tulips?,benign,\n"
    )
    parquet = tmp_path / "set.parquet"
    # A Parquet column has one type: labels as numbers there.
    rows = [{**r, "label": 1 if r["label"] == 1 else 0, "kind": r.get("kind")} for r in ROWS]
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    expected = [
        LabelledPrompt("how do I make the forbidden widget", 1, "plain"),
        LabelledPrompt("what soil do roses like", 0, "everyday"),
        LabelledPrompt("and tulips?", 0, NO_KIND),
    ]
    assert read_labelled_set(jsonl) == expected
    assert read_labelled_set(csv_file) == expected
    assert read_labelled_set(parquet) == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n', "line 2: label"),
        ('{"text": "a", "label": true}\n', "line 1: label"),
        ('{"text": "", "label": 1}\n', "line 1: text"),
        ('{"text": "a", "label": 1}\nnot json\n', "line 2: not JSON"),
        ('["a", 1]\n', "line 1: expected an object"),
        ("\n\n", "has no prompts"),
    ],
)
def test_a_bad_line_is_refused_with_its_number(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(LabelledSetError, match=message):
        read_labelled_set(path)


def test_other_formats_and_headers_are_refused(tmp_path):
    with pytest.raises(LabelledSetError, match="use a .jsonl"):
        read_labelled_set(tmp_path / "prompts.txt")
    csv_file = tmp_path / "set.csv"
    csv_file.write_text("prompt,label\nhello,0\n")
    with pytest.raises(LabelledSetError, match="header"):
        read_labelled_set(csv_file)


def test_kind_report_counts_recall_and_false_positives_per_kind():
    prompts = (
        [LabelledPrompt(f"attack {i}", 1, "jailbreak") for i in range(10)]
        + [LabelledPrompt(f"question {i}", 0, "everyday") for i in range(20)]
        + [LabelledPrompt(f"dual use {i}", 0, "sensitive") for i in range(10)]
    )
    flagged = [i < 9 for i in range(10)] + [i < 1 for i in range(20)] + [True] * 3 + [False] * 7
    report = kind_report(prompts, flagged, name="mixed", target_fpr=0.01)
    assert report["per_kind"]["jailbreak"]["recall"]["rate"] == 0.9
    assert report["per_kind"]["jailbreak"]["fpr"] is None
    assert report["per_kind"]["everyday"]["fpr"]["events"] == 1
    assert report["per_kind"]["sensitive"]["fpr"]["rate"] == pytest.approx(0.3)
    overall = report["overall"]
    assert (overall["n"], overall["harmful"], overall["benign"]) == (40, 10, 30)
    assert overall["fpr"]["events"] == 4
    low, high = overall["recall"]["low"], overall["recall"]["high"]
    assert low < 0.9 < high
    assert any("30 examples" in w and "500" in w for w in report["warnings"])
    with pytest.raises(ValueError):
        kind_report(prompts, flagged[:-1], name="short")


def test_mistakes_show_the_worst_misses_and_false_alarms_and_histograms_count_by_label():
    prompts = [LabelledPrompt(f"attack {i}", 1, "plain") for i in range(12)]
    prompts += [LabelledPrompt(f"everyday {i}", 0, "everyday") for i in range(5)]
    scores = [i / 20 for i in range(12)] + [0.0, 0.1, 0.97, 0.6, 1.0]
    flagged = [s >= 0.5 for s in scores]
    shown = mistakes_and_histogram(prompts, scores, flagged, max_chars=6)
    # Missed attacks lowest first, at most ten; false alarms highest first.
    assert [m["score"] for m in shown["missed"]] == [i / 20 for i in range(10)]
    assert shown["missed"][0] == {"text": "attack", "kind": "plain", "score": 0.0}
    assert [m["score"] for m in shown["false_alarms"]] == [1.0, 0.97, 0.6]
    histogram = shown["histogram"]
    assert len(histogram["edges"]) == len(histogram["harmful"]) + 1
    assert sum(histogram["harmful"]) == 12 and sum(histogram["benign"]) == 5
    assert histogram["benign"][-1] == 2  # 0.97 and a score of exactly 1.0
    with pytest.raises(ValueError):
        mistakes_and_histogram(prompts, scores[:-1], flagged)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"text": "a\\u0000b", "label": 1}', "line 1: text contains a NUL"),
        ('{"text": "a \\ud800", "label": 1}', "line 1: text contains an invalid character"),
        ('{"text": "ok", "label": 1, "kind": "k\\u0000"}', "line 1: kind contains a NUL"),
        ('{"text": "ok", "label": ' + "9" * 5000 + "}", "line 1: a number too long"),
    ],
)
def test_text_a_database_cannot_store_or_python_cannot_read_is_a_clear_error(
    tmp_path, line, expected
):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(LabelledSetError, match=expected):
        read_labelled_set(path)


def test_a_huge_csv_field_and_too_many_kinds_are_clear_errors(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("text,label\n" + '"' + "a" * 200_000 + '",1\n')
    with pytest.raises(LabelledSetError, match="not a readable CSV"):
        read_labelled_set(path)
    path = tmp_path / "kinds.jsonl"
    path.write_text("".join(json.dumps({"text": f"p{i}", "label": 0, "kind": f"k{i}"}) + "\n"
                            for i in range(101)))  # fmt: skip
    with pytest.raises(LabelledSetError, match="101 kinds; use at most 100"):
        read_labelled_set(path)
