"""Lotse integration contracts: event models, topics, vocabularies and the CloudEvents envelope."""

from . import topics, vocab
from .envelope import DecodeError, Envelope, KafkaRecord, RawEvent, decode, decode_headers, decode_raw, encode, new_event, validate
from .events import EVENTS, PARTNER_REFERRAL, SCHEMAS, EventSpec, spec_for, spec_of
from .upcasting import upcaster

__all__ = [
    "EVENTS",
    "PARTNER_REFERRAL",
    "SCHEMAS",
    "DecodeError",
    "Envelope",
    "EventSpec",
    "KafkaRecord",
    "RawEvent",
    "decode",
    "decode_headers",
    "decode_raw",
    "encode",
    "new_event",
    "spec_for",
    "spec_of",
    "topics",
    "upcaster",
    "validate",
    "vocab",
]
