"""What the domain services raise when a request cannot be done, independent of
HTTP: `control.http.middleware` maps each to a status and an error type in one
table (`DOMAIN_ERRORS`)."""

from __future__ import annotations


class DomainError(Exception):
    """A request the domain refuses; `message` is safe to show the caller."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class NotFoundError(DomainError):
    """No such record (or one the caller may not know exists)."""

    def __init__(self, kind: str, record_id: str = "", *, message: str | None = None) -> None:
        default = f"No such {kind}: {record_id}" if record_id else f"No such {kind}"
        super().__init__(message or default)
        self.kind = kind
        self.record_id = record_id


class InvalidState(DomainError):
    """The record's state does not allow it (a finished room, a disabled stream)."""

    def __init__(self, message: str, *, error_type: str = "invalid_state") -> None:
        super().__init__(message)
        self.error_type = error_type


class Forbidden(DomainError):
    """Refused for the caller's credentials (a playback token): says nothing more."""

    def __init__(self) -> None:
        super().__init__("forbidden")


class InvalidInput(DomainError):
    """A value that passed the schema but not the domain's checks."""

    def __init__(
        self, message: str, *, param: str | None = None, error_type: str = "validation_error"
    ) -> None:
        super().__init__(message, param=param)
        self.error_type = error_type


class NotReady(DomainError):
    """Not yet: the same request later will likely work (`retry_after_s`)."""

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Busy(DomainError):
    """The node is at a capacity bound for this work (`retry_after_s`)."""

    def __init__(
        self, message: str, *, retry_after_s: int = 1, error_type: str = "service_unavailable"
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.error_type = error_type


class Refused(DomainError):
    """Content the domain will not take (an empty upload); `too_large` when its
    size is what is wrong."""

    def __init__(self, message: str, *, error_type: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.too_large = too_large
