"""The one exception tree of sdserve.

Engine and service raise these; ``sdserve.api.errors`` renders each in every dialect's own
error shape. Nothing below the API layer knows about HTTP, but each class carries the
status a web layer should use, so the mapping lives in one place per dialect.

    SdserveError
    ├── BadInput              caller's field is wrong (400); ``field`` names it
    │   └── PayloadTooLarge   body or image over a size limit (413)
    ├── UnknownModel          no such model id or alias (400/404 by dialect)
    ├── Unauthorized          missing or wrong API key (401)
    ├── NotFound              no such job or output for this caller (404)
    ├── RateLimited           too many requests for this key (429, Retry-After)
    ├── InsufficientCredits   the key's image quota is spent (402)
    ├── QueueFull             the server is saturated (503, Retry-After)
    ├── ModelUnavailable      the model is known but its weights are not here (503)
    ├── Canceled              the job was canceled before it finished (499-ish; 409)
    ├── GenerationFailed      the engine failed on valid input (500)
    └── Interrupted           the run was cut off by a failure outside the job (a model
                              replica died); the service queues the job again
"""

from __future__ import annotations

__all__ = [
    "SdserveError",
    "BadInput",
    "PayloadTooLarge",
    "UnknownModel",
    "Unauthorized",
    "NotFound",
    "RateLimited",
    "InsufficientCredits",
    "QueueFull",
    "ModelUnavailable",
    "Canceled",
    "GenerationFailed",
    "Interrupted",
]


class SdserveError(Exception):
    """Base of every error sdserve raises on purpose."""

    status: int = 500
    kind: str = "server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(SdserveError):
    """A request field is malformed, missing or out of range."""

    status = 400
    kind = "invalid_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.detail = message

    def renamed(self, names: dict[str, str]) -> BadInput:
        """This error with its field given a dialect's name (engine ``guidance`` -> A1111
        ``cfg_scale``); same class and status. Unchanged when ``names`` has no entry."""
        new = names.get(self.field)
        if new is None:
            return self
        out = type(self)(new, self.detail)
        out.status = self.status
        return out


class PayloadTooLarge(BadInput):
    """The body, or an image in it, exceeds a configured limit."""

    status = 413
    kind = "request_too_large"


class UnknownModel(SdserveError):
    """The model id is neither in the catalog nor an alias of an entry."""

    status = 400
    kind = "model_not_found"

    def __init__(self, model: str, known: list[str] | None = None) -> None:
        hint = f"; known models: {', '.join(known)}" if known else ""
        super().__init__(f"No such model {model}{hint}")
        self.model = model


class Unauthorized(SdserveError):
    """No API key, or one that is unknown or revoked."""

    status = 401
    kind = "authentication_error"


class NotFound(SdserveError):
    """The job or output does not exist, or belongs to another key."""

    status = 404
    kind = "not_found"


class RateLimited(SdserveError):
    """The key sent more requests than its rate limit allows."""

    status = 429
    kind = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InsufficientCredits(SdserveError):
    """The key's image quota is used up."""

    status = 402
    kind = "insufficient_credits"


class QueueFull(SdserveError):
    """The job queue is at capacity; the caller should retry later."""

    status = 503
    kind = "server_overloaded"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelUnavailable(SdserveError):
    """The model is in the catalog but its weights are not on this machine."""

    status = 503
    kind = "model_unavailable"


class Canceled(SdserveError):
    """The job was canceled (by its owner, or because its client went away)."""

    status = 409
    kind = "canceled"


class GenerationFailed(SdserveError):
    """The engine failed on input that was valid; the server's fault, not the caller's."""

    status = 500
    kind = "server_error"


class Interrupted(SdserveError):
    """The run stopped through no fault of the job: the process running it (a Ray model
    replica) died or became unreachable. The service puts the job back in line, within its
    ``max_attempts``; callers only ever see it as a failure once attempts are spent."""

    status = 503
    kind = "server_error"
