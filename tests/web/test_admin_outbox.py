"""The admin page's "Outgoing mail" card in a real browser, against the real server and real aiosmtpd sinks.

Messages are sent through the API, as an application would; the card lists them, and an admin cancels and
retries them from the page. Subjects and server replies are shown as text, never as markup.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Dialog, Locator, Page, expect
from smtp_peers import closed_port, smtp_peer, tarpit
from test_admin_page import sign_in

from serverkit import Portal, Server, make_portal, start_server
from smtpsettings.domain.accounts import Role

SETTINGS = "/api/2.0/smtpsettings/smtp"
MESSAGES = "/api/2.0/smtpsettings/messages"


def point_at(client: httpx.Client, port: int) -> None:
    """Send the portal's mail to 127.0.0.1:port, without TLS or AUTH."""
    body = {
        "host": "127.0.0.1",
        "port": port,
        "senderAddress": "noreply@example.com",
        "senderDisplayName": "Example Portal",
        "enableSSL": False,
        "enableAuth": False,
    }
    assert client.post(SETTINGS, json=body).status_code == 200


def send(client: httpx.Client, subject: str, **fields: Any) -> str:
    response = client.post(
        MESSAGES, json={"to": ["a@x.test"], "subject": subject, "text": "Hi there", **fields}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["response"]["id"])


def wait_status(
    client: httpx.Client, message_id: str, statuses: set[str], timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"{MESSAGES}/{message_id}").json()["response"]
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(
                f"message {message_id} is {body['status']}, not {statuses}, after {timeout} s"
            )
        time.sleep(0.05)


def card(page: Page) -> Locator:
    return page.get_by_role("region", name="Outgoing mail")


def row(page: Page, subject: str) -> Locator:
    """The message's row, found by its subject (unique within a test)."""
    return card(page).get_by_role("row").filter(has=page.get_by_role("cell", name=subject, exact=True))


def status_of(row_: Locator) -> Locator:
    return row_.locator(".status-badge")


# ------------------------------------------------------------------------------------------- listing


def test_a_sent_message_is_listed_with_its_status_and_recipients(page: Page, portal: Portal) -> None:
    with smtp_peer() as (port, inbox), portal.client(Role.ADMIN) as c:
        point_at(c, port)
        sign_in(page, portal)
        expect(card(page).get_by_role("heading", name="Outgoing mail")).to_be_visible()
        expect(card(page).get_by_text("No messages yet.")).to_be_visible()
        expect(card(page).get_by_role("table")).to_be_hidden()

        message_id = send(c, "Quarterly report", to=["a@x.test", "b@x.test"], cc=["c@x.test"])
        card(page).get_by_role("button", name="Refresh").click()
        listed = row(page, "Quarterly report")
        # Seen queued (or already sent); the page refreshes itself until the message has gone out.
        expect(status_of(listed)).to_have_text("Sent")
        sent = wait_status(c, message_id, {"sent"})
    assert len(inbox.messages) == 1
    expect(listed.get_by_role("cell").nth(1)).to_have_text("a@x.test +2")
    expect(listed.locator(".outbox__more")).to_have_attribute("title", "To: a@x.test, b@x.test\nCc: c@x.test")
    expect(listed.locator(".outbox__attempts")).to_have_text("1 attempt")
    expect(listed.get_by_role("cell").nth(4)).to_contain_text(sent["smtpReply"])
    expect(listed.locator("time")).to_have_attribute("datetime", sent["createdAt"])
    # A sent message can be neither cancelled nor retried.
    expect(listed.get_by_role("button")).to_have_count(0)
    expect(card(page).get_by_text("1 of 1 message", exact=True)).to_be_visible()


def test_the_newest_twenty_are_listed_of_the_total(page: Page, portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        point_at(c, closed_port())
        for i in range(22):
            send(c, f"Message {i}")
        sign_in(page, portal)
        rows = card(page).locator("tbody tr")
        expect(rows).to_have_count(20)
        expect(card(page).get_by_text("20 of 22 messages", exact=True)).to_be_visible()
        expect(rows.first).to_contain_text("Message 21")  # newest first
        expect(row(page, "Message 1")).to_have_count(0)
        for message in c.get(MESSAGES, params={"count": "100"}).json()["response"]:
            c.delete(f"{MESSAGES}/{message['id']}")  # nothing left to retry in the shared server


def test_a_message_delivered_in_part_names_the_recipients_it_did_not_reach(page: Page, portal: Portal) -> None:
    replies = {"gone@x.test": ["550 5.1.1 no such user"], "hidden@x.test": ["550 5.1.1 no such user"]}
    with smtp_peer(rcpt_replies=replies) as (port, inbox), portal.client(Role.ADMIN) as c:
        point_at(c, port)
        message_id = send(c, "Partly delivered", to=["a@x.test", "gone@x.test"], bcc=["hidden@x.test"])
        done = wait_status(c, message_id, {"partial"})
        sign_in(page, portal)
        listed = row(page, "Partly delivered")
        expect(status_of(listed)).to_have_text("Sent in part")
        expect(listed.locator(".outbox__error")).to_have_text(done["lastError"])
        expect(listed.locator(".outbox__recipient")).to_have_text(["Refused gone@x.test: 550 5.1.1 no such user"])
        expect(listed).not_to_contain_text("hidden@x.test")  # a Bcc recipient is never shown
        expect(listed.get_by_role("button")).to_have_count(0)  # nothing to cancel or retry

        card(page).locator("#outbox-status").select_option(label="Sent in part")
        expect(card(page).locator("tbody tr")).to_have_count(1)
        expect(card(page).get_by_text("1 of 1 partial message", exact=True)).to_be_visible()
    assert [e.rcpt_tos for e in inbox.envelopes] == [["a@x.test"]]


# ------------------------------------------------------------------------------------------- retry


def test_a_refused_message_shows_the_reply_and_retry_sends_it(page: Page, portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        with smtp_peer(refuse_rcpt="550 5.1.1 no such user") as (port, _inbox):
            point_at(c, port)
            failed_id = send(c, "Refused at first")
            failed = wait_status(c, failed_id, {"failed"})
        sign_in(page, portal)
        listed = row(page, "Refused at first")
        expect(status_of(listed)).to_have_text("Failed")
        expect(listed.locator(".outbox__error")).to_have_text(failed["lastError"])
        expect(listed).to_contain_text("550 5.1.1 no such user")
        expect(listed.get_by_role("button", name="Cancel")).to_have_count(0)
        retry = listed.get_by_role("button", name="Retry")
        expect(retry).to_have_accessible_description("Refused at first")

        with smtp_peer() as (port, inbox):
            point_at(c, port)
            retry.click()
            expect(page.locator("#announcer")).to_have_text("The message was queued to be sent again.")
            expect(status_of(listed)).to_have_text("Sent")
            assert wait_status(c, failed_id, {"sent"})["attempts"] == 2
        expect(listed.locator(".outbox__attempts")).to_have_text("2 attempts")
        expect(listed.get_by_role("button")).to_have_count(0)
        expect(card(page).get_by_role("alert")).to_have_text("")
    assert len(inbox.messages) == 1 and inbox.messages[0]["Subject"] == "Refused at first"


# ------------------------------------------------------------------------------------------- cancel


@pytest.fixture(scope="module")
def patient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose first retry waits an hour, so a deferred message stays deferred while the page acts on it."""
    srv = start_server(
        tmp_path_factory.mktemp("patient") / "data",
        {"SMTPSETTINGS_OUTBOX_FIRST_RETRY_SECONDS": "3600", "SMTPSETTINGS_SMTP_CONNECT_TIMEOUT": "2"},
    )
    yield srv
    srv.stop()


def test_a_deferred_message_can_be_cancelled_and_a_conflict_is_explained(
    page: Page, patient_server: Server
) -> None:
    portal = make_portal(patient_server)
    with portal.client(Role.ADMIN) as c:
        point_at(c, closed_port())
        first, second = send(c, "Waiting one"), send(c, "Waiting two")
        waiting = wait_status(c, first, {"deferred"})
        wait_status(c, second, {"deferred"})
        sign_in(page, portal)

        one = row(page, "Waiting one")
        expect(status_of(one)).to_have_text("Deferred")
        expect(one.locator(".outbox__error")).to_have_text(waiting["lastError"])
        expect(one.locator(".outbox__next")).to_contain_text("Next attempt")
        expect(one.get_by_role("button", name="Retry")).to_have_count(0)
        one.get_by_role("button", name="Cancel").click()
        expect(status_of(one)).to_have_text("Cancelled")
        expect(one.get_by_role("button")).to_have_count(0)
        expect(one).to_be_focused()  # the focus stays with the message whose button went away
        assert c.get(f"{MESSAGES}/{first}").json()["response"]["status"] == "cancelled"

        # Cancelled elsewhere meanwhile: the server's 409 is shown and the row says what the message is now.
        two = row(page, "Waiting two")
        assert c.delete(f"{MESSAGES}/{second}").status_code == 200
        two.get_by_role("button", name="Cancel").click()
        expect(card(page).get_by_role("alert")).to_have_text(
            "The message is cancelled: only a queued or deferred message can be cancelled."
        )
        expect(status_of(two)).to_have_text("Cancelled")
        expect(two.get_by_role("button")).to_have_count(0)
        # A refresh starts afresh: the old error goes.
        card(page).get_by_role("button", name="Refresh").click()
        expect(card(page).get_by_role("alert")).to_have_text("")


# ------------------------------------------------------------------------------------------- the filter


def test_the_status_filter_asks_the_server_for_one_status(page: Page, portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        with smtp_peer(refuse_data=["554 5.7.1 rejected"]) as (port, _inbox):
            point_at(c, port)
            wait_status(c, send(c, "Will fail"), {"failed"})
            wait_status(c, send(c, "Will arrive"), {"sent"})
        sign_in(page, portal)
        expect(card(page).locator("tbody tr")).to_have_count(2)
        expect(card(page).get_by_text("2 of 2 messages", exact=True)).to_be_visible()
        status = card(page).get_by_label("Status", exact=True)

        with page.expect_request(lambda r: r.url.endswith(f"{MESSAGES}?count=20&status=failed")):
            status.select_option("failed")
        expect(card(page).locator("tbody tr")).to_have_count(1)
        expect(row(page, "Will fail")).to_have_count(1)
        expect(card(page).get_by_text("1 of 1 failed message", exact=True)).to_be_visible()

        status.select_option("sent")
        expect(card(page).locator("tbody tr")).to_have_count(1)
        expect(row(page, "Will arrive")).to_have_count(1)

        status.select_option("queued")
        expect(card(page).get_by_text("No queued messages.")).to_be_visible()
        expect(card(page).get_by_role("table")).to_be_hidden()

        status.select_option("")
        expect(card(page).locator("tbody tr")).to_have_count(2)


# ------------------------------------------------------------------------------------------- hostile text


def test_subjects_and_server_replies_are_shown_as_text(page: Page, portal: Portal) -> None:
    """Subjects come from applications and replies from mail servers: neither may become markup."""
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    subject = "<img src=x onerror=alert(1)>"
    reply = "550 5.1.1 <img src=y onerror=alert(2)><b>bold</b>"
    with portal.client(Role.ADMIN) as c:
        with smtp_peer(refuse_rcpt=reply) as (port, _inbox):
            point_at(c, port)
            wait_status(c, send(c, subject), {"failed"})
        sign_in(page, portal)
        listed = row(page, subject)
        expect(listed).to_have_count(1)
        expect(listed.get_by_role("cell", name=subject, exact=True)).to_be_visible()
        expect(listed).to_contain_text("<img src=y onerror=alert(2)><b>bold</b>")
    assert card(page).locator("img, b, script").count() == 0
    page.wait_for_timeout(300)  # an image error handler would have run by now
    assert dialogs == []
    assert not any(re.search(r"/(x|y)$", url) for url in requests), requests


# ------------------------------------------------------------------------------------------- details


def test_after_retry_the_old_error_is_not_shown_beside_queued(page: Page, portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        with smtp_peer(refuse_rcpt="550 5.1.1 no such user") as (port, _inbox):
            point_at(c, port)
            failed_id = send(c, "Retried later")
            wait_status(c, failed_id, {"failed"})
        sign_in(page, portal)
        listed = row(page, "Retried later")
        expect(listed.locator(".outbox__error")).to_contain_text("550 5.1.1")
        with tarpit() as port:  # the retry waits at the greeting: the row stays queued or sending
            point_at(c, port)
            listed.get_by_role("button", name="Retry").click()
            expect(status_of(listed)).to_have_text(re.compile("^(Queued|Sending)$"))
            expect(listed).not_to_contain_text("550 5.1.1")
            expect(listed.locator(".outbox__error")).to_have_count(0)


def test_a_long_address_wraps_only_after_the_at_sign_or_before_a_dot(page: Page, portal: Portal) -> None:
    address = "quarterly-financial-statements@accounts-payable.subsidiary-international.example"
    page.set_viewport_size({"width": 360, "height": 740})
    with portal.client(Role.ADMIN) as c:
        with smtp_peer() as (port, _inbox):
            point_at(c, port)
            wait_status(c, send(c, "Long address", to=[address]), {"sent"})
        sign_in(page, portal)
    # On a phone the rows are laid out as blocks, without the table's roles: found by text here.
    shown = page.locator("#outbox-rows tr", has_text="Long address").locator(".outbox__to .address")
    expect(shown).to_have_text(address)
    # Where a line ends: only after "@" or a hyphen, or before a dot; never inside a word.
    breaks = shown.evaluate(
        """el => {
             const chars = [];
             for (const n of el.childNodes) {
               if (n.nodeType !== Node.TEXT_NODE) continue;
               for (let i = 0; i < n.length; i++) {
                 const range = document.createRange(); range.setStart(n, i); range.setEnd(n, i + 1);
                 chars.push([n.data[i], Math.round(range.getBoundingClientRect().top)]);
               }
             }
             return chars.flatMap(([c, top], i) => (i && top > chars[i - 1][1] ? [chars[i - 1][0] + c] : []));
           }"""
    )
    assert breaks, "the address fits on one line: the test shows nothing"
    assert all(pair[0] in "@-" or pair[1] == "." for pair in breaks), breaks
