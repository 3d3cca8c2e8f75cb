"""The one error the sandbox's account raises: an answer other than success."""

from __future__ import annotations


class ApiError(Exception):
    """An answer other than success: the HTTP status and a message for Encharge's error envelope."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
