"""bench label_audit: which generation run a combined dataset's source came from."""

from __future__ import annotations


def test_the_innermost_part_prefix_names_the_run():
    from bench.label_audit import _run_of

    # #9 = combine(#5 = combine(#2, #3), #6): a seed-5 source reached it through #2.
    assert _run_of("d8:d5:d2:chemical-warfare-agent-acquisition-or-synthesis-0015") == 2
    assert _run_of("d6:large-scale-dissemination-of-agents-0003") == 6
    assert _run_of("household-chemical-safety-0001") == 0  # never combined
    assert _run_of("d5:notarun:x-1") == 5  # only "d<digits>" parts are runs
