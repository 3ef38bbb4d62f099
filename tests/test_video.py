"""predict on videos, through the CLI: frames named <stem>/<frame> with their index and time, --vid-stride,
--save-video, a truncated or corrupt video as one line while the run goes on, kill -9 then --skip-existing,
and --track (ids stable in the PNGs, the json and the overlay colours). Videos are made here with OpenCV."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from media_helpers import moving_disc, moving_shapes, write_video
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app

runner = CliRunner()


def _predict(*args) -> object:
    return runner.invoke(app, ["predict", *map(str, args), "--device", "cpu"])


def _records(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def _failures(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("failed:")]


def _frames(path: Path) -> tuple[int, float, tuple[int, int]]:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    fps, size = capture.get(cv2.CAP_PROP_FPS), (int(capture.get(4)), int(capture.get(3)))
    capture.release()
    return count, fps, size


# ---------------------------------------------------------------- frames as inputs


def test_a_video_frames_are_inputs_named_by_its_stem_and_frame(tiny_checkpoint, tmp_path):
    video = write_video(tmp_path / "clip.mp4", moving_disc(12))
    out = tmp_path / "out"
    result = _predict(video, "--weights", tiny_checkpoint, "--out", out, "--json", "--vid-stride", "3", "--save-video",
                      "--quiet")
    assert result.exit_code == 0, result.output
    records = _records(result)
    assert [r["frame"] for r in records] == [0, 3, 6, 9]
    assert [r["time"] for r in records] == [0.0, 0.3, 0.6, 0.9]  # index / frames per second (10)
    for record in records:
        stem = f"clip/{record['frame']:06d}"
        assert record["ok"] and record["input"] == str(video)
        assert record["outputs"] == {"semantic": str(out / "semantic" / f"{stem}.png"),
                                     "overlay": str(out / "overlays" / f"{stem}.jpg")}
        assert io.read_label_png(out / "semantic" / f"{stem}.png").shape == (48, 64)
    # The overlays as a video, at the source's rate over the stride (it lasts as long), the frames' size.
    count, fps, size = _frames(out / "overlays" / "clip.mp4")
    assert count == 4 and fps == pytest.approx(10 / 3, abs=0.01) and size == (48, 64)


def test_videos_in_a_folder_in_each_container_are_predicted_beside_images(tiny_checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.avi", "b.mkv", "c.mov", "d.mp4"):
        write_video(folder / name, moving_disc(3))
    io.write_image(folder / "e.png", moving_disc(1)[0])
    out = tmp_path / "out"
    result = _predict(folder, "--weights", tiny_checkpoint, "--out", out, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    assert [(Path(r["input"]).name, r.get("frame")) for r in _records(result)] == [
        *[(name, frame) for name in ("a.avi", "b.mkv", "c.mov", "d.mp4") for frame in range(3)], ("e.png", None)]
    assert sorted(p.relative_to(out / "semantic").as_posix() for p in (out / "semantic").rglob("*.png")) == [
        *[f"{stem}/{frame:06d}.png" for stem in "abcd" for frame in range(3)], "e.png"]


def test_a_truncated_or_corrupt_video_is_one_line_and_the_run_goes_on(tiny_checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    whole = write_video(tmp_path / "whole.avi", moving_disc(20)).read_bytes()
    (folder / "cut.avi").write_bytes(whole[: len(whole) // 2])  # the header still announces 20 frames
    (folder / "junk.mp4").write_bytes(b"not a video, only text named .mp4\n" * 40)
    (folder / "empty.mov").write_bytes(b"")
    io.write_image(folder / "good.png", moving_disc(1)[0])
    out = tmp_path / "out"
    result = _predict(folder, "--weights", tiny_checkpoint, "--out", out, "--json", "--quiet")
    assert result.exit_code == 1
    failures = _failures(result)
    assert len(failures) == 3, result.stderr  # one line per broken video, nothing else
    assert sum("cut.avi: frames" in line and "of 20: could not be decoded: the video ends early" in line
               for line in failures) == 1
    assert sum("junk.mp4: not a video FFmpeg can read" in line for line in failures) == 1
    assert sum("empty.mov" in line for line in failures) == 1
    records = _records(result)
    decoded = [r["frame"] for r in records if r["input"].endswith("cut.avi") and r["ok"]]
    (lost,) = [r for r in records if r["input"].endswith("cut.avi") and not r["ok"]]
    assert 0 < len(decoded) < 20 and decoded == list(range(len(decoded)))  # the frames before the cut are written
    assert lost["frames"] == [len(decoded), 19] and lost["frame"] == len(decoded)
    assert (out / "semantic" / "good.png").is_file()  # the run went on
    assert [r["ok"] for r in records if r["input"].endswith("good.png")] == [True]


def test_frames_lacking_a_channel_are_one_line_and_one_picked_is_grey(tiny_checkpoint, tmp_path):
    video = write_video(tmp_path / "clip.avi", moving_disc(3))
    lacking = _predict(video, "--weights", tiny_checkpoint, "--out", tmp_path / "a", "--channels", "3", "--quiet")
    assert lacking.exit_code == 1
    (line,) = lacking.stderr.strip().splitlines()
    assert "clip.avi: frames 0-2 of 3: has 3 channels (0-2); --channels 3 names channel 3, which it lacks" in line
    green = _predict(video, "--weights", tiny_checkpoint, "--out", tmp_path / "b", "--channels", "1", "--quiet")
    assert green.exit_code == 0 and (tmp_path / "b" / "semantic" / "clip" / "000002.png").is_file()


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}


def test_kill_9_during_a_video_then_skip_existing_resumes_at_the_first_frame_not_done(tiny_checkpoint, tmp_path):
    video = write_video(tmp_path / "long.mp4", moving_disc(40))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "segcli", "predict", str(video), "--weights", str(tiny_checkpoint), "--out",
               str(out), "--json", "--quiet", "--device", "cpu", "--save-video"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    for _ in range(5):
        assert json.loads(process.stdout.readline())["ok"]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "overlays" / "long.mp4").exists()  # no half video: it is renamed into place when complete
    done = sorted(int(p.stem) for p in (out / ".parts" / "semantic" / "long").glob("*.json")
                  if io.TEMP_PREFIX not in p.name)
    assert len(done) >= 5 and done == list(range(len(done))) and len(done) < 40
    resumed = subprocess.run([*command, "--skip-existing"], capture_output=True, text=True, env=_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert [r["frame"] for r in records if r.get("skipped")] == done
    assert [r["frame"] for r in records if not r.get("skipped")] == list(range(len(done), 40))
    assert _frames(out / "overlays" / "long.mp4")[0] == 40  # the video holds every frame, the resumed ones too
    assert not [p for p in out.rglob("*") if io.TEMP_PREFIX in p.name]


# ---------------------------------------------------------------- tracks


def _ids_at_objects(out: Path, mode: str, frames: int, objects, step: int = 2) -> list[list[int]]:
    """For each object of the scene wholly inside every frame, the id the label PNGs give its centre, per frame."""
    tracks = []
    for obj in objects:
        ys, xs = np.nonzero(obj.mask)
        y, x = int(np.median(ys)), int(np.median(xs))
        if not (y >= step * frames and x >= step * frames and y < 96 and x < 96 and obj.mask[y, x]):
            continue
        ids = []
        for i in range(frames):
            png = out / mode / "clip" / f"{i:06d}.png"
            values = io.read_panoptic_png(png) if mode == "panoptic" else io.read_label_png(png)
            ids.append(int(values[y - step * i, x - step * i]))
        tracks.append(ids)
    return tracks


@pytest.mark.parametrize("mode", ["instance", "panoptic"])
def test_track_keeps_each_object_id_in_pngs_json_and_overlay_colours(mode, tmp_path):
    frames, objects = moving_shapes(8)
    video = write_video(tmp_path / "clip.avi", frames)
    untracked = _predict(video, "--model", "shapes", "--mode", mode, "--out", tmp_path / "plain", "--quiet")
    tracked = _predict(video, "--model", "shapes", "--mode", mode, "--out", tmp_path / "out", "--json", "--track",
                       "--quiet")
    assert untracked.exit_code == 0 and tracked.exit_code == 0, tracked.output
    ids = _ids_at_objects(tmp_path / "out", mode, 8, objects)
    stable = [track for track in ids if track[0] and len(set(track)) == 1]
    assert len(stable) >= 3, ids  # the objects the model finds in every frame keep one id
    assert any(len(set(track)) > 1 for track in _ids_at_objects(tmp_path / "plain", mode, 8, objects))  # not without
    for record in _records(tracked):  # the json's ids are the PNG's
        png = Path(record["outputs"][mode])
        values = io.read_panoptic_png(png) if mode == "panoptic" else io.read_label_png(png)
        assert {s["id"] for s in record["segments"]} == set(np.unique(values).tolist()) - {0}
        assert {track[0] for track in stable} <= {s["id"] for s in record["segments"] if s["isthing"]}
    # An object's overlay colour stays: the same id, the same colour, whatever its neighbours do.
    overlays = [io.read_image(tmp_path / "out" / "overlays" / "clip" / f"{i:06d}.jpg") for i in range(8)]
    for track in stable:
        first = np.argwhere(io.read_label_png(tmp_path / "out" / mode / "clip" / "000000.png") == track[0]
                            if mode == "instance" else
                            io.read_panoptic_png(tmp_path / "out" / mode / "clip" / "000000.png") == track[0])
        y, x = first[len(first) // 2]
        colours = [overlays[i][y - 2 * i, x - 2 * i].astype(int) for i in range(8)]
        assert max(np.abs(c - colours[0]).max() for c in colours) < 40, colours


def test_a_resumed_tracked_run_gives_the_ids_an_uninterrupted_run_gives(tmp_path):
    frames, _ = moving_shapes(8)
    video = write_video(tmp_path / "clip.avi", frames)
    out = tmp_path / "out"
    args = [video, "--model", "shapes", "--mode", "instance", "--out", out, "--track", "--quiet"]
    assert _predict(*args).exit_code == 0
    whole = [io.read_label_png(out / "instance" / "clip" / f"{i:06d}.png") for i in range(8)]
    for i in range(4, 8):  # as if the run had been killed after frame 3
        (out / ".parts" / "instance" / "clip" / f"{i:06d}.json").unlink()
        (out / "instance" / "clip" / f"{i:06d}.png").unlink()
    result = _predict(*args, "--skip-existing", "--json")
    assert result.exit_code == 0, result.output
    assert [bool(r.get("skipped")) for r in _records(result)] == [True] * 4 + [False] * 4
    for i in range(8):
        assert np.array_equal(io.read_label_png(out / "instance" / "clip" / f"{i:06d}.png"), whole[i]), i


@pytest.mark.parametrize("args, message", [
    (["--track"], "--track follows instances"),
    (["--save-video", "--no-overlay"], "leave --no-overlay out"),
    (["--save-video", "--shard", "0/2"], "leave --shard out"),
    (["--track", "--mode", "instance", "--shard", "0/2"], "leave --shard out"),
    (["--vid-stride", "0"], "--vid-stride 0"),
])
def test_video_options_that_cannot_work_are_one_line(tiny_checkpoint, tmp_path, args, message):
    video = write_video(tmp_path / "clip.mp4", moving_disc(2))
    result = _predict(video, "--weights", tiny_checkpoint, "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
