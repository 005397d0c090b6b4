"""Errors that carry a user-facing message, a CLI exit code and an HTTP status.

Anything raised as a `StockadeError` is shown as one clear line (CLI) or a JSON error
(API); anything else is a bug.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "Conflict",
    "IllegalTransition",
    "InvalidInput",
    "NotFound",
    "PermissionDenied",
    "StockadeError",
    "StorageUnavailable",
    "TamperDetected",
]


class StockadeError(Exception):
    """Base of every expected failure."""

    code = "error"
    http_status = 400
    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(StockadeError):
    code = "invalid_input"
    http_status = 422


class NotFound(StockadeError):
    code = "not_found"
    http_status = 404


class Conflict(StockadeError):
    code = "conflict"
    http_status = 409


class IllegalTransition(Conflict):
    code = "illegal_transition"


class AuthError(StockadeError):
    code = "unauthorized"
    http_status = 401


class PermissionDenied(StockadeError):
    code = "forbidden"
    http_status = 403


class ConfigError(StockadeError):
    code = "config_error"
    http_status = 503


class StorageUnavailable(StockadeError):
    """The database is missing, locked, unreachable or not migrated."""

    code = "storage_unavailable"
    http_status = 503


class TamperDetected(StockadeError):
    """An integrity check failed: the audit log or a signed object was altered."""

    code = "tamper_detected"
    http_status = 409
    exit_code = 1
