"""The README's installation commands, run as written, on the system's own Python (Debian 12's
/usr/bin/python3 when there is one, which refuses a bare `pip install`), in a scratch directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
MARKER = "<!-- install: run as written by tests/test_install.py -->"


def readme_install_commands() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index(MARKER):]
    match = re.search(r"```sh\n(.*?)```", block, flags=re.DOTALL)
    assert match is not None
    return [line.strip() for line in match.group(1).splitlines() if line.strip()]


def test_the_install_block_uses_a_venv_not_a_bare_pip() -> None:
    commands = readme_install_commands()
    assert commands[0] == "sudo apt-get install -y python3-venv"
    assert any(re.fullmatch(r"sudo python3 -m venv (\S+)", c) for c in commands)
    assert not any(re.match(r"(sudo )?pip3? install", c) for c in commands)
    assert commands[-1] == "p1logger --version"


@pytest.mark.slow
def test_the_readme_installation_works_on_the_system_python(tmp_path: Path) -> None:
    python = SYSTEM_PYTHON if os.access(SYSTEM_PYTHON, os.X_OK) else sys.executable
    # A copy of the checkout: pip builds in the source tree, and the test must not leave build files there.
    checkout = tmp_path / "p1logger"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(
        ".git", "node_modules", "__pycache__", ".pytest_cache", ".mypy_cache", ".hypothesis", "build", "*.egg-info"))
    venv, bin_dir = tmp_path / "opt-p1logger", tmp_path / "bin"
    bin_dir.mkdir()
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE", "SSL_CERT_FILE"):
        if name in os.environ:
            env[name] = os.environ[name]
    outputs = []
    for command in readme_install_commands():
        if command.startswith("sudo apt-get install"):
            # CI installs the package (.ci/run); here it only has to be there.
            assert subprocess.run([python, "-c", "import ensurepip, venv"], check=False).returncode == 0
            continue
        command = command.removeprefix("sudo ")
        command = command.replace("/opt/p1logger", str(venv)).replace("/usr/local/bin", str(bin_dir))
        command = re.sub(r"^python3 ", f"{python} ", command)
        result = subprocess.run(command, shell=True, cwd=checkout, env=env, capture_output=True, text=True,
                                timeout=600, check=False)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        outputs.append(result.stdout)
    version = subprocess.run([sys.executable, "-c", "import p1logger; print(p1logger.__version__)"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert outputs[-1] == f"p1logger {version}\n"
    assert (venv / "bin" / "p1logger").exists()
