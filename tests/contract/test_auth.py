"""Authentication with ``X-Blnk-Key`` and the shape of error bodies."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

    from .conftest import MakeClient, Target


def test_open_server_accepts_missing_key(
    open_target: Target, make_client: MakeClient
) -> None:
    http = make_client(open_target, None)

    response = http.get("/ledgers/general_ledger_id")

    assert response.status_code == 200


def test_open_server_ignores_unknown_key(
    open_target: Target, make_client: MakeClient
) -> None:
    http = make_client(open_target, "ct-not-a-key")

    response = http.get("/ledgers/general_ledger_id")

    assert response.status_code == 200


def test_root_probe_needs_no_key(
    secured_target: Target, make_client: MakeClient
) -> None:
    http = make_client(secured_target, None)

    response = http.get("/")

    assert response.status_code == 200
    assert response.json() == "server running..."


def test_secured_server_rejects_missing_key(
    secured_target: Target, make_client: MakeClient
) -> None:
    http = make_client(secured_target, None)

    response = http.get("/ledgers/general_ledger_id")

    assert response.status_code == 401
    # The code is new in Blnk v0.15. Older servers send only "error".
    assert response.json()["error_detail"]["code"] == "AUTH_MISSING_API_KEY"


def test_secured_server_rejects_wrong_key(
    secured_target: Target, make_client: MakeClient
) -> None:
    http = make_client(secured_target, "ct-wrong-key")

    response = http.get("/ledgers/general_ledger_id")

    assert response.status_code == 401
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "AUTH_INVALID_API_KEY"


def test_wrong_key_rejected_on_write(
    secured_target: Target, make_client: MakeClient
) -> None:
    http = make_client(secured_target, "ct-wrong-key")

    response = http.post("/ledgers", json={"name": "ct-unauthorised"})

    assert response.status_code == 401


def test_secured_server_accepts_master_key(
    secured_target: Target, make_client: MakeClient
) -> None:
    http = make_client(secured_target, secured_target.api_key)

    response = http.get("/ledgers/general_ledger_id")

    assert response.status_code == 200
    assert response.json()["ledger_id"] == "general_ledger_id"


def test_error_body_has_message_and_code(client: httpx.Client) -> None:
    response = client.get("/transactions/txn_00000000-0000-4000-8000-000000000000")
    body = response.json()

    assert response.status_code == 404
    assert isinstance(body["error"], str)
    assert body["error"] != ""
    # "error_detail" is new in Blnk v0.15. Older servers send only "error".
    assert body["error_detail"]["code"] == "TXN_NOT_FOUND"
    assert body["error_detail"]["message"] == body["error"]


def test_auth_error_body_shape(secured_target: Target, make_client: MakeClient) -> None:
    http = make_client(secured_target, None)

    body = http.get("/balances/bln_00000000-0000-4000-8000-000000000000").json()

    assert isinstance(body["error"], str)
    assert body["error_detail"]["message"] == body["error"]
