"""bytes: 1 GiB through one copy node, on the local store and on an s3 store (a moto
server), from submit to COMPLETE including the upload, against the physical limit of
moving the same bytes with Docker alone; and the service's peak RSS meanwhile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.service import (
    BUSYBOX,
    BenchError,
    RSSSampler,
    Service,
    chain_flow,
    copy_def,
    free_port,
    get_to_null,
    progress,
    put,
    ratio_row,
)

MIB = 1024 * 1024
SIZE_MIB = 1024
RUN_TIMEOUT = 300  # seconds; a round normally takes 15 to 30
RSS_TARGET_MB = 300
BUCKET = "pipewell-bench"

# moto in a process of its own, so that its Python does not share a GIL with the
# client uploading the gigabyte; it exits when its stdin closes (even if we die).
MOTO = """
import logging, sys
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
sys.stdin.read()
server.stop()
"""


class Moto:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-c", MOTO, str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise BenchError("the moto server did not start")
        import boto3

        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )

    def store_config(self) -> dict[str, Any]:
        return {
            "storage": {
                "default": {
                    "type": "s3",
                    "params": {
                        "bucket": BUCKET,
                        "endpoint_url": self.endpoint,
                        "region": "us-east-1",
                        "access_key_id": "bench",
                        "secret_access_key": "bench",
                        "create_bucket": True,
                    },
                }
            }
        }

    def empty_bucket(self) -> None:
        """Drop every object (moto holds them), so rounds do not pile up gigabytes."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for page in pages:
            for item in page.get("Contents", []):
                self.client.delete_object(Bucket=BUCKET, Key=item["Key"])

    def own_transfers(self, source: Path) -> float:
        """What moto alone costs for one run's store traffic, over presigned URLs like
        Pipewell's: PUT the input, GET it back, PUT the output."""

        def url(method: str, key: str) -> str:
            return self.client.generate_presigned_url(
                method, Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=600
            )

        began = time.perf_counter()
        for key in ("limit/in", "limit/out"):
            status, text = put(url("put_object", key), source)
            if status != 200:
                raise BenchError(f"moto PUT answered {status}: {text}")
            if key == "limit/in":
                get_to_null(url("get_object", key))
        return time.perf_counter() - began

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def make_input(directory: Path) -> Path:
    """1 GiB: one random MiB written 1024 times (cheap, and no run of zeros to shortcut)."""
    path = directory / "input.bin"
    block = os.urandom(MIB)
    with path.open("wb") as handle:
        for _ in range(SIZE_MIB):
            handle.write(block)
    os.sync()
    return path


def docker_limit(source: Path, directory: Path) -> float:
    """docker create, docker cp in, docker start -a (cp /in /out), docker cp out, one file copy."""
    os.sync()
    began = time.perf_counter()
    container = subprocess.run(
        ["docker", "create", "--network", "none", BUSYBOX, "sh", "-c", "cp /in /out"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    try:
        subprocess.run(
            ["docker", "cp", str(source), f"{container}:/in"], check=True, timeout=RUN_TIMEOUT
        )
        subprocess.run(["docker", "start", "-a", container], check=True, timeout=RUN_TIMEOUT)
        with (directory / "out.tar").open("wb") as out:
            subprocess.run(
                ["docker", "cp", f"{container}:/out", "-"],
                check=True,
                stdout=out,
                timeout=RUN_TIMEOUT,
            )
        shutil.copyfile(source, directory / "copy.bin")
        return time.perf_counter() - began
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=60)
        for name in ("out.tar", "copy.bin"):
            (directory / name).unlink(missing_ok=True)


def through_pipewell(service: Service, source: Path) -> tuple[float, float]:
    """Seconds from POST to COMPLETE (the streamed upload included) and the peak VmRSS."""
    os.sync()
    with RSSSampler(service) as rss:
        began = time.perf_counter()
        run = service.submit(chain_flow(1), [copy_def(tier="c-small")])
        service.upload(run, source)
        uploaded = time.perf_counter() - began
        done = service.wait(run["ID"], RUN_TIMEOUT)
        elapsed = time.perf_counter() - began
    if done["Status"] != "COMPLETE":
        raise BenchError(
            f"bytes run {run['ID']} ended {done['Status']}:\n{service.diagnose(run['ID'])}"
        )
    timings = done["NodeState"]["n0"].get("Timings", {})
    progress(
        f"  upload {uploaded:.2f} s, then {elapsed - uploaded:.2f} s to COMPLETE; node phases "
        + ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
    )
    return elapsed, rss.peak_mib


def run(quick: bool) -> list[dict[str, Any]]:
    rounds = 1 if quick else 2
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pipewell-bench-bytes-") as tmp:
        directory = Path(tmp)
        began = time.perf_counter()
        source = make_input(directory)
        progress(f"bytes: wrote the 1 GiB input in {time.perf_counter() - began:.1f} s")
        moto = Moto()
        try:
            for label, config in (("local", {}), ("s3 (moto)", moto.store_config())):
                ours: list[float] = []
                base: list[float] = []
                peaks: list[float] = []
                moto_limit: list[float] = []
                with Service(config, label="bytes-" + label.split()[0]) as service:
                    for number in range(rounds):
                        elapsed, peak = through_pipewell(service, source)
                        ours.append(elapsed)
                        peaks.append(peak)
                        service.settle()
                        base.append(docker_limit(source, directory))
                        line = (
                            f"bytes {label} round {number + 1}/{rounds}: pipewell {elapsed:.2f} s "
                            f"(peak VmRSS {peak} MiB), docker limit {base[-1]:.2f} s"
                        )
                        if config:
                            moto.empty_bucket()
                            moto_limit.append(base[-1] + moto.own_transfers(source))
                            moto.empty_bucket()
                            line += f", limit + moto's own PUT/GET/PUT {moto_limit[-1]:.2f} s"
                        progress(line)
                    hwm_mib = round(service.memory_kib("VmHWM") / 1024, 1)
                peak = max(peaks)
                rss_ok = max(peak, hwm_mib) * MIB < RSS_TARGET_MB * 1000 * 1000
                rows.append(
                    ratio_row(
                        f"bytes (1 GiB, one copy node), {label} store",
                        ours,
                        base,
                        baseline="docker cp in, run, docker cp out, one file copy",
                        target=1.5,
                        pipewell_note=f", peak RSS {peak} MiB (VmHWM {hwm_mib} MiB)",
                        peak_rss_mib=peak,
                        vm_hwm_mib=hwm_mib,
                        rss_target=f"< {RSS_TARGET_MB} MB",
                        rss_ok=rss_ok,
                    )
                )
                # The table's ok for this row covers both targets.
                rows[-1]["ok"] = rows[-1]["ok"] and rss_ok
                rows[-1]["target"] = f"≤ 1.5, RSS < {RSS_TARGET_MB} MB"
                if moto_limit:
                    rows.append(
                        ratio_row(
                            "bytes, s3 (moto) store vs limit + moto's own transfers",
                            ours,
                            moto_limit,
                            baseline="docker limit + PUT, GET, PUT of 1 GiB through moto",
                            target=None,
                            note="moto is a Python server; s3 uploads are noticed by polling "
                            "every storage.poll_interval (2 s by default)",
                        )
                    )
        finally:
            moto.stop()
            source.unlink(missing_ok=True)
    return rows
