"""Request bodies read the way Blnk's Go handlers bind and validate them.

Go's JSON binding rejects a value of the wrong JSON type, such as a quoted
``precise_amount`` or a string where a bool belongs, before any validation
runs. ozzo-validation then reports one message per field, sorted by field
name. Both steps are reproduced here so that clients get Blnk's errors.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from ._apierror import ApiError
from ._records import Txn, format_major, major_amount
from ._store import INT64_MAX, format_time, new_id, parse_rfc3339

__all__ = [
    "MAX_BODY_BYTES",
    "BindError",
    "TxnRequest",
    "bind",
    "build_txn",
    "decimal_from_float",
    "describe_int",
    "minor_from_float",
    "parse_json",
    "read_txn_request",
    "validate_txn_request",
]

BULK_ITEM_LIMIT = 10_000
"""Blnk's maximum number of transactions in one bulk request."""

MAX_BODY_BYTES = 5 * 1024 * 1024
"""Blnk's default limit on a request body (``MaxRequestBodySizeMB`` is 5)."""

_FLOAT_DIGITS = 800
"""Decimal precision that represents any float64 times any int64 exactly."""

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

_TXN_SPEC = {
    "amount": "float",
    "precision": "float",
    "overdraft_limit": "float",
    "precise_amount": "bigint",
    "allow_overdraft": "bool",
    "inflight": "bool",
    "skip_queue": "bool",
    "atomic": "bool",
    "source": "str",
    "reference": "str",
    "destination": "str",
    "description": "str",
    "currency": "str",
    "balance_id": "str",
    "scheduled_for": "str",
    "inflight_expiry_date": "str",
    "inflight_commit_date": "str",
    "sources": "list",
    "destinations": "list",
    "meta_data": "object",
    "effective_date": "time",
    "dry_run": "bool",
}

_GO_TYPES = {
    "float": "float64",
    "bigint": "*big.Int",
    "int": "int",
    "bool": "bool",
    "str": "string",
    "list": "[]",
    "object": "map[string]interface {}",
    "time": "time.Time",
}

_DATE_FORMAT_MESSAGE = (
    "please format the scheduled date as 'YYYY-MM-DDTHH:MM:SS+00:00'"
    " (e.g., 2024-04-22T15:28:03+00:00)"
)


class BindError(ValueError):
    """A body that Go's JSON binding would reject; the message gives the reason."""


def _reject_constant(name: str) -> Any:
    raise BindError(f"invalid character {name[0]!r} looking for beginning of value")


def parse_json(body: bytes) -> Any:
    """Decode a JSON body, rejecting what Go's decoder rejects.

    A lone UTF-16 surrogate escape becomes U+FFFD, as in Go.

    Raises:
        BindError: the body is empty, larger than :data:`MAX_BODY_BYTES`,
            not UTF-8, not JSON or nested too deeply.
    """
    if len(body) > MAX_BODY_BYTES:
        raise BindError("http: request body too large")
    if not body.strip():
        raise BindError("EOF")
    try:
        text = body.decode("utf-8")
        document = json.loads(
            text, parse_constant=_reject_constant, parse_int=_parse_int
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BindError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise BindError("exceeded max depth") from None
    if "\\u" in text:
        try:
            document = _replace_lone_surrogates(document)
        except RecursionError:
            raise BindError("exceeded max depth") from None
    return document


def _parse_int(text: str) -> int:
    # Python refuses to convert more than 4300 digits. Such a number is far
    # outside every range the ledger accepts, so a stand-in of the same sign
    # gets the same rejection.
    if len(text) > 1000:
        huge = 10**1000
        return -huge if text.startswith("-") else huge
    return int(text)


def _replace_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {
            _replace_lone_surrogates(key): _replace_lone_surrogates(item)
            for key, item in value.items()
        }
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _convert(value: Any, kind: str, where: str) -> Any:
    def mismatch() -> BindError:
        go_type = _GO_TYPES.get(kind, kind)
        return BindError(
            f"json: cannot unmarshal {_json_type(value)} into Go struct field"
            f" {where} of type {go_type}"
        )

    if kind == "any":
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise mismatch()
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise mismatch()
        return value
    if kind in ("bigint", "int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise mismatch()
        if kind == "int" and abs(value) > INT64_MAX:
            raise mismatch()
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise mismatch()
        try:
            number = float(value)
        except OverflowError:
            raise mismatch() from None
        if not math.isfinite(number):
            raise mismatch()
        return number
    if kind == "list":
        if not isinstance(value, list):
            raise mismatch()
        return value
    if kind == "object":
        if not isinstance(value, dict):
            raise mismatch()
        return value
    if kind == "time":
        moment = parse_rfc3339(value) if isinstance(value, str) else None
        if moment is None:
            raise BindError(f"parsing time {json.dumps(value)} as RFC 3339 failed")
        return moment
    raise AssertionError(kind)


def bind(obj: Any, spec: dict[str, str], struct: str) -> dict[str, Any]:
    """Read the fields of ``spec`` from a decoded JSON object.

    Missing fields and JSON ``null`` become ``None``; unknown fields are
    ignored, as Go does.

    Raises:
        BindError: the value is not an object or a field has the wrong type.
    """
    if not isinstance(obj, dict):
        raise BindError(
            f"json: cannot unmarshal {_json_type(obj)} into Go value of type {struct}"
        )
    bound: dict[str, Any] = {}
    for name, kind in spec.items():
        value = obj.get(name)
        bound[name] = (
            None if value is None else _convert(value, kind, f"{struct}.{name}")
        )
    return bound


@dataclass
class TxnRequest:
    """A bound ``POST /transactions`` body (or one bulk item)."""

    amount: float
    precision: float
    overdraft_limit: float
    precise_amount: int | None
    allow_overdraft: bool
    inflight: bool
    skip_queue: bool
    atomic: bool
    source: str
    reference: str
    destination: str
    description: str
    currency: str
    scheduled_for: str
    inflight_expiry_date: str
    inflight_commit_date: str
    has_splits: bool
    meta_data: dict[str, Any]
    effective_date: datetime | None
    dry_run: bool


def read_txn_request(obj: Any) -> TxnRequest:
    """Bind one transaction body.

    Raises:
        BindError: a field has the wrong JSON type.
    """
    raw = bind(obj, _TXN_SPEC, "RecordTransaction")
    return TxnRequest(
        amount=raw["amount"] or 0.0,
        precision=raw["precision"] or 0.0,
        overdraft_limit=raw["overdraft_limit"] or 0.0,
        precise_amount=raw["precise_amount"],
        allow_overdraft=bool(raw["allow_overdraft"]),
        inflight=bool(raw["inflight"]),
        skip_queue=bool(raw["skip_queue"]),
        atomic=bool(raw["atomic"]),
        source=raw["source"] or "",
        reference=raw["reference"] or "",
        destination=raw["destination"] or "",
        description=raw["description"] or "",
        currency=raw["currency"] or "",
        scheduled_for=raw["scheduled_for"] or "",
        inflight_expiry_date=raw["inflight_expiry_date"] or "",
        inflight_commit_date=raw["inflight_commit_date"] or "",
        has_splits=bool(raw["sources"]) or bool(raw["destinations"]),
        meta_data=dict(raw["meta_data"] or {}),
        effective_date=raw["effective_date"],
        dry_run=bool(raw["dry_run"]),
    )


def decimal_from_float(number: float) -> Decimal:
    """Return a float's shortest decimal form, as Go's ``FormatFloat(x, 'f', -1)``."""
    value = Decimal(repr(number))
    with localcontext() as context:
        context.prec = _FLOAT_DIGITS
        if value == value.to_integral_value():
            return value.quantize(Decimal(1))
        return value.normalize()


def minor_from_float(amount: float, precision: int) -> int:
    """Scale a major-unit float by ``precision``, rounding half away from zero.

    Blnk does this in decimal, so the result is exact for every float.
    """
    with localcontext() as context:
        context.prec = _FLOAT_DIGITS
        scaled = decimal_from_float(amount) * Decimal(precision)
        return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def describe_int(value: int) -> str:
    """Return ``value`` for a message, or its size when it is too long to show."""
    if value.bit_length() <= 128:
        return repr(value)
    return f"a {value.bit_length()}-bit number"


def _amount_error(request: TxnRequest) -> str | None:
    if request.amount != 0 and request.precise_amount is not None:
        return "either amount or precise_amount should be provided, not both"
    if request.amount == 0 and request.precise_amount is None:
        return "either amount or precise_amount is required"
    if request.amount != 0:
        digits = format_major(decimal_from_float(request.amount))
        if len(digits.replace(".", "", 1).lstrip("0")) > 15:
            return (
                "amount has more than 15 significant digits which may cause"
                " rounding errors; use precise_amount instead"
            )
    if request.amount < 0:
        return "amount cannot be negative"
    if request.precise_amount is not None and request.precise_amount < 0:
        return "precise_amount cannot be negative"
    return None


def _field_errors(request: TxnRequest) -> dict[str, str]:
    errors: dict[str, str] = {}
    amount_error = _amount_error(request)
    if amount_error:
        errors["amount"] = amount_error
    if request.precision != math.trunc(request.precision):
        errors["precision"] = "precision must be an integer value"
    elif request.precision < 0:
        errors["precision"] = "precision cannot be negative"
    for name in ("currency", "reference", "description"):
        if not getattr(request, name):
            errors[name] = "cannot be blank"
    if not request.source and not request.has_splits:
        errors["source"] = "either source or sources is required, not both"
    if not request.destination and not request.has_splits:
        errors["destination"] = (
            "either destination or destinations is required, not both"
        )
    elif request.source and request.source == request.destination:
        errors["destination"] = "source and destination cannot be the same balance"
    for name in ("scheduled_for", "inflight_expiry_date", "inflight_commit_date"):
        text = getattr(request, name)
        if text and parse_rfc3339(text) is None:
            errors[name] = _DATE_FORMAT_MESSAGE
    return errors


def validate_txn_request(request: TxnRequest, *, prefix: str = "") -> ApiError | None:
    """Return the error Blnk returns for an invalid transaction, or ``None``.

    Args:
        request: the bound body.
        prefix: ``"transactions[i]: "`` for a bulk item, which also changes
            the code of a fractional precision to ``TXN_VALIDATION_ERROR``
            and adds the item's index to the details, as Blnk does.
    """
    errors = _field_errors(request)
    if not errors:
        if request.has_splits:
            return ApiError(
                "GEN_BAD_REQUEST",
                f"{prefix}split transactions (sources/destinations) are not"
                " supported by the embedded ledger; send one transaction per leg",
            )
        return None
    if not prefix and errors.get("precision") == "precision must be an integer value":
        return ApiError("TXN_PRECISION_NOT_INTEGER", errors["precision"])
    message = "; ".join(f"{name}: {errors[name]}" for name in sorted(errors)) + "."
    return ApiError("TXN_VALIDATION_ERROR", prefix + message, legacy_key="errors")


def _check_int64(name: str, value: int) -> None:
    if value > INT64_MAX:
        raise ApiError(
            "TXN_INVALID_AMOUNT",
            f"{name} {describe_int(value)} does not fit in a signed 64-bit integer, the"
            f" largest amount the ledger stores ({INT64_MAX}); use a smaller"
            " precision or split the amount",
        )


def build_txn(request: TxnRequest, now: str) -> Txn:
    """Build the transaction Blnk would create from a validated request.

    Precision 0 becomes 1. ``precise_amount`` wins when positive; otherwise
    ``amount`` is scaled by the precision in decimal and rounded half away
    from zero, as Blnk does.

    Raises:
        ApiError: the precision or the amount does not fit in 64 bits.
    """
    precision = int(request.precision) or 1
    _check_int64("precision", precision)
    amount_string = None
    if request.precise_amount is not None and request.precise_amount > 0:
        precise = request.precise_amount
        amount = major_amount(precise, precision)
        amount_string = format_major(amount)
    else:
        amount = decimal_from_float(request.amount)
        precise = minor_from_float(request.amount, precision)
    _check_int64("precise_amount", precise)
    txn = Txn(
        transaction_id=new_id("txn"),
        source=request.source,
        destination=request.destination,
        reference=request.reference,
        precise_amount=precise,
        precision=precision,
        amount=amount,
        amount_string=amount_string,
        overdraft_limit=request.overdraft_limit,
        currency=request.currency,
        description=request.description,
        status="SCHEDULED" if request.scheduled_for else "QUEUED",
        allow_overdraft=request.allow_overdraft,
        inflight=request.inflight,
        skip_queue=request.skip_queue,
        atomic=request.atomic,
        created_at=now,
        effective_date=_time_or_none(request.effective_date) or now,
        scheduled_for=_parse_or_none(request.scheduled_for),
        inflight_expiry_date=_parse_or_none(request.inflight_expiry_date),
        inflight_commit_date=_parse_or_none(request.inflight_commit_date),
        meta_data=dict(request.meta_data),
    )
    set_flag_metadata(txn)
    txn.hash = txn.compute_hash()
    return txn


def set_flag_metadata(txn: Txn) -> None:
    """Copy the inflight, atomic and allow_overdraft flags into meta_data."""
    if txn.inflight:
        txn.meta_data["inflight"] = True
    if txn.atomic:
        txn.meta_data["atomic"] = True
    if txn.allow_overdraft:
        txn.meta_data["allow_overdraft"] = True


def _time_or_none(moment: datetime | None) -> str | None:
    return format_time(moment) if moment is not None else None


def _parse_or_none(text: str) -> str | None:
    return _time_or_none(parse_rfc3339(text)) if text else None
