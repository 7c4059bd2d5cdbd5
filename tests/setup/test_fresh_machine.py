"""The README's two commands on a fresh machine: set-up must not depend on the installer the
machine's Python happens to bundle (pip 23.2 with Python 3.11 rejects the lock in
--require-hashes mode once upstream publishes a newer httpx)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _recipe() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    block = text.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines()[1:] if line.startswith("\t")]


def _pins(lock: Path) -> dict[str, tuple[str, list[str]]]:
    pins: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n\s*", " ", lock.read_text())
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)\s+(.*)$", line)
        assert m, f"{lock.name}: not pinned with == and hashes: {line!r}"
        pins[m.group(1).lower()] = (m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", m.group(3)))
    return pins


def test_setup_installs_a_pinned_hash_checked_installer_before_the_lock():
    steps = _recipe()
    assert "-m venv" in steps[0]
    assert "requirements-bootstrap.lock" in steps[1] and "--require-hashes" in steps[1]
    assert "requirements.lock" in steps[2] and "--require-hashes" in steps[2]
    # the project itself is built with the pinned setuptools, not a fresh download
    assert "--no-build-isolation" in steps[3]
    pins = _pins(ROOT / "requirements-bootstrap.lock")
    assert set(pins) == {"pip", "setuptools"}
    assert all(hashes for _, hashes in pins.values())
    assert int(pins["pip"][0].split(".")[0]) >= 24


def test_bootstrap_lock_installs_with_the_machines_bundled_pip(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--require-hashes", "--no-deps", "-r", str(ROOT / "requirements-bootstrap.lock")],
        check=True,
    )
    out = subprocess.run([str(py), "-m", "pip", "--version"], check=True, capture_output=True, text=True)
    assert out.stdout.split()[1] == _pins(ROOT / "requirements-bootstrap.lock")["pip"][0]
