"""The systemd unit shipped in deploy/: systemd itself accepts it, and it keeps the hardening the docs promise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from serverkit import smtpsettings_command

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "smtpsettings.service"
INSTALLED = "/opt/smtpsettings/venv/bin/smtpsettings"  # where docs/deployment.md installs the command


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on ``text``, with the command where this test run installed it (systemd
    checks that the executables exist)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not found: install Debian's systemd package (.ci/run does)")
    unit = tmp_path / "smtpsettings.service"
    unit.write_text(text.replace(INSTALLED, smtpsettings_command()[0]))
    return subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)


def test_systemd_accepts_the_unit_without_a_single_warning(tmp_path: Path) -> None:
    result = verify(tmp_path, UNIT.read_text())
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # an unknown or misspelt directive is only a warning


def test_a_misspelt_directive_would_be_caught(tmp_path: Path) -> None:
    result = verify(tmp_path, UNIT.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    assert "NoNewPrivilege" in result.stderr


def test_the_unit_is_hardened_as_docs_deployment_says() -> None:
    found = directives(UNIT.read_text())
    expected = {
        "User": "smtpsettings",
        "StateDirectory": "smtpsettings",
        "StateDirectoryMode": "0700",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "LimitNOFILE": "65536",
        "UMask": "0077",
    }
    for key, value in expected.items():
        assert found.get(key) == [value], key
    assert "SMTPSETTINGS_DATA_DIR=/var/lib/smtpsettings" in found["Environment"]
    assert found["ExecStartPre"] == [f"{INSTALLED} migrate"]
    assert found["ExecStart"] == [f"{INSTALLED} serve"]
    assert INSTALLED in (Path(__file__).resolve().parent.parent / "docs" / "deployment.md").read_text()
