"""bench label_audit: which generation run a combined dataset's source came from."""

from __future__ import annotations


def test_the_innermost_part_prefix_names_the_run():
    from bench.label_audit import _run_of

    # A dataset combined from #7 (itself combined from #5 and #6) and #9: this
    # source was generated in run #2 and reached #7 through #5.
    assert _run_of("d7:d5:d2:chemical-warfare-agent-acquisition-or-synthesis-0015") == 2
    assert _run_of("d6:large-scale-dissemination-of-agents-0003") == 6
    assert _run_of("household-chemical-safety-0001") == 0  # never combined
    assert _run_of("d5:notarun:x-1") == 5  # only "d<digits>" parts are runs


def test_harmful_test_prompts_are_grouped_by_run_with_author_examples_apart():
    from bench.label_audit import harmful_by_run

    rows = [
        (1, "d7:d5:d2:chem-0001", "generated"),
        (0, "d7:d5:d2:chem-0002", "generated"),  # benign: in no group
        (1, "d7:d6:agents-0003", "generated"),
        (1, "d7:d5:d2:chem-author-0", "author"),  # reached #7 through run #2's copy
        (1, "d7:d5:d2:chem-0004", "generated"),
        (1, "d7:d9:mystery-0005", "generated"),  # a run whose seed is unknown
    ]
    groups = harmful_by_run(rows, dataset_pk=7, seeds={2: 5, 6: 7})
    assert groups == {"author_examples": [3], "run_d2_seed5": [0, 4],
                      "run_d6_seed7": [2], "run_d9_seed?": [5]}  # fmt: skip
    # A dataset never combined: its sources carry no prefix and are its own run's.
    assert harmful_by_run([(1, "chem-0001", "generated")], 4, {0: 3}) == {"run_d4_seed3": [0]}
