"""Keeping an error status small enough to reach the client.

gRPC sends a refusal's `google.rpc.Status` in trailing metadata twice over: the message as
`grpc-message` (percent-encoded) and the whole status as `grpc-status-details-bin`
(base64). A client drops metadata above 8 KiB (soft limit) to 16 KiB (hard limit) and sees
only a bare RESOURCE_EXHAUSTED "Stream removed" instead of the refusal. A status can grow
with the input it describes: a 100 KB name echoed in a message, a spec with hundreds of
bad fields, one violation each. `bounded()` cuts the message and every string of the
known `google.rpc` details to a few hundred characters and keeps the leading items of
repeated details (BadRequest field violations, QuotaFailure violations...) within a byte
budget, saying in the message how many were left out. The first problems, and the code,
always arrive.
"""

from __future__ import annotations

from google.protobuf import any_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

MAX_MESSAGE = 256       # characters of Status.message
MAX_STRING = 200        # characters of each string inside a detail
DETAILS_BUDGET = 2000   # bytes of all details together, serialized

_DETAIL_TYPES = {cls.DESCRIPTOR.full_name: cls for cls in (
    error_details_pb2.BadRequest, error_details_pb2.ResourceInfo,
    error_details_pb2.PreconditionFailure, error_details_pb2.QuotaFailure,
    error_details_pb2.RetryInfo, error_details_pb2.ErrorInfo, error_details_pb2.Help,
    error_details_pb2.LocalizedMessage, error_details_pb2.DebugInfo,
    error_details_pb2.RequestInfo)}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _clip_strings(msg: Message) -> None:
    """Every string in `msg`, at any depth, cut to MAX_STRING characters."""
    for fd, value in msg.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            if fd.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_STRING:
                for key in list(value):
                    value[key] = _cut(value[key], MAX_STRING)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            for item in (value if fd.is_repeated else [value]):
                _clip_strings(item)
        elif fd.type == FieldDescriptor.TYPE_STRING:
            if fd.is_repeated:
                value[:] = [_cut(v, MAX_STRING) for v in value]
            else:
                setattr(msg, fd.name, _cut(value, MAX_STRING))


def _varint_size(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _keep_within(msg: Message, budget: int) -> int:
    """Drop trailing items of `msg`'s repeated message fields until it serializes to at
    most `budget` bytes (keeping at least one); the number of items dropped. Linear: each
    item's size is taken once."""
    dropped = 0
    for fd, value in msg.ListFields():
        if not fd.is_repeated or fd.message_type is None \
                or fd.message_type.GetOptions().map_entry:
            continue
        total = msg.ByteSize()
        if total <= budget:
            continue
        tag = _varint_size(fd.number << 3)
        sizes = [tag + _varint_size(n) + n for n in (item.ByteSize() for item in value)]
        used, keep = total - sum(sizes), 0
        for size in sizes:
            if keep and used + size > budget:
                break
            used, keep = used + size, keep + 1
        dropped += len(value) - keep
        del value[keep:]
    return dropped


def bounded(status: status_pb2.Status) -> status_pb2.Status:
    """`status` with its message and details cut to fit in trailing metadata (the code is
    kept; unknown detail types pass unchanged)."""
    out = status_pb2.Status(code=status.code)
    dropped, used = 0, 0
    for any_detail in status.details:
        cls = _DETAIL_TYPES.get(any_detail.TypeName())
        if cls is None:
            out.details.add().CopyFrom(any_detail)
            continue
        detail = cls()
        any_detail.Unpack(detail)
        _clip_strings(detail)
        wrapping = len(any_detail.type_url) + 8          # the Any around it: url, lengths
        dropped += _keep_within(detail, max(DETAILS_BUDGET - used - wrapping, 0))
        packed = any_pb2.Any()
        packed.Pack(detail)
        used += packed.ByteSize()
        out.details.append(packed)
    more = f" ({dropped} more not shown)" if dropped else ""
    out.message = _cut(status.message, MAX_MESSAGE - len(more)) + more
    return out
