"""The arguments of ``pipewell test``, apart from the command itself.

The CLI builds its whole parser at every start, ``pipewell dev`` included: this
module imports nothing but the standard library, so doing so does not load the
test client (httpx, httpx_sse, textual), which only ``pipewell test`` runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_test_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("flow", type=Path, help="the flow file (YAML or JSON)")
    parser.add_argument(
        "--nodedefs", type=Path, action="append", default=[], help="a NodeDef file (repeatable)"
    )
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="EDGE=PATH",
        help="upload this file to the edge's WaitingURL (repeatable); an edge the flow "
        "lists in Collections takes a zip or tar, or a folder whose files are put as its items",
    )
    parser.add_argument(
        "--flag",
        action="append",
        default=[],
        metavar="NODE.FLAG=VALUE",
        help="set a node's flag for this run (repeatable)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out"),
        help="where outputs go (default ./out); a collection into OUT/EDGE/, item by item",
    )
    parser.add_argument(
        "--server",
        default=None,
        help="a running service's URL (default: start one in this process, as pup test does)",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("PIPEWELL_API_KEY"),
        help="an API key for --server (default $PIPEWELL_API_KEY)",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="the embedded service's configuration"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the embedded service's data directory (default: a temporary one, removed after)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="print lines, not the live view (the default when not on a terminal)",
    )


__all__ = ["add_test_args"]
