from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

# Modules of this package that are not benchmarks: shared set-up, not runnable.
HELPERS = frozenset({"fixtures"})


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(here)])
        if not m.name.startswith("_") and m.name not in HELPERS
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=available(), help="benchmark to run")
    parser.add_argument("--json", dest="json_out", help="write the result as JSON here")
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(f"bench.{args.name}")
    result = module.main(rest)
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
