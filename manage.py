#!/usr/bin/env python
"""Django's command-line utility, with one-line start-up errors."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardweb.settings")
    from guardweb.embedded import StartupError

    try:
        from django.core.management import execute_from_command_line

        execute_from_command_line(sys.argv)
    except StartupError as exc:
        print(f"guardweb: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
