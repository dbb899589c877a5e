"""The pipewell/resize image under the node contract, as the engine runs it.

Files are copied in and out of the container (no bind mount), with no
network and every capability dropped. The sample images are drawn, and the
results measured, by Pillow inside pipewell/base: the project's own
environment does not need Pillow.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator

import docker
import docker.errors
import pytest
from docker.models.containers import Container

pytestmark = pytest.mark.docker

RESIZE = "pipewell/resize:latest"
BASE = "pipewell/base:bookworm"
CONTRACT_ENV = {"INPUT_IMAGE": "/pipewell/in/image", "OUTPUT_RESIZED": "/pipewell/out/resized"}

DRAW_SAMPLES = """
from PIL import Image, ImageDraw
def picture(size, fill="red"):
    im = Image.new("RGB", size, "white")
    ImageDraw.Draw(im).ellipse((10, 10, size[0] - 10, size[1] - 10), fill=fill)
    return im
picture((1600, 1200)).save("/pipewell/out/sample.png")
picture((1600, 1200)).save("/pipewell/out/sample.jpg", quality=85)
# Frames that differ: GIF writers merge identical neighbours.
frames = [picture((300, 200), fill).convert("P") for fill in ("red", "green", "blue")]
frames[0].save("/pipewell/out/sample.gif", save_all=True, append_images=frames[1:], duration=80)
"""

MEASURE = """
import json, sys
from PIL import Image
im = Image.open(sys.argv[1])
print(json.dumps({"format": im.format, "size": im.size, "frames": getattr(im, "n_frames", 1)}))
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker daemon reachable ({exc}); run make setup")
    for image in (RESIZE, BASE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {image} is missing: run make setup")
    yield client
    client.close()


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("pipewell", "pipewell/in", "pipewell/out"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, data in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def read_file(container: Container, path: str) -> bytes:
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.next()
        assert member is not None
        extracted = tar.extractfile(member)
        assert extracted is not None
        return extracted.read()


def run(
    engine: docker.DockerClient,
    image: str,
    *,
    files: dict[str, bytes] | None = None,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
    fetch: tuple[str, ...] = (),
) -> tuple[int, str, str, dict[str, bytes]]:
    """Run one container like the engine does: exit code, stdout, stderr, fetched files."""
    container = engine.containers.create(
        image,
        command=command,
        environment=env or {},
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )
    try:
        container.put_archive("/", tar_of(files or {}))
        container.start()
        code = container.wait(timeout=60)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode()
        err = container.logs(stdout=False, stderr=True).decode()
        fetched = {path: read_file(container, path) for path in fetch} if code == 0 else {}
        return code, out, err, fetched
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def samples(engine: docker.DockerClient) -> dict[str, bytes]:
    names = ["sample.png", "sample.jpg", "sample.gif"]
    code, _, err, files = run(
        engine,
        BASE,
        command=["python3", "-c", DRAW_SAMPLES],
        fetch=tuple(f"/pipewell/out/{name}" for name in names),
    )
    assert code == 0, err
    return {name: files[f"/pipewell/out/{name}"] for name in names}


def measure(engine: docker.DockerClient, data: bytes) -> dict[str, object]:
    code, out, err, _ = run(
        engine,
        BASE,
        files={"/pipewell/in/x": data},
        command=["python3", "-c", MEASURE, "/pipewell/in/x"],
    )
    assert code == 0, err
    return json.loads(out)


def resize(engine: docker.DockerClient, data: bytes, **env: str) -> tuple[int, str, str, bytes]:
    code, out, err, files = run(
        engine,
        RESIZE,
        files={"/pipewell/in/image": data},
        env={**CONTRACT_ENV, **env},
        fetch=("/pipewell/out/resized",),
    )
    return code, out, err, files.get("/pipewell/out/resized", b"")


@pytest.mark.parametrize(("sample", "fmt"), [("sample.png", "PNG"), ("sample.jpg", "JPEG")])
def test_keeps_the_input_format_and_aspect_ratio(
    engine: docker.DockerClient, samples: dict[str, bytes], sample: str, fmt: str
) -> None:
    code, out, err, data = resize(engine, samples[sample], FLAG_WIDTH="800")
    assert code == 0, err
    assert out.strip() == f"resized 1600x1200 -> 800x600 ({fmt})"
    assert measure(engine, data) == {"format": fmt, "size": [800, 600], "frames": 1}


def test_width_defaults_to_800_and_larger_widths_upscale(
    engine: docker.DockerClient, samples: dict[str, bytes]
) -> None:
    code, out, err, _ = resize(engine, samples["sample.png"])
    assert code == 0, err
    assert "-> 800x600" in out
    code, out, err, data = resize(engine, samples["sample.png"], FLAG_WIDTH="2000")
    assert code == 0, err
    assert measure(engine, data)["size"] == [2000, 1500]


def test_animated_gif_keeps_its_frames(
    engine: docker.DockerClient, samples: dict[str, bytes]
) -> None:
    code, _, err, data = resize(engine, samples["sample.gif"], FLAG_WIDTH="150")
    assert code == 0, err
    assert measure(engine, data) == {"format": "GIF", "size": [150, 100], "frames": 3}


def test_arguments_override_the_environment(
    engine: docker.DockerClient, samples: dict[str, bytes]
) -> None:
    code, out, err, files = run(
        engine,
        RESIZE,
        files={"/pipewell/in/photo.jpg": samples["sample.jpg"]},
        command=[
            "resize",
            "--input",
            "/pipewell/in/photo.jpg",
            "--output",
            "/pipewell/out/small",
            "--width",
            "100",
            "--height",
            "50",
        ],
        fetch=("/pipewell/out/small",),
    )
    assert code == 0, err
    assert measure(engine, files["/pipewell/out/small"])["size"] == [100, 50]


def test_text_input_fails_with_a_clear_message(engine: docker.DockerClient) -> None:
    code, out, err, _ = resize(engine, b"hello, not a picture\n")
    assert code == 1
    assert "is not an image this node can read" in err
    assert out == ""


@pytest.mark.parametrize("width", ["abc", "0", "-5", "1.5"])
def test_a_width_that_is_not_a_positive_integer_is_refused(
    engine: docker.DockerClient, samples: dict[str, bytes], width: str
) -> None:
    code, _, err, _ = resize(engine, samples["sample.png"], FLAG_WIDTH=width)
    assert code == 2
    assert "width must be a positive integer" in err
