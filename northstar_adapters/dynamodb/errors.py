"""How DynamoDB failures are classified: what may be retried, and whether a write may have applied.

Three outcomes matter to the retry loop:

* ``SAFE`` — the request certainly did not apply (throttled, transaction conflict, connection
  refused before sending): retrying any operation is safe.
* ``AMBIGUOUS`` — the request may or may not have applied (read timeout, connection dropped
  mid-flight, 5xx): reads are retried freely; writes are retried too, but the write loop then
  remembers that an earlier attempt may have landed (see ``DynamoItemStore.write``).
* ``FATAL`` — retrying cannot help (missing table, bad credentials, validation): surfaced now.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Final

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
)


class Outcome(enum.Enum):
    SAFE = "safe"
    AMBIGUOUS = "ambiguous"
    FATAL = "fatal"
    INVALID = "invalid"


THROTTLING_CODES: Final = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TransactionConflictException",
        "LimitExceededException",
    }
)
# Per-item codes inside TransactionCanceledException.CancellationReasons that mean "not applied,
# try again" (the whole transaction was cancelled, nothing of it was written).
RETRYABLE_CANCELLATION_CODES: Final = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
)
AMBIGUOUS_CODES: Final = frozenset(
    {"InternalServerError", "InternalFailure", "ServiceUnavailable", "TransactionInProgressException"}
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def cancellation_codes(exc: ClientError) -> list[str]:
    reasons = exc.response.get("CancellationReasons") or []
    return [str(reason.get("Code", "None")) for reason in reasons]


def condition_failure_index(exc: ClientError) -> int | None:
    """The index of the failing condition, 0 for a single-item write, ``None`` if not a condition."""
    code = error_code(exc)
    if code == "ConditionalCheckFailedException":
        return 0
    if code == "TransactionCanceledException":
        codes = cancellation_codes(exc)
        if "ConditionalCheckFailed" in codes:
            return codes.index("ConditionalCheckFailed")
    return None


def classify(exc: BaseException) -> Outcome:
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in THROTTLING_CODES:
            return Outcome.SAFE
        if code == "TransactionCanceledException":
            codes = {c for c in cancellation_codes(exc) if c != "None"}
            if codes and codes <= RETRYABLE_CANCELLATION_CODES:
                return Outcome.SAFE
            if "ValidationError" in codes:
                return Outcome.INVALID
            return Outcome.FATAL
        if code in AMBIGUOUS_CODES or status >= 500:
            return Outcome.AMBIGUOUS
        if code == "ValidationException":
            return Outcome.INVALID
        return Outcome.FATAL
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        return Outcome.SAFE  # never reached the service
    if isinstance(exc, (NoCredentialsError, NoRegionError)):
        return Outcome.FATAL
    if isinstance(exc, ParamValidationError):
        return Outcome.INVALID
    if isinstance(exc, (HTTPClientError, BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError, OSError)):
        return Outcome.AMBIGUOUS  # read timeout, connection dropped mid-request
    return Outcome.FATAL


# Everything the SDK stack raises for a failed call (aiobotocore mostly wraps aiohttp's errors
# into botocore's, but not all of them).
TRANSPORT_ERRORS: Final = (ClientError, BotoCoreError, aiohttp.ClientError, OSError)


def describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        message = exc.response.get("Error", {}).get("Message", "")
        return f"{error_code(exc)}: {message}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"
