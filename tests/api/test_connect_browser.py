"""The reconnect link from a received email, followed in a real headless Chromium: the sandbox's consent page,
a click on Allow, and grantkeeper's success page (saved as a screenshot under the run's artifacts)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest

from grantkeeper.sandbox import Sandbox
from grantkeeper.sandbox.server import SandboxServer
from tests.api.connect_support import ConnectRig, running_rig
from tests.fixtures.browser import artifacts_dir
from tests.fixtures.smtp import SmtpServer

_LINK = re.compile(r"https?://\S+/connect/con_[0-9a-f]+\?token=[A-Za-z0-9_%-]+")


@pytest.fixture
def mail_rig(
    database_url: str, key_line: str, sandbox: Sandbox, sandbox_server: SandboxServer, smtp_server: SmtpServer
) -> Iterator[ConnectRig]:
    smtp = {
        "smtp_host": smtp_server.host,
        "smtp_port": smtp_server.port,
        "smtp_security": "none",
        "email_from": "grantkeeper@example.test",
    }
    with running_rig(database_url, key_line, sandbox, sandbox_server, **smtp) as built:
        yield built


def _deliver_outbox(rig: ConnectRig) -> None:
    rig.clock.advance(timedelta(seconds=1))  # the outbox row is due a moment after the disconnection

    async def deliver() -> None:
        dispatcher = rig.runtime.dispatcher()
        assert dispatcher is not None
        try:
            report = await dispatcher.deliver_due()
            assert report.delivered >= 1, report
        finally:
            await dispatcher.close()

    asyncio.run(deliver())


def _reconnect_link_in_email(smtp_server: SmtpServer, recipient: str) -> str:
    [message] = [m for m in smtp_server.mailbox.messages if m["To"] == recipient]
    assert "disconnected" in str(message["Subject"]).lower()
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    links = _LINK.findall(body.get_content())
    assert links, body.get_content()
    return str(links[0])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_chromium_follows_the_emailed_reconnect_link_and_sees_the_success_page(
    mail_rig: ConnectRig, smtp_server: SmtpServer, chromium
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    rig = mail_rig
    rig.add_provider()
    connection_id = rig.broken_connection("ana", workflows=("daily-sync",))
    _deliver_outbox(rig)
    link = _reconnect_link_in_email(smtp_server, "ana@example.test")
    assert connection_id in link

    chromium.get(link)
    assert chromium.current_url.startswith(rig.server.authorize_url)
    heading = chromium.find_element(By.ID, "heading").text
    assert "wants access to your Sandbox account" in heading
    chromium.save_screenshot(str(artifacts_dir() / "reconnect-consent.png"))
    chromium.find_element(By.ID, "allow").click()

    # the click posts the consent and follows two redirects; a busy machine can still be on the way when
    # the next command comes, so wait for the success page instead of looking once (it failed once so)
    page = WebDriverWait(chromium, 30).until(
        expected_conditions.presence_of_element_located((By.ID, "connected"))
    )
    assert chromium.current_url.startswith(rig.base_url + "/oauth/callback")
    assert "sandbox reconnected" in page.text
    assert "daily-sync" in chromium.find_element(By.ID, "resumed-workflows").text
    shot = artifacts_dir() / "reconnect-success.png"
    chromium.save_screenshot(str(shot))
    assert shot.stat().st_size > 1000
    record = rig.connection(connection_id)
    assert record["status"] == "connected"
    assert record["consecutive_failures"] == 0
    assert {w["status"] for w in rig.acme.get("/v1/workflows").json()} == {"active"}
