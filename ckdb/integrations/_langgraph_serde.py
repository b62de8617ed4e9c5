"""The LangGraph saver's rule for serializers: never one that can fall back to pickle.

Kept apart from ``ckdb.tables.langgraph_layout`` so that the key layout and the value records
import no LangGraph: ``ckdb scrub`` checks the saver's records on a machine without it.
"""

from __future__ import annotations

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from ckdb.errors import InvalidInput


def check_serde(serde: SerializerProtocol) -> None:
    """Refuse a serializer that would store pickle (ckdb never does)."""
    inner = serde.serde if isinstance(serde, EncryptedSerializer) else serde
    if isinstance(inner, JsonPlusSerializer) and inner.pickle_fallback:
        raise InvalidInput(
            "the serializer has pickle_fallback=True; ckdb never stores pickle "
            "(use JsonPlusSerializer(pickle_fallback=False))"
        )
