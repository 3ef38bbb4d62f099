"""Runs killed at any moment leave only complete files, and the next run finishes the work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from process_helpers import child_env, start_interruptible

from segcli import io
from segcli.checkpoint import load_checkpoint, load_training_state
from segcli.data.synth import generate
from segcli.models.registry import build_model

SEGCLI = [sys.executable, "-m", "segcli"]


def _every_checkpoint_loads(run: Path) -> int:
    """Loads every checkpoint file of the run; returns the step of its training state (0: none yet)."""
    for stem in ("last", "best"):
        if (run / f"{stem}.json").exists():
            load_checkpoint(run / stem)
    return load_training_state(run / "last")["step"] if (run / "last.state.json").exists() else 0


def _no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if io.TEMP_PREFIX in p.name or ".tmp" in p.name]


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 240) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.05)


def test_kill_9_during_training_then_resume(tmp_path):
    data = generate("shapes", tmp_path / "shapes", n=8, size=32, seed=0)
    run = tmp_path / "run"
    steps = 200  # about 30 ms each here: the kill comes near step 30, with seconds to spare on a loaded machine
    command = [*SEGCLI, "train", "--data", str(data), "--model", "unet", "--width", "4", "--steps", str(steps),
               "--val-every", "3", "--batch-size", "2", "--img-size", "32", "--out", str(run), "--quiet",
               "--device", "cpu"]
    build_model("unet", num_classes=2, width=4)  # the loop's first load must not pay for the imports (2 s loaded)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    _wait_for(run / "last.state.json", process)
    loads, end = 0, time.monotonic() + 1.0
    while True:  # while it saves every 3 steps, files load at any moment
        step = _every_checkpoint_loads(run)
        loads += 1
        # Bounded by the run's progress, not only by the clock: a loaded machine may slow this loop, not the run.
        if time.monotonic() > end or step >= 30 or process.poll() is not None:
            break
    assert process.poll() is None, "training ended before it could be killed: give it more steps"
    process.send_signal(signal.SIGKILL)
    process.wait()
    _every_checkpoint_loads(run)
    killed_at = load_training_state(run / "last")["step"]
    assert 0 < killed_at < steps and loads > 0, f"killed at step {killed_at} of {steps}"
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, env=child_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    _every_checkpoint_loads(run)
    assert load_checkpoint(run / "last")[1]["step"] == steps
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == steps and logged == sorted(logged), logged
    _no_temporaries(run)


@pytest.fixture
def folder(random_images, tmp_path):
    return random_images(tmp_path / "images", 30, 48)


def _outputs_complete(out: Path, stems: list[str]) -> None:
    for stem in stems:
        assert io.read_label_png(out / "semantic" / f"{stem}.png").shape == (48, 48)
        assert io.read_image(out / "overlays" / f"{stem}.jpg").shape[0] == 48  # wider: a legend beside it
        assert io.read_json(out / ".parts" / "semantic" / f"{stem}.json")["record"]["ok"]


def test_kill_9_during_predict_then_skip_existing(folder, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    command = [*SEGCLI, "predict", str(folder), "--weights", str(tiny_checkpoint), "--out", str(out), "--json",
               "--quiet", "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    for _ in range(3):
        assert json.loads(process.stdout.readline())["ok"]
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Whatever is there is whole: every file of the layout decodes (temporary files aside).
    for png in out.rglob("*.png"):
        if io.TEMP_PREFIX not in png.name:
            io.read_label_png(png)
    # A part being written when the kill came stays as a temporary file (removed by the next run), not a finished one.
    finished = [p.stem for p in (out / ".parts" / "semantic").glob("*.json") if io.TEMP_PREFIX not in p.name]
    assert len(finished) >= 3
    resumed = subprocess.run([*command, "--skip-existing"], capture_output=True, text=True, env=child_env(),
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert len(records) == 30 and sum(bool(r.get("skipped")) for r in records) >= len(finished)
    stems = [f"im{i:02d}" for i in range(30)]
    _outputs_complete(out, stems)
    _no_temporaries(out)


def test_two_skip_existing_runs_on_one_out_never_corrupt_a_file(folder, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    command = [*SEGCLI, "predict", str(folder), "--weights", str(tiny_checkpoint), "--out", str(out), "--quiet",
               "--device", "cpu", "--skip-existing"]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, env=child_env())
    second = subprocess.Popen(command, stderr=subprocess.PIPE, env=child_env())
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert second.wait(timeout=300) == 0, second.stderr.read()
    _outputs_complete(out, [f"im{i:02d}" for i in range(30)])
    assert len(list((out / "semantic").iterdir())) == 30
    _no_temporaries(out)


def test_a_stale_temporary_file_of_a_dead_process_is_removed_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "semantic" / f"{io.TEMP_PREFIX}{dead.stdout.strip()}-a.x1.tmp.png"
    live = tmp_path / "semantic" / f"{io.TEMP_PREFIX}{os.getppid()}-b.x2.tmp.png"
    stale.parent.mkdir()
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    io.prepare_out_dir(tmp_path)
    assert not stale.exists() and live.exists()


def test_sigint_during_training_is_exit_130_and_one_line(tmp_path):
    data = generate("shapes", tmp_path / "shapes", n=8, size=32, seed=0)
    run = tmp_path / "run"
    command = [*SEGCLI, "train", "--data", str(data), "--model", "unet", "--width", "4", "--steps", "2000",
               "--val-every", "5", "--batch-size", "2", "--img-size", "32", "--out", str(run), "--quiet",
               "--device", "cpu"]
    process = start_interruptible(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(run / "last.json", process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted") and stdout == b"", stderr
    _every_checkpoint_loads(run)


def test_a_loader_worker_stays_quiet_when_the_main_process_drops_its_connection(monkeypatch, capsys):
    # Ctrl-C while the main process fetched a batch: the worker's resource-sharer thread saw the connection reset
    # and printed a traceback under the one-line message (test_sigint_during_training_..., 1 run in 12).
    from segcli.training.loader import quiet_when_orphaned

    reported = []
    monkeypatch.setattr(sys, "excepthook", lambda *info: reported.append(info[0]))
    quiet_when_orphaned(0)
    for kind in (ConnectionResetError, BrokenPipeError, EOFError, ValueError):
        sys.excepthook(kind, kind("x"), None)
    assert reported == [ValueError]  # a lost main process is no error of the worker's; the rest still reports
