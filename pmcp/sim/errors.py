"""The errors the simulated API answers with, in Proxmox VE's shape and wording."""

from __future__ import annotations


class ApiError(Exception):
    """An HTTP error response: ``{"data": null, "message": ..., "errors": ...}``.

    ``reason`` is the HTTP reason phrase; PVE puts the message there too, and clients such as
    proxmoxer show it.
    """

    def __init__(
        self, status: int, message: str, errors: dict[str, str] | None = None, empty: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message if message.endswith("\n") else message + "\n"
        self.errors = errors
        self.empty = empty  # no body at all, the message only in the status line

    @property
    def reason(self) -> str:
        return self.message.strip().splitlines()[0] if self.message.strip() else "error"

    def body(self) -> dict:
        out: dict = {"data": None, "message": self.message}
        if self.errors is not None:
            out["errors"] = self.errors
        return out


def auth_error(message: str = "Authentication failed!") -> ApiError:
    """A failed login (token or ticket): pve-http-server APIServer/AnyEvent.pm answers
    ``HTTP::Response->new(HTTP_UNAUTHORIZED, $err)`` -- the message is the reason phrase and the
    body is empty (real hosts also wait 3 s; the simulator does not)."""
    return ApiError(401, message, empty=True)


def param_error(errors: dict[str, str]) -> ApiError:
    return ApiError(400, "Parameter verification failed.", errors)


def perm_error(desc: str | None = None) -> ApiError:
    return ApiError(403, f"Permission check failed ({desc})" if desc else "Permission check failed")


def not_found(message: str) -> ApiError:
    """PVE reports most missing objects as 500 with a sentence, not as 404."""
    return ApiError(500, message)


class TaskFailed(Exception):
    """Raised by a task's effect: the task ends with this message as its exit status (after
    ``lines``, the log the effect wrote before it failed)."""

    def __init__(self, message: str, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.lines = list(lines or [])
