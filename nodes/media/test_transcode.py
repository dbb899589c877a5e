"""pipewell/transcode through the service: the catalog's NodeDef and image together.

The input video is made by ffmpeg in the media image (tests/samples.py),
and the outputs are measured by its ffprobe.
"""

from __future__ import annotations

import asyncio
import io
import zipfile

import pytest
from PIL import Image

from tests.catalog import probe, run_node
from tests.samples import video

pytestmark = pytest.mark.docker


def streams(media: bytes) -> dict[str, dict]:
    return {s["codec_type"]: s for s in probe(media)["streams"]}


async def test_video_frames_and_audio_commands(start_service, clip):
    client = await start_service()
    webm, frames, mp3 = await asyncio.gather(
        run_node(client, "pipewell/transcode", {"media": clip}, ["video"], command="video",
                 flags={"format": "webm", "width": "80"}),
        run_node(client, "pipewell/transcode", {"media": clip}, ["frames"], command="frames",
                 flags={"fps": "2", "width": "80"}),
        run_node(client, "pipewell/transcode", {"media": clip}, ["audio"], command="audio",
                 flags={"start": "0.5"}),
    )  # fmt: skip
    for done in (webm, frames, mp3):
        assert done.status == "COMPLETE", done.error

    found = streams(webm.outputs["video"])
    assert "webm" in probe(webm.outputs["video"])["format"]["format_name"]
    assert (found["video"]["codec_name"], found["video"]["width"]) == ("vp8", 80)
    assert (found["video"]["height"], found["audio"]["codec_name"]) == (60, "vorbis")
    assert int(found["video"]["nb_read_frames"]) == 20  # 2 s at the input's 10 fps

    # 2 s at 2 frames per second: four frames, in order, scaled to 80 wide.
    with zipfile.ZipFile(io.BytesIO(frames.outputs["frames"])) as archive:
        names = archive.namelist()
        assert names == [f"frame-0000{n}.png" for n in range(1, 5)]
        first = Image.open(io.BytesIO(archive.read(names[0])))
        assert (first.format, first.size) == ("PNG", (80, 60))

    audio = probe(mp3.outputs["audio"])
    assert audio["streams"][0]["codec_name"] == "mp3"
    assert 1.3 <= float(audio["format"]["duration"]) <= 1.7  # from 0.5 s to the end


async def test_unreadable_media_and_a_missing_audio_track_fail_saying_why(start_service, clip):
    client = await start_service()
    silent = await asyncio.to_thread(video, seconds=1, audio=False)
    # An MP4's type box, then noise: the type check passes, ffprobe finds no movie.
    noise = clip[:32] + bytes(range(256)) * 16
    unreadable, cut, mute = await asyncio.gather(
        run_node(client, "pipewell/transcode", {"media": noise}, ["video"], command="video"),
        # The first 3000 bytes of the clip: it probes, but its frames are gone.
        run_node(client, "pipewell/transcode", {"media": clip[:3000]}, ["video"],
                 command="video"),
        run_node(client, "pipewell/transcode", {"media": silent}, ["audio"], command="audio"),
    )  # fmt: skip
    assert unreadable.status == "ERROR"
    assert "code 1: transcode: the input is not a video or audio file ffmpeg can read" in (
        unreadable.error
    )
    assert cut.status == "ERROR"
    assert "code 1: transcode: ffmpeg failed (exit 1)" in cut.error
    assert "partial file" in cut.error
    assert mute.status == "ERROR"
    assert mute.error.endswith("code 1: transcode: the input has no audio stream (video)")
