"""The one error every `recommend` client raises (REST, gRPC, in-process), whatever the transport."""

from __future__ import annotations


class ServingClientError(RuntimeError):
    """A non-OK answer: the HTTP status (REST) or canonical code name (gRPC, in-process: "INVALID_ARGUMENT")
    and the model server's error message."""

    def __init__(self, status: int | str, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
