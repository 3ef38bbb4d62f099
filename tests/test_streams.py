"""Where output goes: results (tables, --json) on stdout, messages on stderr, file modes from the umask,
and a closed pipe or Ctrl-C ending a run with its own exit code and one line."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from process_helpers import child_env, start_interruptible
from typer.testing import CliRunner

from segcli import io
from segcli.cli import EXIT_BROKEN_PIPE, app

runner = CliRunner()
SEGCLI = [sys.executable, "-m", "segcli"]


def test_checkpoint_files_follow_the_umask_like_their_cards(tiny_checkpoint, tmp_path):
    from segcli.checkpoint import save_training_state

    expected = 0o666 & ~io._read_umask()
    save_training_state(tiny_checkpoint.with_suffix(""), {"step": 1, "moments": {"a": torch.zeros(2)}})
    files = sorted(tiny_checkpoint.parent.iterdir())
    assert {f.name for f in files} == {"tiny.safetensors", "tiny.json", "tiny.state.safetensors", "tiny.state.json"}
    for path in files:
        assert path.stat().st_mode & 0o777 == expected, path


def test_models_table_goes_to_stdout_readable_at_80_columns():
    """`segcli models | grep unet` finds whole rows (before: the table went to stderr, and at 80 columns the name
    column took 49 characters and cut the others to 7)."""
    from segcli.services.catalog import list_catalog

    table = runner.invoke(app, ["models"], env={"COLUMNS": "80"})
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 80
    rows = list_catalog()
    for row in rows:  # every name whole, at the start of its line; its modes and weights beside it or just below
        at = next(i for i, line in enumerate(lines) if line.split() and line.split()[0] == row["name"])
        rest = lines[at] if len(lines[at].split()) > 1 else lines[at + 1]
        assert rest.split()[0 if rest.startswith(" ") else 1] in ("S", "I", "P", "-"), (row["name"], rest)
    grepped = [line for line in lines if "unet_contour" in line]
    assert grepped[0].split()[:4] == ["unet_contour", "S", "I", "P"]
    listed = runner.invoke(app, ["models", "--json", "--quiet"])
    assert listed.exit_code == 0 and listed.stderr == ""
    assert [m["name"] for m in json.loads(listed.stdout)] == [row["name"] for row in rows]
    quiet = runner.invoke(app, ["models", "--quiet"])  # the table is the result, not a message: --quiet keeps it
    assert quiet.exit_code == 0 and quiet.stdout == table.stdout and quiet.stderr == ""


@pytest.fixture
def semantic_pair(tmp_path):
    labels = np.zeros((16, 16), np.uint8)
    labels[4:12, 4:12] = 1
    for folder in ("gt", "pred"):
        io.write_class_png(tmp_path / folder / "a.png", labels, [(0, 0, 0), (255, 0, 0)])
    return ["eval", "--mode", "semantic", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred")]


def test_eval_table_goes_to_stdout_and_json_dash_alone(semantic_pair, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*semantic_pair, "--json", "-", "--quiet"])
    assert result.exit_code == 0 and result.stderr == ""
    assert json.loads(result.stdout)["miou"] == 1.0  # stdout carries the JSON only
    assert not (tmp_path / "-").exists()
    shown = runner.invoke(app, semantic_pair, env={"COLUMNS": "80"})  # `segcli eval ... | less` shows it
    assert shown.exit_code == 0 and "miou" in shown.stdout and "miou" not in shown.stderr
    assert max(len(line) for line in shown.stdout.splitlines()) <= 80
    quiet = runner.invoke(app, [*semantic_pair, "--quiet"], env={"COLUMNS": "80"})
    assert quiet.exit_code == 0 and quiet.stdout == shown.stdout


@pytest.fixture
def folder(random_images, tmp_path):
    # 256 px: the run must still be going when the test, having read the first line, acts on it. At 32 px the
    # other 39 images took well under a second, which a loaded machine can take from the test between two lines.
    return random_images(tmp_path / "images", 40, 256)


def test_predict_json_into_a_closed_pipe_stops_with_its_own_code(folder, tiny_checkpoint, tmp_path):
    command = [*SEGCLI, "predict", str(folder), "--weights", str(tiny_checkpoint), "--out", str(tmp_path / "out"),
               "--json", "--quiet", "--device", "cpu", "--no-overlay"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    first = process.stdout.readline()  # what `| head -1` reads, then it exits
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == EXIT_BROKEN_PIPE != 1
    assert json.loads(first)["ok"] is True
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "closed the pipe" in lines[0], stderr
    # What was written is complete: every PNG there decodes.
    for png in (tmp_path / "out" / "semantic").glob("*.png"):
        io.read_label_png(png)


def test_sigint_ends_predict_with_130_and_one_line(folder, tiny_checkpoint, tmp_path):
    command = [*SEGCLI, "predict", str(folder), "--weights", str(tiny_checkpoint), "--out", str(tmp_path / "out"),
               "--json", "--quiet", "--device", "cpu"]
    process = start_interruptible(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.readline()  # running: one image done
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted"), stderr
    assert not list((tmp_path / "out").rglob("*.tmp*"))  # no temporary file stays


@pytest.mark.parametrize("command", ["train", "predict"])
def test_help_into_a_closed_pipe_exits_as_sigpipe_would(command):
    # `segcli train --help | head -1`: rich writes the help; its own default was exit code 1, a failure under pipefail.
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, 4096)  # smaller than the help: the writer waits for the reader
    process = subprocess.Popen([*SEGCLI, command, "--help"], stdout=write_end, stderr=subprocess.PIPE, env=child_env())
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        reader.readline()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == EXIT_BROKEN_PIPE, stderr
    assert "Traceback" not in stderr
