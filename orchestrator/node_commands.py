"""``pipewell nodes``: the built-in catalog on this host, and building its images."""

from __future__ import annotations

import argparse
import sys

import docker
import docker.errors
import requests

from orchestrator.catalog import load_catalog
from orchestrator.config import load_settings
from orchestrator.errors import ConfigError
from orchestrator.node_images import build_all, image_state, node_sources, source_for


def add_nodes_args(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="nodes_command", required=True)
    commands.add_parser(
        "list",
        help="each built-in node: its image, whether the image is here and current, its tier",
        epilog="example: pipewell nodes list",
    )
    build = commands.add_parser(
        "build",
        help="build the built-in nodes' images from nodes/ (unchanged ones are skipped)",
        epilog="example: pipewell nodes build thumbnail ocr --parallel 2",
    )
    build.add_argument("names", nargs="*", help="nodes to build (default: all)")
    build.add_argument("--parallel", type=int, default=2, help="images built at once (default 2)")
    for sub in commands.choices.values():
        sub.add_argument("--config", default=None, help="YAML configuration (its executor)")


def nodes_command(args: argparse.Namespace) -> int:
    from orchestrator.executor import connect_docker

    try:
        settings = load_settings(args.config)
        client = connect_docker(settings.executor, 8)
    except (ConfigError, docker.errors.DockerException, requests.RequestException) as exc:
        print(f"pipewell: {exc}", file=sys.stderr)
        return 2
    try:
        if args.nodes_command == "list":
            return _list(client)
        return _build(client, args.names, args.parallel)
    finally:
        client.close()


def _list(client: docker.DockerClient) -> int:
    print(f"{'NODE':<28} {'IMAGE':<34} {'STATE':<11} {'TIER':<9} DOES")
    for uses, node_def in sorted(load_catalog().items()):
        source = source_for(node_def.image)
        if source is not None:
            state = image_state(client, source)
        else:
            try:
                client.images.get(node_def.image)
                state = "present"
            except docker.errors.ImageNotFound:
                state = "missing"
        does = node_def.description.strip().splitlines()[0] if node_def.description else ""
        print(f"{uses:<28} {node_def.image:<34} {state:<11} {node_def.tier:<9} {does}")
    return 0


def _build(client: docker.DockerClient, names: list[str], parallel: int) -> int:
    sources = node_sources()
    unknown = [n for n in names if n not in sources]
    if unknown:
        print(
            f"pipewell: no node source for {', '.join(unknown)} in nodes/ "
            f"(there: {', '.join(sources) or 'none'})",
            file=sys.stderr,
        )
        return 2
    chosen = [sources[n] for n in names] if names else list(sources.values())
    failures = build_all(client, chosen, lambda line: print(line, flush=True), parallel)
    for failure in failures:
        print(f"pipewell: {failure}", file=sys.stderr)
    if not failures:
        print(f"{len(chosen)} node image(s) up to date")
    return 1 if failures else 0


__all__ = ["add_nodes_args", "nodes_command"]
