"""`python -m framework <command>`: the framework's tools that are not a training run.

    python -m framework view <run or sweep folder> [--port 8080] [--host 127.0.0.1]
        the exported mesh(es) in the viewer's page, until Ctrl-C (framework/mesh_view.py)
    python -m framework summary <folder of runs>
        the runs' table (framework/sweep_summary.py; also `python -m framework.sweep_summary`)
"""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    commands = ("view", "summary")
    if not argv or argv[0] not in commands:
        shown = f"unknown command {argv[0]!r}; " if argv and argv[0] not in ("-h", "--help") else ""
        print(f"{shown}usage: python -m framework {{{','.join(commands)}}} ...\n{__doc__}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "view":
        from framework.mesh_view import main as view

        return view(argv[1:])
    from framework.sweep_summary import main as summary

    return summary(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
