"""Ledgers: create, fetch, the general ledger and unknown ids."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

    from .conftest import Blnk


def test_ledger_create_returns_ledger(client: httpx.Client, blnk: Blnk) -> None:
    name = blnk.reference("ledger")

    response = client.post("/ledgers", json={"name": name, "meta_data": {"k": "v"}})
    ledger = response.json()

    assert response.status_code == 201
    assert ledger["ledger_id"].startswith("ldg_")
    assert ledger["name"] == name
    assert ledger["meta_data"] == {"k": "v"}
    assert isinstance(ledger["created_at"], str)


def test_ledger_get_returns_created(client: httpx.Client, blnk: Blnk) -> None:
    name = blnk.reference("ledger")
    created = client.post("/ledgers", json={"name": name}).json()

    response = client.get(f"/ledgers/{created['ledger_id']}")

    assert response.status_code == 200
    assert response.json()["ledger_id"] == created["ledger_id"]
    assert response.json()["name"] == name


def test_ledger_names_are_not_unique(client: httpx.Client, blnk: Blnk) -> None:
    name = blnk.reference("ledger")

    first = client.post("/ledgers", json={"name": name})
    second = client.post("/ledgers", json={"name": name})

    assert first.status_code == 201
    assert second.status_code == 201
    assert first.json()["ledger_id"] != second.json()["ledger_id"]


def test_ledger_get_unknown_is_404(client: httpx.Client) -> None:
    response = client.get("/ledgers/ldg_00000000-0000-4000-8000-000000000000")

    assert response.status_code == 404
    # The code is new in Blnk v0.15.
    assert response.json()["error_detail"]["code"] == "LGR_NOT_FOUND"


def test_ledger_without_name_rejected(client: httpx.Client) -> None:
    response = client.post("/ledgers", json={"meta_data": {}})

    assert response.status_code == 400
    # The code is new in Blnk v0.15, which still names the message key "errors"
    # on this endpoint, where other errors use "error".
    assert response.json()["error_detail"]["code"] == "GEN_VALIDATION_ERROR"
    assert isinstance(response.json()["errors"], str)


def test_general_ledger_always_exists(client: httpx.Client) -> None:
    response = client.get("/ledgers/general_ledger_id")

    assert response.status_code == 200
    assert response.json()["ledger_id"] == "general_ledger_id"
    assert response.json()["name"] == "General Ledger"
