"""The codec: core events <-> protobuf bytes and <-> JSON-ready dicts.

The only package that imports generated protobuf code (``codec.gen``) or
``google.protobuf``; everything else converts through these functions. ``payloads`` holds
the proto side (with the payload version and its upgrade chain), ``dicts`` the JSON side,
``fields`` the per-field mapping both walk. Pure: no I/O, no clock.
"""

from databuild.codec.dicts import (
    event_from_dict,
    event_to_dict,
    payload_from_dict,
    payload_to_dict,
    want_from_dict,
    want_to_dict,
)
from databuild.codec.fields import PAYLOAD_TYPES_BY_NAME
from databuild.codec.payloads import (
    PAYLOAD_VERSION,
    decode_event,
    decode_payload,
    encode_event,
    encode_payload,
)

__all__ = [
    "PAYLOAD_TYPES_BY_NAME",
    "PAYLOAD_VERSION",
    "decode_event",
    "decode_payload",
    "encode_event",
    "encode_payload",
    "event_from_dict",
    "event_to_dict",
    "payload_from_dict",
    "payload_to_dict",
    "want_from_dict",
    "want_to_dict",
]
