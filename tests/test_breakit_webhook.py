"""Break-it review (issue #10 rules 8 and 9, the webhook endpoint): an unsigned request is a 401, never a 500.

The SDK's ``verify_header`` divides the header's timestamp by 1000 as a float before it checks anything else: a
timestamp of a few hundred digits raises ``OverflowError``, which the endpoint does not catch (it catches
``ValueError``, ``TypeError`` and ``IndexError``). Anyone on the internet gets a 500 and a traceback in the logs.
"""

from __future__ import annotations

import pytest
from flask import Flask


@pytest.mark.parametrize("digits", [330, 400, 1000])
def test_an_absurd_signature_timestamp_is_a_401(app: Flask, digits: int) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    header = f"t={'9' * digits}, v1={'0' * 64}"
    response = app.test_client().post("/webhooks/workos", data=b'{"id":"event_x","event":"dsync.user.created"}',
                                      headers={"WorkOS-Signature": header, "Content-Type": "application/json"})
    assert response.status_code == 401, (response.status_code, response.get_data(as_text=True)[:200])
