"""How many transactions the delivery process commits for mail that arrives a message at a time.

Each of its transactions on SQLite is a group commit of the delivery process's own database object, counted
by its committer. A message that arrives alone costs its claim and its outcome; a claim after a successful
outcome would find nothing (the claim before took every message that was due and none has come since), and
an outcome written while a claim starts goes in that claim's transaction. Before, each message cost three
(claim, outcome, an empty claim): 36 for 12 messages, where the bound here is 28 and now 24 are made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from e2e.smtp_peers import smtp_peer
from smtpsettings.config import load_settings
from smtpsettings.domain.accounts import Principal, Role
from smtpsettings.services.accounts import AccountsService
from smtpsettings.services.wakeups import Waker
from smtpsettings.store.tables import outbox_messages
from smtpsettings.wiring import Delivery, Services, wake_path
from test_cli import migrated, operator_env

MESSAGES = 12
SLACK = 4  # the dispatcher's lock and heartbeats, beside the messages' own transactions


async def one_at_a_time(env: dict[str, str], inbox_count: Callable[[], int]) -> tuple[int, list[str]]:
    settings = load_settings(env)
    services = Services(settings)  # the accepting side (its own database object); its dispatcher is never started
    delivery = Delivery(settings)
    waker = Waker(wake_path(settings))
    try:
        accounts = AccountsService(services.db)
        portal = accounts.create_portal("one.test", is_default=False)
        user = accounts.create_user("one.test", email="app@one.test", password="correct horse battery", role=Role.ADMIN)
        await delivery.start()
        await asyncio.sleep(0.5)  # the dispatcher takes its lock
        start = delivery.db._committer.batches if delivery.db._committer else 0
        for i in range(MESSAGES):
            sending, _ = await services.smtp.get_for_sending(portal)
            body = {"to": ["someone@example.com"], "subject": f"m{i}", "text": "one at a time"}
            await services.outbox.submit(portal, Principal(user=user, via="session"), sending, body)
            waker.wake()
            deadline = time.monotonic() + 20
            while True:  # delivered and recorded before the next one arrives
                with services.db.engine.connect() as conn:
                    sent = conn.execute(sa.select(sa.func.count()).where(outbox_messages.c.status == "sent")).scalar_one()
                if sent == i + 1 and inbox_count() == i + 1:
                    break
                assert time.monotonic() < deadline, f"message {i} was not sent and recorded"
                await asyncio.sleep(0.02)
        assert delivery.db._committer is not None
        transactions = delivery.db._committer.batches - start
        with services.db.engine.connect() as conn:
            statuses = [row[0] for row in conn.execute(sa.select(outbox_messages.c.status))]
        return transactions, statuses
    finally:
        waker.close()
        await delivery.close(1.0)
        await services.db.dispose_async()


def test_a_message_that_arrives_alone_costs_its_claim_and_its_outcome(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    with smtp_peer() as (port, inbox):
        env = operator_env(
            data,
            SMTPSETTINGS_DEFAULT_SMTP_HOST="127.0.0.1",
            SMTPSETTINGS_DEFAULT_SMTP_PORT=str(port),
            SMTPSETTINGS_DEFAULT_SMTP_SENDER_ADDRESS="noreply@one.test",
            SMTPSETTINGS_OUTBOX_MESSAGES_PER_MINUTE="100000",
        )
        transactions, statuses = asyncio.run(
            one_at_a_time({k: v for k, v in env.items() if k.startswith("SMTPSETTINGS_")}, lambda: len(inbox.messages))
        )
    assert statuses == ["sent"] * MESSAGES
    assert sorted(str(m["Subject"]) for m in inbox.messages) == sorted(f"m{i}" for i in range(MESSAGES))
    assert transactions <= 2 * MESSAGES + SLACK, transactions
