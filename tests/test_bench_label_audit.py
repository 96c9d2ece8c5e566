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
