"""JSON for the CNI plugin's start-up path: the C codec of the stdlib's
``json`` package, without the modules ``json`` imports (``re`` and ``enum``
cost about 5 ms of a 15 ms plugin start, and every pod waits for it).
Same output as ``json.dumps(obj)``; ``loads`` accepts what ``json.loads``
accepts, and malformed input gets ``json.loads``'s own error (a ``ValueError``).
"""

from __future__ import annotations

import _json

_WHITESPACE = " \t\n\r"


class _DecoderSettings:
    """What the C scanner reads from a ``json.JSONDecoder``: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity


def _unserializable(obj: object) -> None:
    raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")


_scan = _json.make_scanner(_DecoderSettings())
_encode = _json.make_encoder(None, _unserializable, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)


def loads(text: str) -> object:
    try:
        value, end = _scan(text, len(text) - len(text.lstrip(_WHITESPACE)))
        if not text[end:].strip(_WHITESPACE):
            return value
    except Exception:  # the C scanner reports errors through json.decoder, which is not imported
        pass
    import json  # malformed input only: the stdlib says what is wrong, and where

    return json.loads(text)


def dumps(obj: object) -> str:
    return "".join(_encode(obj, 0))
