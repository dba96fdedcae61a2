"""JSON in and out of the service: orjson when installed (several times faster), else json.

Both spell values the same way the rest of the service expects: datetimes as their
``str()`` (``2011-01-01 00:00:00+00:00``), numpy scalars as numbers, anything else
unknown as its ``str()``. One difference stays: a NaN becomes ``null`` with orjson
(valid JSON) and ``NaN`` with json.

What orjson cannot write (integers beyond 64 bits, e.g. a label of 2**65 that
BentoML's parser handed over; lone surrogates) is written by json instead, so a
hostile value never fails a response or a prediction-log commit.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - the fallback is exercised only without orjson
    orjson = None  # type: ignore[assignment]


def dumps(value: Any) -> bytes:
    """`value` as UTF-8 JSON bytes."""
    if orjson is not None:
        try:
            return orjson.dumps(value, default=str, option=_OPTIONS)
        except TypeError:  # beyond 64-bit integers, lone surrogates
            pass
    return json.dumps(value, default=str, separators=(",", ":")).encode()


def dumps_text(value: Any) -> str:
    """`value` as a JSON string."""
    text = dumps_text_fast(value)
    return json.dumps(value, default=str, separators=(",", ":")) if text is None else text


def dumps_text_fast(value: Any) -> str | None:
    """`value` as a JSON string written by orjson; None without orjson or when orjson
    cannot write it (beyond 64-bit integers, lone surrogates: `dumps_text` then falls
    back to json)."""
    if orjson is None:
        return None
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS).decode()
    except TypeError:
        return None


def loads(data: bytes | str) -> Any:
    """Parse JSON (raises ValueError on invalid input, like json.loads)."""
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)


_OPTIONS = 0
if orjson is not None:
    _OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_DATETIME
