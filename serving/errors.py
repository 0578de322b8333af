"""API errors and their JSON shapes: 422 naming the field, 404 with search suggestions."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


class FieldError(Exception):
    """Invalid input found by a handler: 422 `{"detail": [{"field", "message"}]}`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TitleNotFound(Exception):
    """404 for one title reference, with search suggestions for it."""

    def __init__(self, ref: str, suggestions: list[dict[str, Any]]) -> None:
        super().__init__(f"unknown title {ref!r}")
        self.suggestions = suggestions


class UnknownTitles(Exception):
    """404 for the unknown references of a request body: `[{"field", "ref", "suggestions"}]`."""

    def __init__(self, unknown: list[dict[str, Any]]) -> None:
        refs = ", ".join(repr(u["ref"]) for u in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        super().__init__(f"unknown title(s): {refs}{more}")
        self.unknown = unknown


def _field(loc: tuple[Any, ...]) -> str:
    parts = list(loc[1:] if loc and loc[0] in _LOCATIONS else loc)
    if loc and loc[0] == "body" and parts and isinstance(parts[0], int):
        parts = []  # a JSON decode error's position in the body
    return ".".join(str(p) for p in parts) or (str(loc[0]) if loc else "request")


def _message(error: dict[str, Any], field: str) -> str:
    msg = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if error.get("type") == "json_invalid":
        msg = f"invalid JSON: {(error.get('ctx') or {}).get('error', msg)}"
    return f"{field}: {msg}"


def field_problems(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for error in errors:
        field = _field(tuple(error.get("loc", ())))
        out.append({"field": field, "message": _message(error, field)})
    return out


def _validation_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": field_problems(list(exc.errors()))}, status_code=422)


def _field_error_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FieldError)
    problem = {"field": exc.field, "message": f"{exc.field}: {exc.message}"}
    return JSONResponse({"detail": [problem]}, status_code=422)


def _title_not_found_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TitleNotFound)
    return JSONResponse({"detail": str(exc), "suggestions": exc.suggestions}, status_code=404)


def _unknown_titles_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnknownTitles)
    return JSONResponse({"detail": str(exc), "unknown": exc.unknown}, status_code=404)


def install(app: FastAPI) -> None:
    """Register the handlers above on `app`."""
    app.add_exception_handler(RequestValidationError, _validation_response)
    app.add_exception_handler(FieldError, _field_error_response)
    app.add_exception_handler(TitleNotFound, _title_not_found_response)
    app.add_exception_handler(UnknownTitles, _unknown_titles_response)
