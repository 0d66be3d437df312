"""Provenance as MRML node attributes, so that it is saved with the scene and shown in the Data module.

Each key becomes an attribute ``XAIExplainer.<key>`` (strings as-is, other values as JSON) and the whole record
is also kept as JSON in ``XAIExplainer.provenance`` so it can be read back exactly.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

__all__ = ["ATTRIBUTE_PREFIX", "get_provenance", "provenance_attributes", "set_provenance"]

ATTRIBUTE_PREFIX = "XAIExplainer."


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def provenance_attributes(provenance: Mapping[str, Any], **extra: Any) -> dict[str, str]:
    """The attribute name -> text pairs that :func:`set_provenance` writes (for nodes that are redrawn later)."""
    record = {**dict(provenance), **extra}
    attributes = {ATTRIBUTE_PREFIX + str(key): _as_text(value) for key, value in record.items()}
    attributes[ATTRIBUTE_PREFIX + "provenance"] = json.dumps(record, sort_keys=True, default=str)
    return attributes


def set_provenance(node: Any, provenance: Mapping[str, Any], **extra: Any) -> Any:
    """Attach method, parameters, seed, model (and anything else given) to ``node`` as attributes."""
    for key, value in provenance_attributes(provenance, **extra).items():
        node.SetAttribute(key, value)
    return node


def get_provenance(node: Any) -> dict[str, Any]:
    """The record stored by :func:`set_provenance` (empty when the node carries none)."""
    text = node.GetAttribute(ATTRIBUTE_PREFIX + "provenance")
    return json.loads(text) if text else {}
