"""JSON on the HTTP wire: strict parsing of request bodies, checked encoding of responses.

Request bodies are read as I-JSON (RFC 7493): UTF-8 text, no ``NaN``/``Infinity``, no number that
overflows a float (``1e999``), no lone surrogate (``"\\ud800"``), and nested at most
:data:`MAX_JSON_DEPTH` levels. Anything else is :class:`~motia_py.errors.InvalidJsonError` (a 400), so a
hostile body never reaches a handler, a backend or a log line that would choke on it later.

Responses are encoded with the same rules before they are sent; a handler's body, status or header
that cannot be sent is :class:`~motia_py.errors.InvalidResponseError` (a 500 with a trace id), and
never a connection closed without an answer.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from typing import Any

from .errors import InvalidJsonError, InvalidResponseError

MAX_JSON_DEPTH = 100
"""How deeply a request body may nest arrays and objects."""

_BIG_FLOAT = re.compile(r"[eE][+-]?[0-9]{3}|[0-9]{300}")  # only these can overflow a float
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP header name (RFC 9110 token)
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CR, LF, NUL and other controls (tab is allowed)


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def parse_json(raw: bytes) -> Any:
    """Parse a request body strictly (see the module docstring).

    Raises:
        InvalidJsonError: saying what is wrong.
    """
    try:
        text = raw.decode(json.detect_encoding(raw))
    except (UnicodeDecodeError, LookupError) as exc:
        raise InvalidJsonError(f"the body is not UTF-8 text: {exc}") from exc
    try:
        if _BIG_FLOAT.search(text):
            value = json.loads(text, parse_constant=_constant, parse_float=_float)
        else:
            value = json.loads(text, parse_constant=_constant)
    except RecursionError as exc:
        raise InvalidJsonError(f"the body is nested deeper than {MAX_JSON_DEPTH} levels") from exc
    except json.JSONDecodeError as exc:
        raise InvalidJsonError(str(exc)) from exc
    except ValueError as exc:  # NaN/Infinity, 1e999, or an int of more than sys.get_int_max_str_digits()
        message = str(exc)
        if "integer string conversion" in message:
            message = f"an integer has more than {sys.get_int_max_str_digits()} digits"
        raise InvalidJsonError(message) from exc
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:  # only then can it nest that deep
        _check_depth(value)
    if _ESCAPED_SURROGATE.search(text):
        _check_text(value)
    return value


def _check_depth(value: Any) -> None:
    """Refuse nesting past :data:`MAX_JSON_DEPTH` (validating, storing or echoing it could overflow)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidJsonError(f"the body is nested deeper than {MAX_JSON_DEPTH} levels")
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def _check_text(value: Any) -> None:
    """Refuse lone surrogates (``"\\ud800"``): they cannot be stored, logged or sent back as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                raise InvalidJsonError("the body holds a lone surrogate (an unpaired \\ud800-\\udfff escape)")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encode_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, with the rules of request bodies.

    Raises:
        InvalidResponseError: ``value`` is not JSON (a set, NaN, a lone surrogate, nested too deeply).
    """
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidResponseError(f"the response body is not JSON: {type(exc).__name__}: {exc}") from exc


def check_status(status: Any) -> int:
    """An HTTP status from a handler's ``{"status": ...}``: an integer from 200 to 599 (a 1xx is not a
    final response).

    Raises:
        InvalidResponseError: anything else.
    """
    if isinstance(status, bool) or not isinstance(status, int | str):
        raise InvalidResponseError(f"'status' must be an integer from 200 to 599, not {type(status).__name__}")
    text = status if isinstance(status, str) else ""
    code = status if isinstance(status, int) else int(text) if text.isascii() and text.strip().isdigit() else -1
    if not 200 <= code <= 599:
        raise InvalidResponseError(f"'status' must be an integer from 200 to 599, got {_short(status)}")
    return code


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits()
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."


_FRAMING = {"content-length", "transfer-encoding"}  # the server frames the body it sends


def check_headers(headers: Any) -> dict[str, str]:
    """A handler's ``headers``, as strings, refused when they could not be sent as they are.
    ``Content-Length`` and ``Transfer-Encoding`` are left out: the server sets them for the body it sends.

    Raises:
        InvalidResponseError: a name that is not an HTTP token, or a value with CR, LF or another control
            character (header injection) or a character outside latin-1.
    """
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise InvalidResponseError(f"'headers' must be a dict, not {type(headers).__name__}")
    out: dict[str, str] = {}
    for k, v in headers.items():
        name, value = str(k), str(v)
        if not _TOKEN.fullmatch(name):
            raise InvalidResponseError(f"response header name {name[:40]!r} is not a valid HTTP header name")
        if _BAD_VALUE.search(value):
            raise InvalidResponseError(f"response header '{name}' has a CR, LF or other control character in its "
                                       "value; it is refused (it could split the response)")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise InvalidResponseError(f"response header '{name}' has a character that HTTP headers cannot carry "
                                       f"(only latin-1): {value[:40]!r}; percent-encode it") from exc
        if name.lower() not in _FRAMING:
            out[name] = value
    return out
