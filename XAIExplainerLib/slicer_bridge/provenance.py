"""Provenance as MRML node attributes, so that it is saved with the scene and shown in the Data module.

Each key becomes an attribute ``XAIExplainer.<key>`` (strings as-is, other values as JSON) and the whole record
is also kept as JSON in ``XAIExplainer.provenance`` so it can be read back exactly.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

__all__ = ["ATTRIBUTE_PREFIX", "get_provenance", "set_provenance"]

ATTRIBUTE_PREFIX = "XAIExplainer."


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def set_provenance(node: Any, provenance: Mapping[str, Any], **extra: Any) -> Any:
    """Attach method, parameters, seed, model (and anything else given) to ``node`` as attributes."""
    record = {**dict(provenance), **extra}
    for key, value in record.items():
        node.SetAttribute(ATTRIBUTE_PREFIX + str(key), _as_text(value))
    node.SetAttribute(ATTRIBUTE_PREFIX + "provenance", json.dumps(record, sort_keys=True, default=str))
    return node


def get_provenance(node: Any) -> dict[str, Any]:
    """The record stored by :func:`set_provenance` (empty when the node carries none)."""
    text = node.GetAttribute(ATTRIBUTE_PREFIX + "provenance")
    return json.loads(text) if text else {}
