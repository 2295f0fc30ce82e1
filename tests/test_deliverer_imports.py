"""What the delivery process loads: only what sending the outbox needs, not the accepting side's front doors.

It is a fresh interpreter beside the workers and shares no memory with them, so every module it imports is
paid for again (docs/benchmarks.md, "What the delivery process imports"). The command runs as ``serve`` runs it
(``python -m smtpsettings deliver``) and sends a real message before it is stopped, so modules imported
only when a message goes out are counted too; it writes ``sys.modules`` as it exits.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from e2e.smtp_peers import smtp_peer
from smtpsettings.config import load_settings
from smtpsettings.domain.accounts import Principal, Role
from smtpsettings.services.accounts import AccountsService
from smtpsettings.wiring import Services
from test_cli import migrated, operator_env

# ``python -m smtpsettings deliver``, with sys.modules written to the file named first when it exits.
PROGRAM = """
import atexit, runpy, sys
from pathlib import Path
report = Path(sys.argv[1])
atexit.register(lambda: report.write_text("\\n".join(sorted(sys.modules))))
sys.argv = ["smtpsettings", "deliver"]
runpy.run_module("smtpsettings", run_name="__main__", alter_sys=True)
"""

# The HTTP side (the API, its framework and server) and the SMTP submission port (aiosmtpd).
FRONT_DOORS = ("litestar", "granian", "aiosmtpd", "smtpsettings.api", "smtpsettings.submission", "smtpsettings.app")


async def queue_one_message(env: dict[str, str]) -> None:
    """One message in the outbox of a new portal, accepted as a worker accepts it (this process may load anything)."""
    services = Services(load_settings(env))
    try:
        accounts = AccountsService(services.db)
        portal = accounts.create_portal("one.test", is_default=False)
        user = accounts.create_user("one.test", email="app@one.test", password="correct horse battery", role=Role.ADMIN)
        settings, _ = await services.smtp.get_for_sending(portal)
        body = {"to": ["someone@example.com"], "subject": "hello", "text": "from the delivery process"}
        await services.outbox.submit(portal, Principal(user=user, via="session"), settings, body)
    finally:
        await services.db.dispose_async()


def test_the_delivery_process_sends_without_loading_the_front_doors(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    report = tmp_path / "modules.txt"
    with smtp_peer() as (port, inbox):
        env = operator_env(
            data,
            SMTPSETTINGS_LOG_FORMAT="json",
            SMTPSETTINGS_DEFAULT_SMTP_HOST="127.0.0.1",
            SMTPSETTINGS_DEFAULT_SMTP_PORT=str(port),
            SMTPSETTINGS_DEFAULT_SMTP_SENDER_ADDRESS="noreply@one.test",
        )
        asyncio.run(queue_one_message({k: v for k, v in env.items() if k.startswith("SMTPSETTINGS_")}))
        log = tmp_path / "deliver.log"
        process = subprocess.Popen(
            [sys.executable, "-c", PROGRAM, str(report)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            assert inbox.received.wait(30), log.read_text()
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert [m["Subject"] for m in inbox.messages] == ["hello"]
    loaded = report.read_text().split()
    assert "smtpsettings.services.dispatcher" in loaded and "aiosmtplib" in loaded  # the report is of a sender
    assert [name for name in loaded if name.startswith(FRONT_DOORS)] == []
