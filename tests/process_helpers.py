"""segcli in a child process, as a shell runs it: the tests of signals, pipes and exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def child_env() -> dict:
    """This checkout's segcli, one thread per child (two children beside pytest's workers on 2 cores)."""
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}


def start_interruptible(command: list[str], **kwargs) -> subprocess.Popen:
    """Popen with SIGINT at its default in the child: a shell that starts the suite in the background (`nohup`, `&`)
    passes SIGINT on ignored, and a Python started so installs no Ctrl-C handler: the child would never see one."""
    return subprocess.Popen(command, env=child_env(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            **kwargs)
