"""The CLI refuses configurations that would expose the service, saying why."""

import argparse
import importlib.metadata
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog

from orchestrator import cli
from orchestrator.cli import main


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() points structlog at this test's captured stderr, closed after it:
    later tests in the same process would log to a closed file."""
    yield
    structlog.reset_defaults()


def test_non_loopback_without_auth_is_refused(capsys, tmp_path):
    assert main(["dev", "--host", "0.0.0.0", "--data-dir", str(tmp_path)]) == 2
    assert "refusing to listen on 0.0.0.0" in capsys.readouterr().err


def test_bad_config_file_names_the_problem(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("worker:\n  tiers: [c-huge]\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "unknown tier(s) ['c-huge']" in capsys.readouterr().err


HANGING_SHUTDOWN = """
import asyncio, signal, sys
from orchestrator import cli

cli.SHUTDOWN_LIMIT = float(sys.argv[1])
cli.configure_logging("info")

async def never_finishes() -> None:
    await asyncio.Event().wait()

async def main() -> None:
    waiting = asyncio.create_task(cli._until_stopped_then(never_finishes))
    await asyncio.sleep(0)  # one step of it: up to its wait for a signal
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    print("ready", flush=True)
    await waiting

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("limit", "signals", "reason"), [(0.5, 1, "over 0.5 s"), (60.0, 2, "second signal")]
)
def test_a_shutdown_that_hangs_ends_the_process_saying_what_it_waited_for(
    limit: float, signals: int, reason: str
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", HANGING_SHUTDOWN, str(limit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    assert process.stderr is not None
    seen = b""
    for sent in range(1, signals + 1):
        process.send_signal(signal.SIGTERM)
        if sent < signals:
            # Two signals sent before the first is handled would count as one.
            while b"shutting_down" not in seen:
                line = process.stderr.readline()
                assert line, "the process ended before it said it was shutting down"
                seen += line
    _, err = process.communicate(timeout=10)
    assert process.returncode == cli.EXIT_SHUTDOWN_UNFINISHED
    log = (seen + err).decode()
    assert "shutdown_unfinished" in log and reason in log, log
    # Where it hung: the close coroutine, down to the await that never returned.
    assert "never_finishes" in log, log


def test_validate_accepts_the_examples(capsys):
    assert main(["validate", "examples/greeter.yaml"]) == 0
    assert capsys.readouterr().out == "examples/greeter.yaml: valid, 1 node(s)\n"
    assert main(["validate", "examples/resize.json"]) == 0


def test_validate_lists_every_error_with_its_code_and_where(capsys, tmp_path):
    flow = tmp_path / "bad.yaml"
    flow.write_text(
        "Name: bad\nNodes:\n"
        "  - {ID: a, Uses: nobody/missing, Inputs: [{Name: in, Edge: src}],"
        " Outputs: [{Name: out, Edge: mid}]}\n"
        "  - {ID: '../b', Uses: demo/greet, Inputs: [{Name: in, Edge: mid}],"
        " Outputs: [{Name: out, Edge: out}]}\n"
    )
    # demo/greet comes from another flow file's NodeDefs.
    assert main(["validate", str(flow), "--nodedefs", "examples/greeter.yaml"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("error NAME_001 (node '../b', field 'Flow.Nodes.1.ID'): ")
    assert lines[1].startswith("error NODE_001 (node 'a', field 'Flow.Nodes.0.Uses'): ")
    assert "nobody/missing" in lines[1]
    assert lines[2] == f"{flow}: 2 error(s), 0 warning(s)"


def test_validate_finds_nodedefs_beside_the_flow_and_reports_schema_errors(capsys, tmp_path):
    (tmp_path / "nodedefs").mkdir()
    (tmp_path / "nodedefs" / "echo.yaml").write_text(
        "Publisher: t\nName: echo\nImage: pipewell/busybox:latest\n"
    )
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "Name: ok\nNodes:\n  - {ID: n, Uses: t/echo, Inputs: [{Name: in, Edge: a}],"
        " Outputs: [{Name: out, Edge: b}]}\n"
    )
    assert main(["validate", str(flow)]) == 0
    flow.write_text("Name: x\nNodes: nope\n")
    assert main(["validate", str(flow)]) == 1
    assert "error SCHEMA_001 (field 'Flow.Nodes'): " in capsys.readouterr().out
    flow.write_text("Name: [unclosed\n")
    assert main(["validate", str(flow)]) == 2
    assert f"pipewell: {flow}: not valid YAML" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "absent.yaml")]) == 2


def test_validate_checks_catalog_flag_values_before_anything_runs(capsys, tmp_path):
    flow = tmp_path / "photos.yaml"
    flow.write_text(
        "Name: photos\nNodes:\n"
        "  - {ID: small, Uses: pipewell/resize, Inputs: [{Name: image, Edge: photo}],"
        " Outputs: [{Name: resized, Edge: mid}], Flags: [{Name: width, Value: wide}]}\n"
        "  - {ID: bmp, Uses: pipewell/convert-image, Inputs: [{Name: image, Edge: mid}],"
        " Outputs: [{Name: converted, Edge: out}], Flags: [{Name: format, Value: bmp},"
        " {Name: quality, Value: 90}]}\n"
    )
    assert main(["validate", str(flow)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        "error NODE_012 (node 'small', field 'Flow.Nodes.0.Flags.0.Value'): node 'small' sets "
        "flag 'width' to 'wide', which is not an integer"
    )
    assert lines[1].startswith("error NODE_012 (node 'bmp', field 'Flow.Nodes.1.Flags.0.Value')")
    assert "'bmp', which is not one of the values it takes: 'png'" in lines[1]
    assert lines[2] == f"{flow}: 2 error(s), 0 warning(s)"


def test_every_command_says_what_it_does_with_an_example():
    def commands(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, str]]:
        yield path, parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, f"{path} {name}")

    helps = dict(commands(cli.build_parser(), "pipewell"))
    # pipewell, its 16 commands, the 3 of keys, the 2 of nodes, the 2 of flows
    assert len(helps) == 24
    for path, text in helps.items():
        assert "\nexample: " in text, f"{path} --help has no example"
    assert "pipewell test examples/resize.json --input input-image=photo.png" in " ".join(
        helps["pipewell test"].split()
    )


def test_every_command_has_a_description_and_every_option_its_help():
    def parsers(
        parser: argparse.ArgumentParser, path: str
    ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from parsers(sub, f"{path} {name}")

    every = dict(parsers(cli.build_parser(), "pipewell"))
    for path, parser in every.items():
        assert parser.description, f"{path} has no description"
        assert " ".join(parser.description.split()) in " ".join(parser.format_help().split())
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help and action.help != argparse.SUPPRESS, f"{path} {name}: no help"
    described = " ".join(every["pipewell status"].format_help().split())
    assert "each node's state, attempt and error" in described
    # The nodes commands were given one line of help only: it is their description too.
    assert every["pipewell nodes list"].description.startswith("each built-in node: its image")


def test_version_is_the_installed_packages(capsys):
    with pytest.raises(SystemExit) as ended:
        main(["--version"])
    assert ended.value.code == 0
    assert capsys.readouterr().out == f"pipewell {importlib.metadata.version('pipewell')}\n"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A current directory of its own, with no data directory named in the environment."""
    monkeypatch.delenv("PIPEWELL_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_keys_create_says_where_it_wrote_and_warns_of_a_new_database(elsewhere, capsys):
    assert main(["keys", "create", "--name", "laptop", "--tenant", "demo"]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip()) == 64
    where = elsewhere / ".pipewell"
    assert f"warning: {where} holds no service database yet" in err
    assert f"(pipewell dev --data-dir {where})" in err
    assert f"key 'laptop' for tenant 'demo' written to the data directory {where}: " in err
    assert (where / "pipewell.sqlite3").is_file()
    # The database is there now: no warning for the next key.
    assert main(["keys", "create", "--name", "ci"]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and f"written to the data directory {where}" in err
    assert main(["keys", "list"]) == 0
    out, err = capsys.readouterr()
    assert err == f"keys of the data directory {where}\n"
    assert sorted(line.split()[0] for line in out.splitlines()[1:]) == ["ci", "laptop"]
    assert main(["keys", "revoke", "ci"]) == 0
    assert f"revoked 'ci' in {where}: " in capsys.readouterr().err


def test_keys_find_the_data_directory_as_dev_and_serve_do(elsewhere, capsys, monkeypatch):
    from orchestrator.config import load_settings

    named = elsewhere / "named"
    monkeypatch.setenv("PIPEWELL_DATA_DIR", str(named))
    assert main(["keys", "create", "--name", "env"]) == 0
    assert f"written to the data directory {named}: " in capsys.readouterr().err
    # dev and serve resolve it the same way: the flag, the variable, the config, the default.
    assert load_settings(None, data_dir=cli.data_dir_given(None)).data_dir == named
    flag = elsewhere / "flag"
    assert cli.data_dir_given(flag) == flag
    monkeypatch.delenv("PIPEWELL_DATA_DIR")
    config = elsewhere / "config.yaml"
    config.write_text(f"data_dir: {elsewhere / 'configured'}\n")
    assert main(["keys", "create", "--name", "conf", "--config", str(config)]) == 0
    assert f"written to the data directory {elsewhere / 'configured'}: " in (
        capsys.readouterr().err
    )
    assert main(["keys", "create", "--name", "flag", "--data-dir", str(flag)]) == 0
    assert f"written to the data directory {flag}: " in capsys.readouterr().err


def test_keys_list_and_revoke_make_no_database_where_there_is_none(elsewhere, capsys):
    for argv in (["keys", "list"], ["keys", "revoke", "laptop"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"no service database in {elsewhere / '.pipewell'}, so no keys there" in err
        assert "--data-dir, $PIPEWELL_DATA_DIR or --config" in err
    assert not (elsewhere / ".pipewell").exists()


def test_a_refusal_of_the_service_says_whether_a_key_was_given(elsewhere, monkeypatch):
    from orchestrator.client import key_refusal

    assert "none was given: pass --key KEY or set PIPEWELL_API_KEY" in key_refusal(False)
    refused = key_refusal(True)
    assert "does not know it, or it was revoked" in refused
    assert f"writes to {elsewhere / '.pipewell'}" in refused
    monkeypatch.setenv("PIPEWELL_DATA_DIR", "/srv/pipewell")
    assert "writes to /srv/pipewell (--data-dir" in key_refusal(True)


def test_upload_edges_are_those_a_run_waits_for():
    from orchestrator.flow_files import upload_edges
    from orchestrator.models import DataWell, Flow

    flow = Flow.model_validate(
        {
            "Name": "f",
            "Nodes": [
                {"ID": "a", "Uses": "t/x", "Inputs": [{"Name": "i", "Edge": "photo"},
                 {"Name": "j", "Edge": "logo"}], "Outputs": [{"Name": "o", "Edge": "mid"}]},
                {"ID": "b", "Uses": "t/x", "Inputs": [{"Name": "i", "Edge": "mid"},
                 {"Name": "j", "Edge": "photo"}], "Outputs": [{"Name": "o", "Edge": "out"}]},
            ],
        }
    )  # fmt: skip
    assert upload_edges(flow) == ["photo", "logo"]
    # A static well's object is in its store already: no file is waited for there.
    flow.data_wells = [
        DataWell(edge="photo", source="upload"),
        DataWell(edge="logo", source="static", key="brand/logo.png"),
        DataWell(edge="out"),
    ]
    assert upload_edges(flow) == ["photo"]


#: What `pipewell dev` imports before it answers, then opens its default (local) store
#: and logs as JSON: it reports the libraries that only other commands or backends need.
DEV_IMPORTS = """
import sys
from pathlib import Path

import orchestrator.api.app
import orchestrator.cli
from orchestrator.config import load_settings
from orchestrator.logs import configure_logging
from orchestrator.stores import StoreRegistry

configure_logging("info", "json")
StoreRegistry(load_settings(None, data_dir=Path(sys.argv[1])), bytes(32)).close()
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""

#: Only `pipewell test` (httpx, httpx_sse, textual) and s3 stores (boto3, botocore) use
#: them. rich is not among them: `import structlog` imports it, whatever we need.
NOT_FOR_DEV = {"boto3", "botocore", "httpx", "httpx_sse", "textual"}


def test_dev_does_not_import_what_only_other_commands_need(tmp_path):
    # In a fresh interpreter: this one has imported everything the other tests use.
    done = subprocess.run(
        [sys.executable, "-c", DEV_IMPORTS, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    imported = set(done.stdout.split())
    assert {"aiohttp", "docker", "orchestrator", "pydantic", "storage"} <= imported
    assert imported & NOT_FOR_DEV == set()
