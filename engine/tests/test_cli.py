"""The `moelab` command line itself: what `--help` and `--version` load, and commands that cannot load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import moelab
import moelab.commands
import moelab.errors
from moelab import cli

ENGINE = Path(moelab.__file__).resolve().parents[1]


# Runs `python -m moelab ARGS` and, on exit, writes the names of all imported modules to a file.
# (`-X importtime` would not do: it misses modules loaded with importlib.import_module.)
PROBE = """
import atexit, json, runpy, sys
out, sys.argv = sys.argv[1], ["moelab", *sys.argv[2:]]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
runpy.run_module("moelab", run_name="__main__", alter_sys=True)
"""


def imported_by(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Runs `python -m moelab ARGS` from this checkout; returns it and the modules it imported."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ENGINE), os.environ.get("PYTHONPATH")])),
    }
    out = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args], capture_output=True, text=True, env=env, timeout=120
    )
    return proc, set(json.loads(out.read_text()))


@pytest.mark.parametrize("args", [["--help"], ["--version"], []])
def test_help_and_version_import_no_torch(args: list[str], tmp_path: Path) -> None:
    # The extension runs `python -m moelab --version` to probe the engine: it must stay quick.
    proc, modules = imported_by(tmp_path, *args)
    assert proc.returncode == (2 if not args else 0), proc.stderr[-2000:]
    assert "moelab.cli" in modules  # the probe sees imports at all
    assert not {m for m in modules if m.split(".")[0] == "torch"}
    assert not {m for m in modules if m.startswith("moelab.commands.")}
    if args == ["--version"]:
        assert proc.stdout.strip() == f"moelab {moelab.__version__}"
    else:
        listing = proc.stdout if args else proc.stdout + proc.stderr
        assert all(name in listing for name in cli.COMMANDS)


def test_a_command_imports_only_its_own_module(tmp_path: Path) -> None:
    proc, modules = imported_by(tmp_path, "schema", "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "moelab.commands.schema" in modules
    assert not {m for m in modules if m.startswith("moelab.commands.") and m != "moelab.commands.schema"}


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_loads_and_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: moelab {name}")


@pytest.fixture
def broken_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A command `broken` whose module fails to import (it imports a module that does not exist)."""
    (tmp_path / "broken.py").write_text("import moelab_no_such_dependency\n")
    monkeypatch.setattr(moelab.commands, "__path__", [*moelab.commands.__path__, str(tmp_path)])
    monkeypatch.setitem(cli.COMMANDS, "broken", "a command whose module cannot be imported")
    return "broken"


def test_a_command_that_fails_to_import_is_a_clear_error(
    broken_command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([broken_command, "--flag"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("moelab: error: command 'broken' is unavailable:")
    assert "moelab.commands.broken" in err and "moelab_no_such_dependency" in err
    with pytest.raises(moelab.errors.MoELabError) as debug_info:  # --debug: the traceback, down to the cause
        cli.main(["--debug", broken_command])
    assert isinstance(debug_info.value.__cause__, ModuleNotFoundError)


def test_a_command_that_fails_to_import_stays_listed(
    broken_command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "a command whose module cannot be imported" in capsys.readouterr().out
