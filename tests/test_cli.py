"""The CLI as users meet it: through typer's runner and through the installed console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from segcli import __version__
from segcli.cli import app

runner = CliRunner()
SEGCLI = Path(sys.executable).parent / "segcli"


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("models", "data"):
        assert command in result.output


def test_models_lists_the_zoo():
    from segcli.models.registry import list_models

    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    for entry in list_models():
        assert entry.name in result.output


def test_user_error_is_one_line_and_exit_2():
    result = runner.invoke(app, ["models", "--info", "no_such_model"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown model 'no_such_model'" in lines[0], result.stderr
    assert result.stdout == "" and "Traceback" not in result.output


def test_bad_option_value_is_exit_2():
    result = runner.invoke(app, ["models", "--mode", "bogus"])
    assert result.exit_code == 2


def test_installed_console_script_runs_and_debug_shows_traceback():
    assert SEGCLI.exists(), "the segcli console script is not installed in this environment"
    ok = subprocess.run([str(SEGCLI), "--version"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip() == f"segcli {__version__}"

    failed = subprocess.run([str(SEGCLI), "models", "--info", "nope"], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and failed.stdout == "" and "nope" in failed.stderr
    assert "Traceback" not in failed.stderr

    debug = subprocess.run([str(SEGCLI), "models", "--info", "nope", "--debug"],
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "segcli", "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and __version__ in result.stdout


def test_version_and_help_do_not_import_torch():
    """The start-up promise (timed in benchmarks/bench_startup.py): neither command loads torch."""
    code = ("import sys\nfrom segcli.cli import main\nfor args in (['--version'], ['--help']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_package_root_exports_lazily():
    import segcli

    assert callable(segcli.build_model) and callable(segcli.predict) and callable(segcli.list_models)
    assert segcli.PredictConfig.__name__ == "PredictConfig"


def test_models_info_names_modes_as_users_type_them():
    result = runner.invoke(app, ["models", "--info", "unet_contour", "--size", "64"])
    assert result.exit_code == 0, result.output
    assert "semantic, instance, panoptic" in result.output and "Mode." not in result.output
