"""The project's exceptions: one root, one subclass per kind a user must tell apart."""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error pollbridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration is invalid; ``where`` names the file, entry and field."""

    def __init__(self, message: str, *, file: str | None = None, where: str | None = None):
        self.file = file
        self.where = where
        self.reason = message
        parts = []
        if file:
            parts.append(str(file))
        if where:
            parts.append(where)
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class PollError(BridgeError):
    """A poll failed; it never means "zero items" and never produces events."""

    def __init__(
        self,
        source: str,
        cause: str,
        *,
        url: str | None = None,
        status: int | None = None,
        retry_after_s: float | None = None,
    ):
        self.source = source
        self.cause = cause
        self.url = url
        self.status = status
        self.retry_after_s = retry_after_s
        where = f"source {source!r}"
        if url:
            where += f" ({url})"
        super().__init__(f"poll of {where} failed: {cause}")


class ExtractError(PollError):
    """The response was fetched but its items or keys could not be extracted."""


class StoreError(BridgeError):
    """The state store could not be read or written; nothing was half-written."""

    def __init__(self, operation: str, cause: str, *, location: str | None = None):
        self.operation = operation
        self.cause = cause
        self.location = location
        at = f" ({location})" if location else ""
        super().__init__(f"state store{at}: {operation} failed: {cause}")


class DeliveryError(BridgeError):
    """One delivery attempt failed; ``retryable`` says whether trying again can help."""

    def __init__(
        self,
        listener: str,
        cause: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        retry_after_s: float | None = None,
        response_excerpt: str | None = None,
    ):
        self.listener = listener
        self.cause = cause
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.response_excerpt = response_excerpt
        super().__init__(f"delivery to listener {listener!r} failed: {cause}")


class NoStateError(StoreError):
    """There is no state yet (the daemon never ran): read-only commands say so and exit 0."""

    def __init__(self, location: str, cause: str = "no state yet (the daemon has not run)"):
        super().__init__("open", cause, location=location)


class UsageError(BridgeError):
    """The command line asks for something impossible (the CLI exits 64, EX_USAGE)."""


class StaleSnapshot(StoreError):
    """The snapshot changed since the diff was computed (another writer); poll again."""

    def __init__(self, source: str, cause: str):
        self.source = source
        super().__init__("commit_poll", cause)

    def __str__(self) -> str:
        return self.cause


class LeaseLost(StaleSnapshot):
    """The poll's source lease passed to another instance; its commit was refused (fencing)."""
