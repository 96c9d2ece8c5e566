"""Benchmarks: `python -m bench NAME [--json OUT]`.

Each benchmark is a module `bench/<name>.py` with `main(argv: list[str]) -> dict`;
the runner prints the returned dict and writes it to --json. Benchmarks report
ratios measured inside one run (guarded vs unguarded, batched vs not), because
these machines are shared and absolute timings are noisy.
"""
