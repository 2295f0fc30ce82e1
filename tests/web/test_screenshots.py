"""``scripts/screenshots.py`` run end to end, as the README tells an operator to, into a temporary directory.

The script drives the page like its tests do but is run by hand only now and then, so without this it rots
unnoticed (it once crashed halfway, leaving half the README's images new and half old).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "screenshots.py"
CHROMIUM = os.environ.get("SMTPSETTINGS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
PHONE_WIDTH = 360


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("screenshots", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=180)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


def test_the_readme_shows_exactly_the_images_the_script_takes(script: ModuleType) -> None:
    shown = set(re.findall(r"docs/images/([\w-]+\.png)", (ROOT / "README.md").read_text()))
    assert shown == set(script.SHOTS)


def test_the_script_takes_every_image_into_the_directory_given(tmp_path: Path, script: ModuleType) -> None:
    if not Path(CHROMIUM).is_file():
        if os.environ.get("SMTPSETTINGS_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"no Chromium at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SMTPSETTINGS_TEST_CHROMIUM)")
    out = tmp_path / "images"
    result = run("--out", str(out), "--chromium", CHROMIUM)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(script.SHOTS)
    sizes = {name: png_size(out / name) for name in script.SHOTS}
    assert sizes["phone.png"][0] == PHONE_WIDTH
    assert sizes["sign-in.png"] == (script.DESKTOP["width"], script.DESKTOP["height"])
    # Full-page shots of the settings with a test mail's diagnostics open run far below the window.
    assert sizes["test-mail-sent.png"][1] > script.DESKTOP["height"]
    # Element shots: the cards, narrower than the window.
    for card in ("outgoing-mail.png", "oauth2-microsoft.png"):
        assert 300 < sizes[card][0] < script.DESKTOP["width"], sizes


def test_a_failed_run_leaves_the_previous_images_as_they_were(tmp_path: Path) -> None:
    out = tmp_path / "images"
    out.mkdir()
    (out / "sign-in.png").write_bytes(b"the previous image")
    result = run("--out", str(out), "--chromium", str(tmp_path / "no-such-chromium"))
    assert result.returncode != 0
    assert "no-such-chromium" in result.stderr
    assert [p.name for p in out.iterdir()] == ["sign-in.png"]
    assert (out / "sign-in.png").read_bytes() == b"the previous image"
