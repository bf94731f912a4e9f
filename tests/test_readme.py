"""The README cannot rot: every `dialer` command in it runs here, offline, and the sample output
it shows is what the command prints."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S)


def dialer_commands() -> list[str]:
    commands = []
    for language, body in BLOCKS:
        if language != "sh":
            continue
        for line in body.splitlines():
            command = line.split("&&")[-1].strip()
            if command.startswith("dialer "):
                commands.append(command)
    return commands


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "campaigns", folder / "campaigns")
    return folder


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    env = {key: value for key, value in __import__("os").environ.items() if key != "DIALER_API_KEY"}
    return subprocess.run([sys.executable, "-m", "dialer", *argv[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def test_the_readme_names_the_two_set_up_commands():
    assert "pip install -e . && dialer run campaigns/demo.toml" in README
    assert "pip install -e '.[test]' && pytest" in README
    assert (ROOT / ".ci" / "run").read_text().count("pip install -e '.[test]' && pytest") == 1


def test_every_dialer_command_in_the_readme_runs(workdir):
    commands = dialer_commands()
    assert len(commands) >= 7
    for command in commands:
        if command.startswith("dialer sandbox"):
            argv = shlex.split(command.replace("--port 8787", "--port 0"))  # a free port, not a fixed one
            server = subprocess.Popen([sys.executable, "-m", "dialer", *argv[1:]], stderr=subprocess.PIPE, text=True)
            assert server.stderr.readline().startswith("dialer sandbox listening on http://127.0.0.1:")
            server.send_signal(signal.SIGINT)
            assert server.wait(timeout=10) == 0
            continue
        result = run(command, workdir)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        assert "Traceback" not in result.stderr


def test_the_dry_run_output_shown_is_what_it_prints(tmp_path):
    shutil.copytree(ROOT / "campaigns", tmp_path / "campaigns")
    command = "dialer run campaigns/demo.csv --dry-run"
    shown = next(body for language, body in BLOCKS if language == "" and body.startswith("demo.csv: 252 rows"))
    assert command in dialer_commands()
    assert run(command, tmp_path).stdout == shown


def test_the_library_example_runs(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "campaigns", tmp_path / "campaigns")
    monkeypatch.chdir(tmp_path)
    code = next(body for language, body in BLOCKS if language == "python")
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "reports" / "demo-dry-run.csv").exists()
