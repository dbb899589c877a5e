"""maps: a node mapped over a collection of small files, at several ``items_per_container``.

A mapped node runs once per item. Items of one run's one node may run one after
another in one gated container (``executor.items_per_container`` of them at most),
one program invocation each; this measures what that buys, per batch size:

- ``pipewell/checksum`` (the catalog node, a Python program) mapped over 1,000 small
  files (a zip uploaded to a collection edge), submit to COMPLETE, against the
  physical limit: ONE ``docker run`` of the same image looping over the same files
  in a shell, one program invocation per file;
- the same map against cwltool's ``scatter`` of the same image over the same files
  (``--parallel``; cwltool starts a container per file, about half a second each
  here, so it runs a share of the files and its time is scaled to 1,000, saying so);
- items per minute of a 1,000-item map of a trivial node (busybox ``cp``), 2 cores;
- what batches cost a short map of slow items: 16 items of a node that sleeps 1 s,
  against the ideal for the worker's slots;
- a 10,000-item collection mapped with the service's own cost only (on Redis with
  ``bench.instant_worker``, as bigrun: no containers), 50 pollers reading the run's
  status 10 times a second each meanwhile: the service's peak RSS and that status's p99.

Each batch size gets its own ``pipewell dev``; the Docker baseline runs before each
Pipewell map (alternately); cwltool runs once. cwltool is installed on first use into a
virtualenv of its own under the system temp directory (not a dependency of Pipewell).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import aiohttp

from bench.service import (
    BenchError,
    RSSSampler,
    Service,
    copy_def,
    instant_service,
    median,
    percentile,
    progress,
    ratio_row,
)

#: Batch sizes measured (executor.items_per_container); 1 is every item its own task.
SIZES = (1, 4, 8, 16, 32, 64)
QUICK_SIZES = (1, 8, 32)
CHECKSUM = "pipewell/checksum:latest"
CWLTOOL = "cwltool==3.3.20260925135507"
#: Targets (the issue's).
LIMIT_TARGET = 1.5
CWL_TARGET = 0.10
ITEMS_PER_MINUTE_TARGET = 5_000
RSS_TARGET_MIB = 300
STATUS_P99_TARGET_MS = 50
POLLERS = 50
POLL_EVERY = 0.1  # seconds between one poller's status reads
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60)


# ---------------------------------------------------------------- inputs


def _contents(count: int) -> dict[str, bytes]:
    """``count`` small text files (about 150 bytes each), each its own bytes."""
    return {f"f{i:05d}.txt": f"file {i}\n".encode() * 20 for i in range(count)}


def _zipped(files: dict[str, bytes]) -> bytes:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_STORED) as archive:
        for name, body in files.items():
            archive.writestr(name, body)
    return data.getvalue()


def _on_disk(files: dict[str, bytes], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (directory / name).write_bytes(body)
    return directory


def _map_flow(uses: str, input_name: str, output_name: str) -> dict[str, Any]:
    """One node mapped over the uploaded collection ``files``."""
    return {
        "Name": "map",
        "Collections": ["files"],
        "Nodes": [
            {
                "ID": "m",
                "Uses": uses,
                "Inputs": [{"Name": input_name, "Edge": "files"}],
                "Outputs": [{"Name": output_name, "Edge": "sums"}],
            }
        ],
    }


CHECKSUM_MAP = _map_flow("pipewell/checksum", "file", "checksums")
COPY_MAP = _map_flow("bench/copy", "in", "out")
#: What a batch costs a short map of slow items: the scheduler's batches fill slots
#: one after another, so fewer slots run them.
SLOW_ITEMS = 16
SLOW_SECONDS = 1
SLOW_DEF = copy_def("slowcopy", f'sh -c "sleep {SLOW_SECONDS} && cp ${{in}} ${{out}}"')
SLOW_MAP = _map_flow("bench/slowcopy", "in", "out")


# ---------------------------------------------------------------- Pipewell


def _pipewell_map(
    service: Service, flow: dict[str, Any], defs: list[dict[str, Any]], archive: bytes, count: int
) -> tuple[float, dict[str, Any]]:
    """Seconds from submit to COMPLETE of ``flow`` over the zip ``archive``, all items done."""
    began = time.perf_counter()
    run = service.submit(flow, defs)
    service.upload(run, archive, edge="files")
    done = service.wait(run["ID"], 1800)
    elapsed = time.perf_counter() - began
    items = (done.get("NodeState", {}).get("m") or {}).get("Items") or {}
    if done["Status"] != "COMPLETE" or (items.get("Counts") or {}).get("COMPLETE") != count:
        raise BenchError(
            f"map run {run['ID']} ended {done['Status']} with items {items}:\n"
            f"{service.diagnose(run['ID'])}"
        )
    return elapsed, run


def _item_phases(service: Service, run_id: str) -> dict[str, float]:
    """Mean milliseconds per item of each phase (the items' own timings)."""
    totals: dict[str, float] = {}
    count = 0
    after = None
    while True:
        query = f"{service.base}/api/v1/flow/items/{run_id}/m?limit=1000"
        page = service.http.get(query + (f"&after={after}" if after else ""), timeout=30).json()
        for item in page["Items"]:
            count += 1
            for phase, seconds in (item.get("Timings") or {}).items():
                totals[phase] = totals.get(phase, 0.0) + seconds
        after = page.get("Next")
        if not after:
            break
    return {phase: round(total / max(1, count) * 1000, 2) for phase, total in totals.items()}


# ---------------------------------------------------------------- baselines


def _docker_loop(files: Path, out: Path) -> float:
    """ONE ``docker run`` of the checksum image running its program once per file."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    script = (
        'for f in /in/*; do INPUT_FILE="$f" OUTPUT_CHECKSUMS="/out/${f##*/}.json" '
        "/usr/local/bin/checksum > /dev/null || exit 1; done"
    )
    argv = ["docker", "run", "--rm", "--network", "none", "-v", f"{files}:/in:ro",
            "-v", f"{out}:/out", CHECKSUM, "sh", "-c", script]  # fmt: skip
    began = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=1800)
    elapsed = time.perf_counter() - began
    written = len(list(out.iterdir()))
    if written != len(list(files.iterdir())):
        raise BenchError(f"the docker loop wrote {written} checksums")
    return elapsed


CHECKSUM_TOOL = """\
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: pipewell/checksum:latest
  EnvVarRequirement:
    envDef:
      INPUT_FILE: $(inputs.file.path)
      OUTPUT_CHECKSUMS: checksums.json
baseCommand: [/usr/local/bin/checksum]
inputs:
  file: File
outputs:
  checksums:
    type: File
    outputBinding: {glob: checksums.json}
"""

SCATTER = """\
cwlVersion: v1.2
class: Workflow
requirements:
  ScatterFeatureRequirement: {}
inputs:
  files: File[]
outputs:
  sums:
    type: File[]
    outputSource: checksum/checksums
steps:
  checksum:
    run: checksum.cwl
    scatter: file
    in: {file: files}
    out: [checksums]
"""


def _cwltool() -> Path:
    """cwltool in a virtualenv of its own (made on first use), not in Pipewell's."""
    home = Path(tempfile.gettempdir()) / "pipewell-bench-cwltool"
    tool = home / "bin" / "cwltool"
    if tool.exists():
        return tool
    progress(f"maps: installing {CWLTOOL} into {home} (once)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=120)
        subprocess.run(
            [str(home / "bin" / "pip"), "install", "-q", CWLTOOL],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(home, ignore_errors=True)
        detail = getattr(exc, "stderr", b"") or b""
        raise BenchError(f"could not install {CWLTOOL}: {detail.decode()[-500:]}") from exc
    return tool


def _cwl_scatter(tool: Path, files: Path, count: int, work: Path) -> float:
    """Seconds for cwltool (--parallel) to scatter the checksum tool over ``count`` files."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "checksum.cwl").write_text(CHECKSUM_TOOL)
    (work / "scatter.cwl").write_text(SCATTER)
    chosen = sorted(files.iterdir())[:count]
    job = {"files": [{"class": "File", "path": str(path)} for path in chosen]}
    (work / "job.json").write_text(json.dumps(job))
    argv = [str(tool), "--quiet", "--parallel", "--outdir", str(work / "out"),
            str(work / "scatter.cwl"), str(work / "job.json")]  # fmt: skip
    began = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=3600, cwd=work)
    elapsed = time.perf_counter() - began
    written = len(list((work / "out").iterdir()))
    if written != count:
        raise BenchError(f"cwltool wrote {written} of {count} checksums")
    return elapsed


# ---------------------------------------------------------------- a big collection


async def _big_map(service: Service, archive: bytes, count: int, budget: float) -> dict[str, Any]:
    """The map over ``count`` items, POLLERS reading its status from the submission on."""
    body = {"Flow": COPY_MAP, "NodeDefs": [copy_def()]}
    latencies: list[float] = []
    failures = 0
    ended: dict[str, Any] = {}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=POLLERS + 10), timeout=REQUEST_TIMEOUT
    ) as session:
        began = time.perf_counter()
        async with session.post(f"{service.base}/api/v1/flow/test", json=body) as answer:
            if answer.status != 200:
                raise BenchError(f"POST of the {count}-item map: HTTP {answer.status}")
            run = await answer.json()
        url = f"{service.base}/api/v1/flow/status/{run['ID']}"
        deadline = time.perf_counter() + budget

        async def poller(number: int) -> None:
            nonlocal failures
            await asyncio.sleep(POLL_EVERY * number / POLLERS)  # spread over the interval
            while not ended and time.perf_counter() < deadline:
                asked = time.perf_counter()
                try:
                    async with session.get(url) as answer:
                        text = await answer.read()
                        ok = answer.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok, text = False, b""
                latencies.append(time.perf_counter() - asked)
                if not ok:
                    failures += 1
                elif number == 0:
                    status = json.loads(text)
                    if status["Status"] in ("COMPLETE", "ERROR", "STOPPED"):
                        ended.update(status)
                await asyncio.sleep(max(0.0, POLL_EVERY - (time.perf_counter() - asked)))

        pollers = [asyncio.create_task(poller(n)) for n in range(POLLERS)]
        async with session.put(run["WaitingURLs"][0]["PutURL"], data=archive) as answer:
            if answer.status != 200:
                raise BenchError(f"upload of the {count}-item zip: HTTP {answer.status}")
        await asyncio.gather(*pollers)
        wall = time.perf_counter() - began
    items = (ended.get("NodeState", {}).get("m") or {}).get("Items") or {}
    if ended.get("Status") != "COMPLETE" or (items.get("Counts") or {}).get("COMPLETE") != count:
        raise BenchError(
            f"the {count}-item map ended {ended.get('Status')} (items {items}) "
            f"or not within {budget:.0f} s"
        )
    return {
        "items": count,
        "wall_s": round(wall, 2),
        "items_per_s": round(count / wall, 1),
        "status_reads": len(latencies),
        "status_failures": failures,
        "status_p50_ms": round(median(latencies) * 1000, 1),
        "status_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "status_max_ms": round(max(latencies) * 1000, 1),
    }


def _big(per: int, archive: bytes, count: int) -> dict[str, Any]:
    """A ``count``-item map on Redis with the instant worker: the service's own cost."""
    config = {"executor": {"items_per_container": per}}
    with instant_service(config, label=f"maps-big-{per}") as service:
        cpu_before = service.cpu_seconds()
        with RSSSampler(service) as rss:
            figures = asyncio.run(_big_map(service, archive, count, budget=900))
        figures["service_cpu_s"] = round(service.cpu_seconds() - cpu_before, 2)
        figures["peak_rss_mib"] = rss.peak_mib
    return figures


# ---------------------------------------------------------------- the rows


def run(quick: bool) -> list[dict[str, Any]]:
    sizes = QUICK_SIZES if quick else SIZES
    count = 200 if quick else 1_000
    cwl_count = 30 if quick else 100
    big_count = 2_000 if quick else 10_000
    files = _contents(count)
    archive = _zipped(files)
    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="pipewell-bench-maps-"))
    try:
        on_disk = _on_disk(files, work / "files")
        # cwltool first, once: its figure is the same for every batch size.
        cwl_scaled: float | None = None
        cwl_problem = ""
        try:
            tool = _cwltool()
            _cwl_scatter(tool, on_disk, 2, work / "cwl")  # warm-up: its caches, Docker's
            cwl_s = _cwl_scatter(tool, on_disk, cwl_count, work / "cwl")
            cwl_scaled = cwl_s * count / cwl_count
            progress(
                f"maps: cwltool --parallel scatter over {cwl_count} files: {cwl_s:.1f} s, "
                f"{cwl_scaled:.0f} s scaled to {count}"
            )
        except (BenchError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            cwl_problem = str(exc)[-500:]
            progress(f"maps: cwltool FAILED: {cwl_problem}")
        _docker_loop(on_disk, work / "out")  # warm-up
        for per in sizes:
            config = {"executor": {"items_per_container": per}}
            with Service(config, label=f"maps-{per}") as service:
                warm = _contents(16)
                _pipewell_map(service, CHECKSUM_MAP, [], _zipped(warm), len(warm))
                _pipewell_map(service, COPY_MAP, [copy_def()], _zipped(warm), len(warm))
                service.settle(30)
                limit = _docker_loop(on_disk, work / "out")
                checksum_s, checksum_run = _pipewell_map(service, CHECKSUM_MAP, [], archive, count)
                checksum_phases = _item_phases(service, checksum_run["ID"])
                service.settle(30)
                copy_s, copy_run = _pipewell_map(service, COPY_MAP, [copy_def()], archive, count)
                copy_phases = _item_phases(service, copy_run["ID"])
                service.settle(30)
                slow = _contents(SLOW_ITEMS)
                slow_s, _ = _pipewell_map(service, SLOW_MAP, [SLOW_DEF], _zipped(slow), len(slow))
                slots = (service.capacity() or {}).get("slots", 8)
                service.settle(30)
            per_minute = count / copy_s * 60
            progress(
                f"maps (items_per_container {per}): checksum x{count} {checksum_s:.1f} s "
                f"(one docker run {limit:.1f} s), cp x{count} {copy_s:.1f} s "
                f"({per_minute:.0f} items/min), {SLOW_ITEMS} x {SLOW_SECONDS} s items "
                f"{slow_s:.1f} s; ms per item: checksum {checksum_phases}, cp {copy_phases}"
            )
            label = f"maps (items_per_container {per})"
            rows.append(
                ratio_row(
                    f"{label}: pipewell/checksum mapped over {count} small files (a zip), "
                    "submit to COMPLETE",
                    [checksum_s],
                    [limit],
                    baseline=f"ONE `docker run` of the image looping over the {count} files",
                    target=LIMIT_TARGET,
                    items_per_container=per,
                    item_phases_ms=checksum_phases,
                )
            )
            if cwl_scaled is not None:
                rows.append(
                    ratio_row(
                        f"{label}: the same map vs cwltool",
                        [checksum_s],
                        [cwl_scaled],
                        baseline=f"cwltool --parallel scatter, {cwl_count} files measured, "
                        f"scaled to {count}",
                        target=CWL_TARGET,
                        items_per_container=per,
                    )
                )
            else:
                rows.append(
                    {
                        "name": f"{label}: the same map vs cwltool",
                        "pipewell": f"{checksum_s:.2f} s",
                        "baseline": "cwltool: not measured",
                        "target": f"≤ {CWL_TARGET}",
                        "ok": False,
                        "error": cwl_problem,
                    }
                )
            rows.append(
                {
                    "name": f"{label}: a busybox cp node mapped over {count} items, "
                    f"items per minute on {_cores()} cores",
                    "pipewell": f"{per_minute:.0f} items/min ({copy_s:.2f} s)",
                    "baseline": "",
                    "target": f"≥ {ITEMS_PER_MINUTE_TARGET}",
                    "ok": per_minute >= ITEMS_PER_MINUTE_TARGET,
                    "items_per_container": per,
                    "seconds": round(copy_s, 3),
                    "item_phases_ms": copy_phases,
                }
            )
            ideal = SLOW_SECONDS * -(-SLOW_ITEMS // slots)
            rows.append(
                ratio_row(
                    f"{label}: {SLOW_ITEMS} items of a node that sleeps {SLOW_SECONDS} s",
                    [slow_s],
                    [ideal],
                    baseline=f"ideal for {slots} slots",
                    target=None,
                    items_per_container=per,
                )
            )
        big_archive = _zipped(_contents(big_count))
        for per in sizes:
            progress(f"maps: a {big_count}-item map, items_per_container {per}, no containers")
            big = _big(per, big_archive, big_count)
            progress(f"maps: {big}")
            ok = (
                big["peak_rss_mib"] < RSS_TARGET_MIB
                and big["status_p99_ms"] < STATUS_P99_TARGET_MS
                and not big["status_failures"]
            )
            rows.append(
                {
                    "name": f"maps (items_per_container {per}): a {big_count}-item collection "
                    f"mapped (no containers: the service's own cost), {POLLERS} pollers "
                    f"reading its status {1 / POLL_EVERY:g} times a second each",
                    "pipewell": f"complete in {big['wall_s']} s ({big['items_per_s']} items/s, "
                    f"service CPU {big['service_cpu_s']} s), peak RSS {big['peak_rss_mib']} "
                    f"MiB; status p50 {big['status_p50_ms']} ms, p99 {big['status_p99_ms']} ms "
                    f"({big['status_reads']} reads)",
                    "baseline": "",
                    "target": f"RSS < {RSS_TARGET_MIB} MiB, status p99 < {STATUS_P99_TARGET_MS} ms",
                    "ok": ok,
                    "items_per_container": per,
                    **big,
                }
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _cores() -> int:
    return os.cpu_count() or 1


if __name__ == "__main__":
    for row in run("--quick" in sys.argv):
        print(row)
