"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

Views raise `ApiError`; `error_response` turns it into the JSON body with the
right status (and Retry-After on 429), so the official clients parse it.
"""

from __future__ import annotations

from django.http import JsonResponse

# OpenAI's error "type" per status (clients read the status; the type is a hint).
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """A rejected request: nothing has been written when this is raised."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(self.status, "api_error"),
                "param": self.param,
                "code": self.code,
            }
        }


def error_response(error: ApiError) -> JsonResponse:
    response = JsonResponse(error.to_dict(), status=error.status)
    if error.retry_after is not None:
        response["Retry-After"] = str(error.retry_after)
    if error.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="guardweb"'
    return response
