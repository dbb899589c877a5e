#!/usr/bin/python3
"""Transcode a video or audio file with ffmpeg, extract its frames, or its audio track.

    transcode video    INPUT_MEDIA -> OUTPUT_VIDEO   (mp4: H.264 + AAC, webm: VP8 + Vorbis,
                                                      mkv: H.264 + AAC)
    transcode frames   INPUT_MEDIA -> OUTPUT_FRAMES  (a zip of frame-00001.png, ...)
    transcode audio    INPUT_MEDIA -> OUTPUT_AUDIO   (mp3, ogg, wav, flac or m4a)

Flags (FLAG_<NAME>): START and DURATION (seconds: the part of the input to
use; default all of it), WIDTH and HEIGHT (scale, keeping the aspect ratio:
one gives the other, both give the box to fit in; default unscaled), and per
mode: video FORMAT (mp4, webm, mkv; default mp4), QUALITY (low, medium,
high; default medium), FPS (default the input's), AUDIO (keep or drop;
default keep); frames FPS (frames per second of video, default 1),
MAX_FRAMES (default 100), FRAME_FORMAT (png or jpeg; default png); audio
AUDIO_FORMAT (default mp3) and BITRATE (mp3 and m4a, default 128k; ogg is
Vorbis at quality 4, about 128k).

A node output is one file, so the frames come as one zip archive (entries
stored, frames are compressed already). ffmpeg never reads stdin and is
stopped after TIME_LIMIT seconds. Exit 2 for bad flags or an unbound output, 1
for an input ffmpeg cannot read, one without the stream the mode needs, or an
ffmpeg failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

TIME_LIMIT = 1700.0  # the NodeDef's Timeout is 1800 s: fail first, saying why
PROBE_LIMIT = 30.0
VIDEO = {
    "mp4": ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-movflags", "+faststart", "-f", "mp4"],
    "mkv": ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-f", "matroska"],
    "webm": ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "4M",
             "-c:a", "libvorbis", "-f", "webm"],
}  # fmt: skip
# Constant-quality factor per codec family: x264 (0-51) and VP8 (4-63), lower is better.
QUALITY = {"low": (30, 40), "medium": (23, 24), "high": (18, 10)}
AUDIO = {
    "mp3": ["-c:a", "libmp3lame", "-f", "mp3"],
    # Vorbis at a quality rather than a bitrate: fixed bitrates fail at low sample rates.
    "ogg": ["-c:a", "libvorbis", "-q:a", "4", "-f", "ogg"],
    "m4a": ["-c:a", "aac", "-f", "ipod"],
    "wav": ["-c:a", "pcm_s16le", "-f", "wav"],
    "flac": ["-c:a", "flac", "-f", "flac"],
}
BITRATE_FORMATS = ("mp3", "m4a")
MAX_SIDE = 8192


class UsageError(Exception):
    """A flag, the command or the environment is wrong: exit 2."""


class MediaError(Exception):
    """The input cannot be processed as asked: exit 1."""


def flag(name: str, default: str = "") -> str:
    return os.environ.get(f"FLAG_{name}", "").strip() or default


def number(name: str, default: str, low: float, high: float, kind: type = float) -> Any:
    text = flag(name, default)
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise UsageError(f"{name.lower()} must be a number from {low:g} to {high:g}, got {text!r}")
    return value


def choice(name: str, default: str, choices: Any) -> str:
    text = flag(name, default).lower()
    if text not in choices:
        raise UsageError(f"{name.lower()} must be one of {', '.join(choices)}, got {text!r}")
    return text


def output(name: str, mode: str) -> str:
    path = os.environ.get(f"OUTPUT_{name.upper()}")
    if not path:
        raise UsageError(f"the {mode} command writes the output {name!r}: bind it in the flow")
    return path


def last_words(stderr: bytes) -> str:
    """A tool's last distinct lines, for an error message."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(dict.fromkeys(lines[-3:]))


def run(argv: list[str], limit: float, what: str) -> str:
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=limit, check=False
        )
    except subprocess.TimeoutExpired:
        raise MediaError(f"{what} took over {limit:g} s and was stopped") from None
    said = last_words(done.stderr)
    if done.returncode != 0:
        raise MediaError(f"{what} failed (exit {done.returncode}): {said or 'no message'}")
    return done.stdout.decode(errors="replace")


def probe(path: str) -> dict[str, Any]:
    try:
        text = run(
            ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format",
             path],
            PROBE_LIMIT,
            "reading the input",
        )  # fmt: skip
    except MediaError as exc:
        raise MediaError(f"the input is not a video or audio file ffmpeg can read: {exc}") from None
    info = json.loads(text or "{}")
    info["kinds"] = {
        stream.get("codec_type")
        for stream in info.get("streams", [])
        if not stream.get("disposition", {}).get("attached_pic")  # cover art is no video
    }
    return info


def scale_filter() -> str | None:
    width = number("WIDTH", "", 2, MAX_SIDE, int)
    height = number("HEIGHT", "", 2, MAX_SIDE, int)
    if width and height:
        return f"scale={width}:{height}:force_original_aspect_ratio=decrease:force_divisible_by=2"
    if width:
        return f"scale={width}:-2"
    if height:
        return f"scale=-2:{height}"
    return None


def head(source: str) -> list[str]:
    """ffmpeg's arguments up to the input: quiet, no stdin, the part asked for."""
    argv = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y"]
    start = number("START", "", 0, 1e7)
    if start:
        argv += ["-ss", f"{start:g}"]
    argv += ["-i", source]
    duration = number("DURATION", "", 0.001, 1e7)
    if duration:
        argv += ["-t", f"{duration:g}"]
    return argv


def need(info: dict[str, Any], kind: str, hint: str) -> None:
    if kind not in info["kinds"]:
        have = ", ".join(sorted(k for k in info["kinds"] if k)) or "no streams"
        raise MediaError(f"the input has no {kind} stream ({have}){hint}")


def video(source: str) -> str:
    target = output("video", "video")
    fmt = choice("FORMAT", "mp4", VIDEO)
    quality = QUALITY[choice("QUALITY", "medium", QUALITY)][fmt == "webm"]
    fps = number("FPS", "", 0.01, 240)
    keep_audio = choice("AUDIO", "keep", ("keep", "drop")) == "keep"
    info = probe(source)
    need(info, "video", "; for audio use the audio command")
    filters = [f for f in (scale_filter(), f"fps={fps:g}" if fps else None) if f]
    argv = head(source) + ["-map", "0:v:0"]
    if keep_audio and "audio" in info["kinds"]:
        argv += ["-map", "0:a:0"]
    argv += (["-vf", ",".join(filters)] if filters else []) + ["-crf", str(quality)]
    run(argv + VIDEO[fmt] + [target], TIME_LIMIT, "ffmpeg")
    return f"video -> {fmt} ({Path(target).stat().st_size} bytes)"


def frames(source: str) -> str:
    target = output("frames", "frames")
    fps = number("FPS", "1", 0.001, 240)
    limit = number("MAX_FRAMES", "100", 1, 10000, int)
    ext = {"png": "png", "jpeg": "jpg", "jpg": "jpg"}[
        choice("FRAME_FORMAT", "png", ("png", "jpeg", "jpg"))
    ]
    need(probe(source), "video", "")
    filters = ",".join(f for f in (f"fps={fps:g}", scale_filter()) if f)
    with tempfile.TemporaryDirectory() as scratch:
        quality = ["-q:v", "2"] if ext == "jpg" else []
        pattern = str(Path(scratch) / f"frame-%05d.{ext}")
        run(head(source) + ["-map", "0:v:0", "-vf", filters, "-frames:v", str(limit)]
            + quality + [pattern], TIME_LIMIT, "ffmpeg")  # fmt: skip
        written = sorted(Path(scratch).glob(f"frame-*.{ext}"))
        if not written:
            raise MediaError(
                "no frame was extracted: is the part asked for (start, duration) empty?"
            )
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
            for path in written:
                entry = zipfile.ZipInfo(path.name, date_time=(1980, 1, 1, 0, 0, 0))
                entry.external_attr = 0o644 << 16
                archive.writestr(entry, path.read_bytes())
    return f"{len(written)} frame(s) at {fps:g} fps -> zip"


def audio(source: str) -> str:
    target = output("audio", "audio")
    fmt = choice("AUDIO_FORMAT", "mp3", AUDIO)
    bitrate = flag("BITRATE", "128k")
    if not bitrate.rstrip("kK").isdigit() or not 8 <= int(bitrate.rstrip("kK")) <= 512:
        raise UsageError(f"bitrate must be 8k to 512k, got {bitrate!r}")
    need(probe(source), "audio", "")
    argv = head(source) + ["-map", "0:a:0", "-vn"]
    if fmt in BITRATE_FORMATS:
        argv += ["-b:a", bitrate.lower().rstrip("k") + "k"]
    run(argv + AUDIO[fmt] + [target], TIME_LIMIT, "ffmpeg")
    return f"audio -> {fmt} ({Path(target).stat().st_size} bytes)"


MODES = {"video": video, "frames": frames, "audio": audio}


def main(argv: list[str]) -> int:
    try:
        mode = argv[0] if argv else "video"
        if mode not in MODES or len(argv) > 1:
            raise UsageError(f"usage: transcode [{'|'.join(MODES)}], got {' '.join(argv)!r}")
        source = os.environ.get("INPUT_MEDIA")
        if not source:
            raise UsageError("INPUT_MEDIA must be set (the node contract)")
        print(f"transcode: {MODES[mode](source)}")
    except UsageError as exc:
        print(f"transcode: {exc}", file=sys.stderr)
        return 2
    except (MediaError, OSError) as exc:
        print(f"transcode: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
