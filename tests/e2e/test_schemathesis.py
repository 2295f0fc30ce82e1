"""schemathesis fuzzes a real server against the OpenAPI document it serves: as a portal admin, and anonymous.

A third run fuzzes the settings operations as an admin on a server without a default: there a portal with
no settings of its own (so every reset) answers host and senderAddress "", which the answers' schema must
allow while the request's still refuses it.

Each full run generates at least 1,000 requests (valid and invalid data; anonymous also random credentials)
and checks every answer: no 5xx, only declared statuses, declared content types and headers, bodies that
match their schemas, invalid data refused, and ``Allow`` naming exactly the documented methods. The server's
log is searched for 5xx and unhandled errors too. After the operations one by one, the stateful phase follows
the document's links: a message accepted by ``POST /messages`` is read, cancelled and retried by its id. Mail
the fuzzer sends goes to the sink; the portal's rate is kept low so that some of it is still queued when a
cancel comes.

Nothing may leave the machine: a fuzzed host in ``POST /smtp/test`` (or saved, then tested with ``GET``) could
name anything. So the server and the fuzzer run together in a network namespace of their own that has only a
loopback interface (``unshare --net``, as root), where no packet, not even a DNS query, can reach another
host. Inside it the server also refuses every SMTP target outside 127.0.0.0/8 and ::1 and gives up on a
connect after a second, and the default settings point at an aiosmtpd sink on loopback.

The seed is fixed, so a run that passed passes again and CI judges the change, not the draw; set
``SMTPSETTINGS_FUZZ_SEED=random`` (or a number) to explore other inputs, as is worth doing after any change
to the API: random runs are how its findings so far were made.

This file is also the script that runs inside the namespace (see ``main``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

CALLERS = ("admin", "anonymous", NO_DEFAULT := "admin-without-default")
# Per operation and phase. Operations without inputs have only a handful of distinct requests, so the
# body-taking ones carry the count: these give each run well over 1,000 requests in about 20-40 s.
MAX_EXAMPLES = {"admin": 300, "anonymous": 150, NO_DEFAULT: 100}
# The least each run generates, and the operations it covers (all, or GET, POST and DELETE of the settings).
MIN_CASES = {"admin": 1000, "anonymous": 1000, NO_DEFAULT: 100}
MIN_OPERATIONS = {"admin": 9, "anonymous": 9, NO_DEFAULT: 3}
SETTINGS_PATH = "/api/2.0/smtpsettings/smtp"
DEFAULT_SEED = 20261129
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "unsupported_method",
    "allow_header_conformance",
    "missing_required_header",
)
RUN_TIMEOUT = 300  # seconds for one run, server start included; it takes well under a minute


def deny_networks() -> list[str]:
    """Every IPv4 and IPv6 network but 127.0.0.0/8 and ::1, as CIDRs (IPv4-mapped loopback is denied too)."""
    v4 = ipaddress.ip_network("0.0.0.0/0").address_exclude(ipaddress.ip_network("127.0.0.0/8"))
    v6 = ipaddress.ip_network("::/0").address_exclude(ipaddress.ip_network("::1/128"))
    return [str(n) for n in sorted(v4)] + [str(n) for n in sorted(v6)]


def test_deny_networks_cover_everything_but_loopback() -> None:
    networks = [ipaddress.ip_network(n) for n in deny_networks()]

    def denied(address: str) -> bool:
        return any(ipaddress.ip_address(address) in n for n in networks)

    assert not denied("127.0.0.1") and not denied("127.255.255.254") and not denied("::1")
    outside = ["0.0.0.0", "10.0.0.1", "126.255.255.255", "128.0.0.0", "169.254.169.254", "255.255.255.255"]
    outside += ["::", "::2", "::ffff:127.0.0.1", "fe80::1", "2001:db8::25", "ffff::1"]
    for address in outside:
        assert denied(address), address
    # The pieces do not overlap and add up to all addresses less the loopback ones.
    assert sum(n.num_addresses for n in networks if n.version == 4) == 2**32 - 2**24
    assert sum(n.num_addresses for n in networks if n.version == 6) == 2**128 - 1


def _namespaces_usable() -> str | None:
    """None when ``unshare --net`` works here, else why not."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return "unshare (util-linux) and ip (iproute2) are needed to fuzz inside a network namespace"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a network namespace (needs root): {probe.stderr.strip()}"
    return None


@pytest.mark.parametrize("caller", CALLERS)
def test_schemathesis_finds_nothing(caller: str, tmp_path: Path) -> None:
    reason = _namespaces_usable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    chosen = os.environ.get("SMTPSETTINGS_FUZZ_SEED", "")
    seed = random.randrange(2**31) if chosen == "random" else int(chosen or DEFAULT_SEED)
    tests_dir = Path(__file__).resolve().parents[1]
    python_path = os.pathsep.join(filter(None, [str(tests_dir), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path}
    inner = subprocess.run(
        ["unshare", "--net", sys.executable, __file__, caller, str(seed), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    summary_path = tmp_path / "summary.json"
    assert inner.returncode == 0 and summary_path.is_file(), f"the run in the namespace failed:\n{inner.stdout}{inner.stderr}"
    summary = json.loads(summary_path.read_text())
    report, output = summary["report"], summary["output"]
    context = f"schemathesis as {caller}, seed {seed} (SMTPSETTINGS_FUZZ_SEED={seed} repeats it):\n{output[-20000:]}"

    assert report["failures"] == [] and report["errors"] == [], context
    assert report["exit_code"] == 0, context
    operations = report["operations"]
    assert operations["tested"] == operations["selected"] >= MIN_OPERATIONS[caller], context
    assert report["test_cases"]["generated"] >= MIN_CASES[caller], context
    assert summary["server_errors"] == [], "5xx or unhandled errors in the server log:\n" + "\n".join(
        summary["server_errors"]
    )


# ------------------------------------------------------------------------------- inside the namespace


def main(caller: str, seed: int, work: Path) -> None:
    """Start the server and an SMTP sink on loopback, fuzz, and write ``summary.json``; run under unshare."""
    import httpx
    from serverkit import make_portal, start_server
    from smtp_peers import smtp_peer

    from smtpsettings.domain.accounts import Role

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with smtp_peer() as (sink_port, _inbox):
        # A portal without settings of its own (and every reset) tests against the sink.
        default = {
            "SMTPSETTINGS_DEFAULT_SMTP_HOST": "127.0.0.1",
            "SMTPSETTINGS_DEFAULT_SMTP_PORT": str(sink_port),
            "SMTPSETTINGS_DEFAULT_SMTP_SENDER_ADDRESS": "portal@example.com",
        }
        server = start_server(
            work / "data",
            {
                "SMTPSETTINGS_SMTP_DENY_NETWORKS": ",".join(deny_networks()),
                "SMTPSETTINGS_SMTP_CONNECT_TIMEOUT": "1",
                "SMTPSETTINGS_SMTP_COMMAND_TIMEOUT": "2",
                "SMTPSETTINGS_SMTP_JOB_TIMEOUT": "5",
                # Let the fuzzer reach the test-mail path again and again rather than mostly its 429.
                "SMTPSETTINGS_SMTP_TEST_LIMIT": "100000",
                **({} if caller == NO_DEFAULT else default),
                # Messages beyond the portal's rate wait, queued, for the next minute: so cancelling one can
                # succeed, rather than always finding it sent already (the sink takes mail in a millisecond).
                "SMTPSETTINGS_OUTBOX_MESSAGES_PER_MINUTE": "20",
            },
        )
        try:
            _wait_until_serving(server.base_url, httpx)
            portal = make_portal(server)
            headers = ["-H", f"Host: {portal.hostname}"]
            if caller != "anonymous":
                # Signing out from the fuzzer would end its own token: that call is fuzzed anonymously.
                headers += ["-H", f"Authorization: Bearer {portal.sign_in(Role.ADMIN)}"]
                headers += ["--exclude-operation-id", "logout", "--generation-with-security-parameters", "false"]
            phases = "examples,coverage,fuzzing,stateful"
            if caller == NO_DEFAULT:
                # The document's links all lead to and from other operations: no stateful phase.
                headers += ["--include-path", SETTINGS_PATH]
                phases = phases.removesuffix(",stateful")
            output = _schemathesis(server.base_url, headers, phases, MAX_EXAMPLES[caller], seed, work)
        finally:
            server.stop()
    report = json.loads(next((work / "report").glob("*.json")).read_text())
    summary = {"report": report, "output": output, "server_errors": _server_errors(server.log_text())}
    (work / "summary.json").write_text(json.dumps(summary))


def _wait_until_serving(base_url: str, httpx: Any) -> None:
    """The port listens before the app (and its database migration) is ready; the health check waits for it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base_url + "/api/2.0/health/live", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not become ready within 30 s")


# Invalid data is rejected with any 4xx that says why: a generated body over the size limit is refused
# with 413 before it is read, which schemathesis does not count as a rejection unless told.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

[phases.stateful.generation]
max-examples = 40
"""


def _schemathesis(
    base_url: str, extra: list[str], phases: str, max_examples: int, seed: int, work: Path
) -> str:
    config = work / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config),
        "run", base_url + "/api/2.0/openapi.json",
        *extra,
        "--checks", ",".join(CHECKS),
        "--phases", phases,
        "--mode", "all",
        "--max-examples", str(max_examples),
        "--seed", str(seed),
        "--workers", "1",
        "--continue-on-failure",
        "--suppress-health-check", "all",
        "--request-timeout", "10",
        "--generation-database", "none",
        "--report", "json",
        "--report-dir", str(work / "report"),
        "--no-color",
    ]  # fmt: skip
    # cwd: schemathesis keeps state in ./.schemathesis, which belongs in the temporary directory.
    run = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    return run.stdout + run.stderr


def _server_errors(log: str) -> list[str]:
    errors = []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        status = entry.get("status")
        if (isinstance(status, int) and status >= 500) or entry.get("event") == "unhandled_error":
            errors.append(line)
    return errors


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
