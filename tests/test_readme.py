"""The README's API example works when typed verbatim right after a first start, and leaks no password.

The ``sh`` block of the README's API section is run with bash and the real curl against a freshly started
server (its default portal ``localhost``, its owner, the password it printed), with only the address
changed to the test server's. ``curl`` and ``python3`` are reached through wrappers that log their
arguments before running the real programs, so the test sees every command line the example produces:
no password may be on one (other users see command lines in ``ps``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from serverkit import start_server

from smtpsettings.domain.accounts import PLACEHOLDER_OWNER_EMAIL

README = Path(__file__).resolve().parent.parent / "README.md"
README_URL = "http://127.0.0.1:8080"
SMTP_SECRET = "smtp-Secret-73"


def api_block() -> str:
    section = README.read_text().split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "no sh block in the README's API section"
    return match.group(1)


def json_documents(text: str) -> list[dict[str, Any]]:
    """The JSON answers curl printed one after another (without separators)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):
        document, at = decoder.raw_decode(text, at)
        found.append(document)
    return found


def logging_wrappers(directory: Path, log: Path) -> None:
    """``curl`` and ``python3`` that append their command line to ``log``, then run the real program."""
    directory.mkdir()
    for name in ("curl", "python3"):
        real = shutil.which(name)
        if real is None:
            pytest.fail(f"{name} is needed to run the README's example (apt-get install {name})")
        wrapper = directory / name
        wrapper.write_text(f'#!/bin/bash\nprintf "%s\\n" "{name} $*" >> {log}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)


def test_the_readme_api_example_works_after_the_first_start_without_a_password_on_a_command_line(tmp_path: Path) -> None:
    block = api_block()
    assert block.count(README_URL) >= 7
    assert PLACEHOLDER_OWNER_EMAIL == "owner@localhost"  # what the example signs in as
    server = start_server(tmp_path / "data", {"SMTPSETTINGS_OWNER_EMAIL": "owner@localhost"})
    try:
        assert re.search(r"Email:\s+owner@localhost\b", server.stdout), server.stdout
        match = re.search(r"Password:\s+(\S+)", server.stdout)
        assert match, server.stdout
        password = match.group(1)

        log = tmp_path / "command-lines.log"
        logging_wrappers(tmp_path / "bin", log)
        script = tmp_path / "example.sh"
        script.write_text(block.replace(README_URL, server.base_url))
        env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
        # What an operator types at the two `read -rs` prompts: the printed password, then the SMTP one.
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", str(script)],
            input=f"{password}\n{SMTP_SECRET}\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        server.stop()

    assert result.returncode == 0, result.stderr
    get, save, start_test, status, reset, sign_out = json_documents(result.stdout)
    for answer in (get, save, start_test, status, reset, sign_out):
        assert answer["statusCode"] == 200, answer
        assert answer["status"] == 0, answer
    assert get["response"]["isDefaultSettings"] is True
    assert save["response"]["host"] == "mail.example.com"
    assert save["response"]["isDefaultSettings"] is False
    assert save["response"]["credentialsUserPassword"] == ""
    assert {"id", "completed", "percents"} <= start_test["response"].keys()
    assert status["response"]["id"] == start_test["response"]["id"]
    assert reset["response"]["isDefaultSettings"] is True

    command_lines = log.read_text()
    assert command_lines.count("curl ") == 7, command_lines
    for secret in (password, SMTP_SECRET):
        assert secret not in command_lines
        assert secret not in result.stdout + result.stderr
