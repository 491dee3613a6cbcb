"""The wire format of remote rigs (``zmq://``), shared by the client (:mod:`devices.zmq`) and the rig server
(:mod:`harness.remote.server`). The protocol is described in ``docs/remote-protocol.md``.

Two channels, both ROUTER (server) / DEALER (client):

* control: multipart ``[json]`` or ``[json, payload]``; a request names ``op``, ``id`` and ``session``,
  a reply echoes ``id`` with ``ok`` and ``result`` or ``error``;
* data: server -> client frames ``[header, samples]`` (``[header, samples, json]`` for the last frame of a
  bounded capture), client -> server credit messages (:data:`CREDIT`).

Everything a peer sends is untrusted: :func:`decode_request`, :func:`decode_reply`, :func:`decode_frame`
and :func:`decode_credit` raise :class:`WireError` for anything malformed and never anything else.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import sys
from dataclasses import dataclass

import numpy as np

from devices import iq_kernels

PROTOCOL = "rf-harness-remote"
#: protocol versions this code speaks; a server answers with the highest one both sides know
VERSIONS = (1,)
VERSION = max(VERSIONS)

#: largest control JSON part accepted (bytes)
MAX_JSON_BYTES = 64 * 1024
#: largest waveform a client may upload (samples, cf32)
MAX_WAVEFORM_SAMPLES = 1 << 24
#: samples per data frame of a server whose client names no size (64k: 512 KiB of cf32)
FRAME_SAMPLES = 1 << 16
MAX_FRAME_SAMPLES = 1 << 20
#: bytes per data frame a client asks for by default, whatever the format: sc16 frames carry twice the samples
#: of cf32 ones, so the costs paid per message on both sides (headers, Python, ZeroMQ, wake-ups) are paid per
#: byte alike and not twice as often per sample in sc16
FRAME_BYTES = 512 * 1024

# ------------------------------------------------------------------ data frames
#: magic, version, format, flags, stream id, sequence, first sample index, sample count, samples lost just
#: before this frame, timestamp (POSIX s of the first sample), sc16 scale
HEADER = struct.Struct("<4sBBHIQQIIdf")
MAGIC = b"RFDS"
FORMATS = {"cf32": 0, "sc16": 1}
FORMAT_NAMES = {v: k for k, v in FORMATS.items()}
BYTES_PER_SAMPLE = {0: 8, 1: 4}
#: sc16: int16 I and Q, value = int * scale; the server sends 2^-15 (the ci16_le grid: a recording can take the
#: ints as they come). A client always uses the scale in the header (servers before 2026-11 sent 1/32767).
SC16_SCALE = 1.0 / iq_kernels.SC16_FULL_SCALE

F_OVERFLOW = 0x01  # the device reported an overflow in this chunk
F_DROPPED = 0x02  # the server lost ``lost_before`` samples right before this frame (its buffer was full)
F_END = 0x04  # last frame of the stream; a bounded capture's carries its metadata as a third part
F_ABORTED = 0x08  # the stream ended early (device error, lease expired, stopped); a JSON part says why
F_OVERLOAD = 0x10  # the ADC clipped in this chunk
#: flags a version-1 peer understands; a frame with others set is treated as lost, never guessed at
KNOWN_FLAGS = F_OVERFLOW | F_DROPPED | F_END | F_ABORTED | F_OVERLOAD

#: client -> server on the data channel: magic, version, stream id, credits granted, session (16 bytes)
CREDIT = struct.Struct("<4sBxxxII16s")
CREDIT_MAGIC = b"RFCR"


def frame_samples_for(fmt: str) -> int:
    """Samples per data frame a client asks for in format ``fmt`` (``cf32``: 64k, ``sc16``: 128k)."""
    return FRAME_BYTES // BYTES_PER_SAMPLE[FORMATS[fmt]]


class WireError(ValueError):
    """A message that does not follow the protocol (malformed, truncated, oversized, unknown version)."""


@dataclass
class FrameHeader:
    fmt: int
    flags: int
    stream: int
    seq: int
    first_sample: int
    n_samples: int
    lost_before: int
    timestamp: float
    scale: float

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.fmt, self.flags, self.stream, self.seq, self.first_sample,
                           self.n_samples, self.lost_before, self.timestamp, self.scale)


def encode_samples(x: np.ndarray, fmt: int) -> tuple[bytes | np.ndarray, float]:
    """Samples (complex64) as the bytes of a data frame and the scale that goes in its header (cf32: a view,
    no copy; sc16: rounded and clipped in one compiled pass, :mod:`devices.iq_kernels`)."""
    if fmt == 0:
        return np.ascontiguousarray(x, dtype=np.complex64), 1.0
    return iq_kernels.sc16_encode(x), SC16_SCALE


def decode_frame(parts: list) -> tuple[FrameHeader, np.ndarray, dict | None]:
    """A data frame's header, its samples as complex64 and its JSON part (None if it has none); cf32
    samples are a view of the message, valid while it lives."""
    h, body, meta = decode_header(parts)
    return h, frame_samples(h, body), meta


def decode_header(parts: list) -> tuple[FrameHeader, memoryview, dict | None]:
    """A data frame's header, its sample bytes (checked against the header) and its JSON part."""
    if len(parts) not in (2, 3):
        raise WireError(f"data frame of {len(parts)} parts; expected 2 or 3")
    raw = parts[0].buffer if hasattr(parts[0], "buffer") else parts[0]
    if len(raw) != HEADER.size:
        raise WireError(f"data frame header of {len(raw)} bytes; expected {HEADER.size}")
    magic, version, fmt, flags, stream, seq, first, n, lost, ts, scale = HEADER.unpack(raw)
    if magic != MAGIC:
        raise WireError("data frame without the RFDS magic")
    if version not in VERSIONS:
        raise WireError(f"data frame of protocol version {version}; this client speaks {VERSIONS}")
    if fmt not in BYTES_PER_SAMPLE:
        raise WireError(f"unknown sample format {fmt}")
    if flags & ~KNOWN_FLAGS:
        raise WireError(f"data frame with unknown flags 0x{flags & ~KNOWN_FLAGS:x}")
    if fmt == 1 and not (math.isfinite(scale) and 0 < scale <= 1):
        raise WireError(f"sc16 frame with scale {scale!r}")
    body = memoryview(parts[1].buffer if hasattr(parts[1], "buffer") else parts[1])
    if body.nbytes != n * BYTES_PER_SAMPLE[fmt]:
        raise WireError(f"data frame says {n} samples but carries {body.nbytes} bytes")
    meta = _json(parts[2]) if len(parts) == 3 else None
    return FrameHeader(fmt, flags, stream, seq, first, n, lost, ts, scale), body, meta


def frame_samples(h: FrameHeader, body: memoryview, out: np.ndarray | None = None) -> np.ndarray:
    """The samples of a frame as complex64. ``out`` (complex64, exactly ``h.n_samples`` long): convert
    straight into it, with no temporary and no second copy."""
    if h.fmt == 0:
        x = np.frombuffer(body, dtype=np.complex64)
        if out is None:
            return x
        out[:] = x
        return out
    return iq_kernels.sc16_decode(np.frombuffer(body, dtype=np.int16), h.scale, out)


def encode_credit(session: bytes, stream: int, credits: int) -> bytes:
    return CREDIT.pack(CREDIT_MAGIC, VERSION, stream, credits, session)


def decode_credit(parts: list) -> tuple[bytes, int, int]:
    """(session, stream id, credits) of a credit message."""
    if len(parts) != 1:
        raise WireError(f"credit message of {len(parts)} parts; expected 1")
    raw = bytes(parts[0])
    if len(raw) != CREDIT.size:
        raise WireError(f"credit message of {len(raw)} bytes; expected {CREDIT.size}")
    magic, version, stream, credits, session = CREDIT.unpack(raw)
    if magic != CREDIT_MAGIC or version not in VERSIONS:
        raise WireError("credit message without the RFCR magic or of an unknown version")
    if not 0 < credits <= 4096:
        raise WireError(f"credit message granting {credits} frames")
    return session, stream, credits


# ------------------------------------------------------------------ control messages
def _json(part) -> dict:
    raw = bytes(part)
    if len(raw) > MAX_JSON_BYTES:
        raise WireError(f"JSON part of {len(raw)} bytes; at most {MAX_JSON_BYTES}")
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WireError(f"JSON part does not parse: {str(e)[:80]}") from None
    if not isinstance(obj, dict):
        raise WireError("JSON part is not an object")
    return obj


def _no_constant(name):
    raise ValueError(f"{name} is not a number here")


def dumps(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


@dataclass
class Request:
    op: str
    id: int
    session: bytes
    version: int
    args: dict
    payload: bytes | None = None


def encode_request(op: str, req_id: int, session: bytes, args: dict | None = None,
                   payload: bytes | np.ndarray | None = None) -> list:
    head = dumps({"proto": PROTOCOL, "v": VERSION, "op": op, "id": req_id, "session": session.hex(),
                  "args": args or {}})
    return [head] if payload is None else [head, payload]


def decode_request(parts: list) -> Request:
    if not 1 <= len(parts) <= 2:
        raise WireError(f"request of {len(parts)} parts; expected 1 or 2")
    d = _json(parts[0])
    if d.get("proto") != PROTOCOL:
        raise WireError(f"not a {PROTOCOL} request")
    v, op, rid, sess, args = d.get("v"), d.get("op"), d.get("id"), d.get("session"), d.get("args", {})
    if not isinstance(v, int) or isinstance(v, bool):
        raise WireError("request without an integer protocol version 'v'")
    if not isinstance(op, str) or not 0 < len(op) <= 32:
        raise WireError("request without an 'op'")
    if not isinstance(rid, int) or isinstance(rid, bool) or not 0 <= rid < 2 ** 63:
        raise WireError("request without an integer 'id'")
    try:
        session = bytes.fromhex(sess) if isinstance(sess, str) else b""
    except ValueError:
        session = b""
    if len(session) != 16:
        raise WireError("request without a 16-byte session (32 hex digits)")
    if not isinstance(args, dict):
        raise WireError("request 'args' is not an object")
    payload = bytes(parts[1]) if len(parts) == 2 else None
    return Request(op, rid, session, v, args, payload)


def encode_reply(req_id: int, result: dict | None = None, error: dict | None = None) -> bytes:
    d = {"proto": PROTOCOL, "v": VERSION, "id": req_id, "ok": error is None}
    d["error" if error is not None else "result"] = error if error is not None else (result or {})
    return dumps(d)


def error(code: str, message: str, **fields) -> dict:
    return {"code": code, "message": message, **fields}


def decode_reply(parts: list) -> tuple[int, bool, dict]:
    """(id, ok, result or error) of a reply; an error always has 'code' and 'message'."""
    if len(parts) != 1:
        raise WireError(f"reply of {len(parts)} parts; expected 1")
    d = _json(parts[0])
    if d.get("proto") != PROTOCOL or not isinstance(d.get("id"), int):
        raise WireError(f"not a {PROTOCOL} reply")
    ok = d.get("ok") is True
    body = d.get("result" if ok else "error")
    if not isinstance(body, dict):
        raise WireError("reply without a result or error object")
    if not ok:
        body = {"code": str(body.get("code", "error")), "message": str(body.get("message", "")), **body}
    return d["id"], ok, body


# ------------------------------------------------------------------ helpers
def waveform_id(samples: np.ndarray) -> str:
    """The name a waveform is uploaded under: SHA-256 of its cf32 bytes."""
    return hashlib.sha256(np.ascontiguousarray(samples, dtype=np.complex64).tobytes()).hexdigest()


def server_address(uri: str) -> str:
    """``zmq://HOST:PORT`` of a URI, without its query (key paths and options are the client's own)."""
    return uri.split("?", 1)[0]


def key_fingerprint(z85_public_key: bytes | str) -> str:
    """A short, stable name of a CURVE public key for logs and messages (SHA-256 of its Z85 text)."""
    if isinstance(z85_public_key, str):
        z85_public_key = z85_public_key.encode()
    return "SHA256:" + hashlib.sha256(z85_public_key).hexdigest()[:16]


class BufferPool:
    """Large arrays that are handed out again once nothing but the pool references them.

    A fresh multi-MiB array costs the kernel a zeroed page for each of its pages (a 4M-sample complex64
    capture: 3-7 ms on every capture, as much as the transfer); a reused one is mapped already. An array
    is reused only when its reference count shows that no capture, view or zero-copy message holds it
    (CPython's reference counts are exact), so samples handed out are never overwritten. Arrays below
    ``min_bytes`` are not pooled; the pool keeps at most ``max_bytes`` and forgets the arrays still in use
    first when it must make room. Not thread-safe: each user keeps its own.
    """

    def __init__(self, max_bytes: int = 160 << 20, min_bytes: int = 1 << 20):
        self.max_bytes, self.min_bytes = max_bytes, min_bytes
        self._arrays: list[np.ndarray] = []

    def take(self, n: int, dtype) -> np.ndarray:
        """An array of ``n`` elements of ``dtype`` (its content undefined), reused if one is free."""
        dtype = np.dtype(dtype)
        nbytes = n * dtype.itemsize
        if nbytes < self.min_bytes or nbytes > self.max_bytes:
            return np.empty(n, dtype)
        arrays = self._arrays
        for i in range(len(arrays)):
            # 2: the list's reference and getrefcount's argument; anything more is a holder outside the pool
            if arrays[i].size == n and arrays[i].dtype == dtype and sys.getrefcount(arrays[i]) == 2:
                a = arrays.pop(i)
                arrays.append(a)  # most recently used last: the oldest are dropped first
                return a
        held = sum(a.nbytes for a in arrays)
        for busy in (True, False):  # make room: forget arrays in use first (their holders keep them), then free ones
            i = 0
            while held + nbytes > self.max_bytes and i < len(arrays):
                if (sys.getrefcount(arrays[i]) > 2) == busy:
                    held -= arrays.pop(i).nbytes
                else:
                    i += 1
        a = np.empty(n, dtype)
        arrays.append(a)
        return a

    def clear(self) -> None:
        self._arrays.clear()
