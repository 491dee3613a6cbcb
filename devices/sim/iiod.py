"""A small IIOD server: libiio's network protocol (text mode, as libiio 0.24/0.25 clients speak it).

The server knows nothing of radios: it serves an :class:`IIOContext` of
:class:`IIODevice` objects whose attributes are Python callables and whose
buffers are :class:`BufferHandle` objects made by the device. Protocol facts
(from libiio's iiod/ops.c and iiod-client.c, written here from scratch):

* one request per ``\\r\\n``-terminated line, keywords case-insensitive, a
  device named by id, name or label;
* integer replies are ``"%d\\n"``; errors are negative errno values;
* ``READ`` answers ``<len>\\n<bytes>\\n``; ``WRITE ... <n>`` is followed by
  ``n`` raw bytes and answered with the byte count or an errno;
* ``OPEN <dev> <samples> <mask> [CYCLIC]``: the mask is ceil(nch/32) words of
  ``%08x``, most significant word first, bit i = the device's i-th channel
  once libiio has ordered them (scan elements by index first);
* ``READBUF <dev> <n>`` answers ``<n>\\n<mask>\\n`` and ``n`` bytes (sent as
  one chunk: the high-speed client path expects a newline after every chunk
  header, so multi-chunk answers are avoided);
* ``WRITEBUF <dev> <n>`` answers ``0\\n``, takes ``n`` bytes, answers ``n\\n``;
* libiio opens one extra connection per buffer, so connections are served
  concurrently and share the device state.

The server defends itself as a network service must: at most
``max_connections`` clients at once (one more is answered ``-EBUSY`` and
closed); a connection that sends nothing for ``idle_timeout_s`` is closed; a
buffer is at most ``max_buffer_bytes`` and a ``READBUF``/``WRITEBUF`` at most
the buffer the client opened (``-EINVAL``, never attempted); a client that
disconnects or times out releases its buffers (:meth:`BufferHandle.abandon`).
Devices compute samples outside the context lock, so attribute requests are
answered while a large read is under way.
"""

from __future__ import annotations

import collections
import contextlib
import errno as _errno
import logging
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from xml.sax.saxutils import quoteattr

log = logging.getLogger(__name__)

#: longest request line accepted (bytes); longer ones get -EINVAL and the connection is closed
MAX_LINE = 4096
#: largest WRITE payload accepted for an attribute (FIR configs are a few kB)
MAX_ATTR_WRITE = 1 << 20
#: simultaneous connections served (a libiio client uses one, plus one per open buffer)
MAX_CONNECTIONS = 32
#: a connection that sends nothing for this long (s) is closed and its buffers released
IDLE_TIMEOUT_S = 60.0
#: largest buffer a client may open (bytes of interleaved samples)
MAX_BUFFER_BYTES = 64 << 20
#: sample data is sent in chunks of this size, each within the idle timeout
_SEND_CHUNK = 1 << 20
#: a refused connection is closed this long (s) after its error line, so the client reads it
_REFUSAL_LINGER_S = 0.25
#: refused connections waiting to be closed, at most
_REFUSED_PENDING_MAX = 64

# The context DTD that libiio validates the PRINT answer against.
_DTD = (
    '<?xml version="1.0" encoding="utf-8"?>'
    "<!DOCTYPE context ["
    "<!ELEMENT context (device | context-attribute)*>"
    "<!ELEMENT context-attribute EMPTY>"
    "<!ELEMENT device (channel | attribute | debug-attribute | buffer-attribute)*>"
    "<!ELEMENT channel (scan-element?, attribute*)>"
    "<!ELEMENT attribute EMPTY>"
    "<!ELEMENT scan-element EMPTY>"
    "<!ELEMENT debug-attribute EMPTY>"
    "<!ELEMENT buffer-attribute EMPTY>"
    "<!ATTLIST context name CDATA #REQUIRED version-major CDATA #REQUIRED "
    "version-minor CDATA #REQUIRED version-git CDATA #REQUIRED description CDATA #IMPLIED>"
    "<!ATTLIST context-attribute name CDATA #REQUIRED value CDATA #REQUIRED>"
    "<!ATTLIST device id CDATA #REQUIRED name CDATA #IMPLIED label CDATA #IMPLIED>"
    "<!ATTLIST channel id CDATA #REQUIRED type (input|output) #REQUIRED name CDATA #IMPLIED>"
    "<!ATTLIST scan-element index CDATA #REQUIRED format CDATA #REQUIRED scale CDATA #IMPLIED>"
    "<!ATTLIST attribute name CDATA #REQUIRED filename CDATA #IMPLIED>"
    "<!ATTLIST debug-attribute name CDATA #REQUIRED>"
    "<!ATTLIST buffer-attribute name CDATA #REQUIRED>"
    "]>"
)


class IIOError(Exception):
    """An operation failed with an errno (sent to the client as ``-errno``)."""

    def __init__(self, err: int, message: str = ""):
        super().__init__(message or _errno.errorcode.get(err, str(err)))
        self.errno = err


@dataclass
class Attr:
    """One attribute: ``read() -> str``; ``write(str)`` (None = read-only, EACCES on write)."""

    name: str
    read: Callable[[], str]
    write: Callable[[str], None] | None = None
    filename: str | None = None


@dataclass
class ScanElement:
    """Buffer sample format of a channel, e.g. ``le:S12/16>>0``."""

    index: int
    format: str
    scale: float | None = None

    @property
    def length_bytes(self) -> int:
        # "le:S12/16>>0" -> storage bits 16
        storage = self.format.split("/")[1].split(">>")[0].split("X")[0]
        return int(storage) // 8


@dataclass
class IIOChannel:
    id: str
    output: bool
    name: str | None = None
    scan: ScanElement | None = None
    attrs: dict[str, Attr] = field(default_factory=dict)

    def add(self, attr: Attr) -> "IIOChannel":
        self.attrs[attr.name] = attr
        return self


class BufferHandle:
    """An open buffer of one device for one connection (subclassed by devices)."""

    def read(self, n_samples: int, idle_s: float = 0.0) -> bytes | bytearray | memoryview:
        """``n_samples`` interleaved samples of the enabled channels (RX): any C-contiguous buffer,
        e.g. a numpy array, sent as it is (the server is done with it before this buffer's next READBUF).

        ``idle_s``: how long the client left this buffer since its previous READBUF
        (or OPEN) while the server was serving nobody, i.e. the client's own delay
        (time spent computing, sending or answering any connection is not counted).
        Called without the context lock: the device locks what it shares.
        """
        raise IIOError(_errno.ENOSYS, "not an input buffer")

    def write(self, data: bytes) -> None:
        """Interleaved samples of the enabled channels pushed by the client (TX)."""
        raise IIOError(_errno.ENOSYS, "not an output buffer")

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        """The client went away (disconnected, timed out) without closing: by default, close."""
        self.close()


class IIODevice:
    """An IIO device: channels and attributes; ``open_buffer`` makes buffers."""

    def __init__(self, id: str, name: str | None = None, label: str | None = None):
        self.id, self.name, self.label = id, name, label
        self.channels: list[IIOChannel] = []
        self.attrs: dict[str, Attr] = {}
        self.debug_attrs: dict[str, Attr] = {}
        self.buffer_attrs: dict[str, Attr] = {}

    def add_channel(self, chn: IIOChannel) -> IIOChannel:
        self.channels.append(chn)
        # libiio numbers channels after sorting scan elements by index first; keep that order.
        self.channels.sort(key=lambda c: (0, c.scan.index) if c.scan else (1, 0))
        return chn

    def find_channel(self, cid: str, output: bool) -> IIOChannel | None:
        for c in self.channels:
            if c.output == output and (c.id == cid or c.name == cid):
                return c
        return None

    @property
    def buffer_capable(self) -> bool:
        return any(c.scan for c in self.channels)

    def open_buffer(self, samples_count: int, channels: list[IIOChannel], cyclic: bool) -> BufferHandle:
        raise IIOError(_errno.ENODEV, f"{self.id} has no buffer")

    def xml(self) -> str:
        out = [f"<device id={quoteattr(self.id)}"]
        if self.name:
            out.append(f" name={quoteattr(self.name)}")
        if self.label:
            out.append(f" label={quoteattr(self.label)}")
        out.append(" >")
        for c in self.channels:
            out.append(f"<channel id={quoteattr(c.id)}")
            if c.name:
                out.append(f" name={quoteattr(c.name)}")
            out.append(f' type="{"output" if c.output else "input"}" >')
            if c.scan:
                out.append(f'<scan-element index="{c.scan.index}" format="{c.scan.format}"')
                if c.scan.scale is not None:
                    out.append(f' scale="{c.scan.scale:f}"')
                out.append(" />")
            for a in c.attrs.values():
                fn = a.filename or a.name
                out.append(f"<attribute name={quoteattr(a.name)} filename={quoteattr(fn)} />")
            out.append("</channel>")
        for tag, attrs in (("attribute", self.attrs), ("debug-attribute", self.debug_attrs),
                           ("buffer-attribute", self.buffer_attrs)):
            for a in attrs.values():
                out.append(f"<{tag} name={quoteattr(a.name)} />")
        out.append("</device>")
        return "".join(out)


class IIOContext:
    """What ``PRINT`` describes: context attributes and devices."""

    def __init__(self, name: str = "local", description: str = "", version: tuple[int, int, str] = (0, 25, "emu0000")):
        self.name, self.description, self.version = name, description, version
        self.attrs: dict[str, str] = {}
        self.devices: list[IIODevice] = []
        #: guards device state shared by all connections
        self.lock = threading.RLock()

    def add_device(self, dev: IIODevice) -> IIODevice:
        self.devices.append(dev)
        return dev

    def find_device(self, key: str) -> IIODevice | None:
        for d in self.devices:
            if key in (d.id, d.name, d.label):
                return d
        return None

    def xml(self) -> str:
        major, minor, tag = self.version
        out = [_DTD, f'<context name={quoteattr(self.name)} version-major="{major}" version-minor="{minor}" '
                     f"version-git={quoteattr(tag)} description={quoteattr(self.description)} >"]
        for k, v in self.attrs.items():
            out.append(f"<context-attribute name={quoteattr(k)} value={quoteattr(v)} />")
        out.extend(d.xml() for d in self.devices)
        out.append("</context>")
        return "".join(out)


class _ProtocolError(Exception):
    """The connection cannot continue (client gone, framing lost)."""


@dataclass
class _OpenBuffer:
    """A buffer a connection opened, and when its client last had samples from it."""

    handle: BufferHandle
    sample_size: int  # bytes per sample of the enabled channels
    samples: int
    mask_hex: str
    since: float  # monotonic time of the OPEN or of the end of the last READBUF
    busy_since: float  # the server's busy clock at that moment

    @property
    def nbytes(self) -> int:
        return self.samples * self.sample_size


class _Handler(socketserver.BaseRequestHandler):
    server: "IIODServer"

    def setup(self) -> None:
        self.sock: socket.socket = self.request
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Every wait for the client (next request, payload bytes, room to send) is bounded.
        self.sock.settimeout(self.server.idle_timeout_s)
        self.rfile = self.sock.makefile("rb", buffering=1 << 16)
        self.buffers: dict[IIODevice, _OpenBuffer] = {}
        #: (monotonic time, server busy clock) when the request being served arrived
        self.arrival = (0.0, 0.0)

    def finish(self) -> None:
        # A client that disappears (crash, kill -9, idle timeout) releases its buffers.
        for dev in list(self.buffers):
            self._close_buffer(dev, abandoned=True)
        try:
            self.rfile.close()
        except OSError:
            pass

    # ----- I/O ------------------------------------------------------------------
    def _send(self, data: bytes | bytearray | memoryview) -> None:
        # In chunks: the idle timeout bounds each wait for the client to make room, not the whole transfer.
        view = memoryview(data)
        try:
            while view:
                view = view[self.sock.send(view[:_SEND_CHUNK]):]
        except OSError as e:  # including the timeout: the client stopped reading
            raise _ProtocolError(str(e)) from e

    def _send_parts(self, head: bytes, data: memoryview) -> None:
        """``head`` then ``data`` (a READBUF answer), the header in the same system call as the data's first chunk."""
        try:
            sent = self.sock.sendmsg([head, data[:_SEND_CHUNK]])
        except OSError as e:
            raise _ProtocolError(str(e)) from e
        if sent < len(head):
            self._send(head[sent:])
            sent = len(head)
        self._send(data[sent - len(head):])

    def _reply(self, value: int) -> None:
        self._send(b"%d\n" % value)

    def _recv_exact(self, n: int) -> bytes:
        try:
            data = self.rfile.read(n)
        except OSError as e:  # including the timeout
            raise _ProtocolError(str(e)) from e
        if data is None or len(data) != n:
            raise _ProtocolError("client closed the connection mid-transfer")
        return data

    # ----- main loop ------------------------------------------------------------
    def handle(self) -> None:
        while not self.server.stopping:
            try:
                line = self.rfile.readline(MAX_LINE + 1)
            except TimeoutError:
                log.info("iiod: closing %s:%d, idle for %g s", *self.client_address[:2], self.server.idle_timeout_s)
                return
            except OSError:
                return
            if not line:
                return
            self.arrival = (time.monotonic(), self.server.busy_clock())
            with self.server.busy():
                if self._request(line) is False:
                    return

    def _request(self, line: bytes) -> bool | None:
        """Serve one request line; False = close the connection."""
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            self._safe_reply(-_errno.EINVAL)
            return False  # framing is lost
        try:
            text = line.decode("ascii").strip()
        except UnicodeDecodeError:
            self._safe_reply(-_errno.EINVAL)
            return None
        if not text:
            return None
        try:
            return self._dispatch(text.split())
        except _ProtocolError:
            return False
        except IIOError as e:
            self._safe_reply(-e.errno)
        except Exception:  # noqa: BLE001 - a bug in a device model must not kill the server
            log.exception("iiod: request %r failed", text)
            self._safe_reply(-_errno.EIO)
        return None

    def _safe_reply(self, value: int) -> None:
        try:
            self._reply(value)
        except _ProtocolError:
            pass

    def _device(self, key: str) -> IIODevice:
        dev = self.server.context.find_device(key)
        if dev is None:
            raise IIOError(_errno.ENODEV, f"no device {key!r}")
        return dev

    def _dispatch(self, tok: list[str]) -> bool | None:
        cmd = tok[0].upper()
        ctx = self.server.context
        if cmd in ("EXIT", "QUIT"):
            return False
        if cmd == "VERSION":
            major, minor, tag = ctx.version
            self._send(f"{major}.{minor}.{tag}\n".encode())
        elif cmd == "PRINT":
            xml = ctx.xml().encode()
            self._send(b"%d\n" % len(xml) + xml + b"\n")
        elif cmd == "TIMEOUT":
            if len(tok) != 2 or not tok[1].isdigit():
                raise IIOError(_errno.EINVAL)
            self._reply(0)
        elif cmd == "HELP":
            self._send(b"Available commands: VERSION PRINT TIMEOUT OPEN CLOSE READ WRITE READBUF WRITEBUF "
                       b"GETTRIG SETTRIG SET EXIT\n")
        elif cmd in ("READ", "WRITE"):
            self._attr(cmd == "WRITE", tok)
        elif cmd == "OPEN":
            self._open(tok)
        elif cmd == "CLOSE":
            if len(tok) != 2:
                raise IIOError(_errno.EINVAL)
            dev = self._device(tok[1])
            if dev not in self.buffers:
                raise IIOError(_errno.EBADF)
            self._close_buffer(dev)
            self._reply(0)
        elif cmd == "READBUF":
            self._readbuf(tok)
        elif cmd == "WRITEBUF":
            self._writebuf(tok)
        elif cmd == "GETTRIG":
            if len(tok) != 2:
                raise IIOError(_errno.EINVAL)
            self._device(tok[1])
            raise IIOError(_errno.ENOENT)  # no triggers on this context
        elif cmd == "SETTRIG":
            if len(tok) not in (2, 3):
                raise IIOError(_errno.EINVAL)
            self._device(tok[1])
            if len(tok) == 3:
                raise IIOError(_errno.ENOENT)
            self._reply(0)
        elif cmd == "SET":
            if (len(tok) != 4 or tok[2].upper() != "BUFFERS_COUNT" or not tok[3].isdigit()
                    or not 1 <= int(tok[3]) <= 0xFFFFFFFF):  # an unsigned int in libiio
                raise IIOError(_errno.EINVAL)
            dev = self._device(tok[1])
            with ctx.lock:
                setter = getattr(dev, "set_buffers_count", None)
                if setter is not None:
                    setter(int(tok[3]))
            self._reply(0)
        else:  # ZPRINT, BINARY (libiio 1.x) and anything unknown
            raise IIOError(_errno.EINVAL, f"unknown command {cmd}")
        return None

    # ----- attributes -------------------------------------------------------------
    def _attr(self, write: bool, tok: list[str]) -> None:
        args = tok[1:]
        length = None
        if write:
            if len(args) < 2 or not args[-1].isdigit():
                raise IIOError(_errno.EINVAL)
            length = int(args.pop())
            if length > MAX_ATTR_WRITE:
                raise _ProtocolError("attribute write too large")
            payload = self._recv_exact(length)  # consume it whatever happens next
        if not args:
            raise IIOError(_errno.EINVAL)
        dev = self._device(args[0])
        rest = args[1:]
        table: dict[str, Attr] | None
        if rest and rest[0].upper() in ("INPUT", "OUTPUT"):
            if len(rest) != 3:
                raise IIOError(_errno.EINVAL)
            chn = dev.find_channel(rest[1], rest[0].upper() == "OUTPUT")
            if chn is None:
                raise IIOError(_errno.ENXIO, f"no channel {rest[1]}")
            table, name = chn.attrs, rest[2]
        elif rest and rest[0].upper() in ("DEBUG", "BUFFER"):
            if len(rest) != 2:
                raise IIOError(_errno.EINVAL)
            table = dev.debug_attrs if rest[0].upper() == "DEBUG" else dev.buffer_attrs
            name = rest[1]
        elif len(rest) == 1:
            table, name = dev.attrs, rest[0]
        else:
            raise IIOError(_errno.EINVAL)  # includes "read all attributes", not supported
        attr = table.get(name)
        if attr is None:
            raise IIOError(_errno.ENOENT, f"no attribute {name}")
        with self.server.context.lock:
            if not write:
                value = attr.read().encode()
            else:
                if attr.write is None:
                    raise IIOError(_errno.EACCES, f"{name} is read-only")
                text = payload.split(b"\0", 1)[0].decode("utf-8", "replace")
                attr.write(text)
        if write:
            self._reply(length)
        else:
            self._send(b"%d\n" % len(value) + value + b"\n")

    # ----- buffers ----------------------------------------------------------------
    def _open(self, tok: list[str]) -> None:
        if len(tok) not in (4, 5) or not tok[2].isdigit():
            raise IIOError(_errno.EINVAL)
        cyclic = len(tok) == 5
        if cyclic and tok[4].upper() != "CYCLIC":
            raise IIOError(_errno.EINVAL)
        dev = self._device(tok[1])
        samples = int(tok[2])
        mask_hex = tok[3]
        words = (len(dev.channels) + 31) // 32
        if samples < 1 or len(mask_hex) != 8 * words:
            raise IIOError(_errno.EINVAL)
        try:
            mask = int(mask_hex, 16)
        except ValueError as e:
            raise IIOError(_errno.EINVAL) from e
        enabled = [c for i, c in enumerate(dev.channels) if mask >> i & 1]
        if not enabled or any(c.scan is None for c in enabled):
            raise IIOError(_errno.EINVAL, "mask selects no buffer channel")
        size = sum(c.scan.length_bytes for c in enabled)
        if samples * size > self.server.max_buffer_bytes:
            raise IIOError(_errno.ENOMEM, f"a buffer of {samples} samples exceeds {self.server.max_buffer_bytes} bytes")
        if dev in self.buffers:
            raise IIOError(_errno.EBUSY)
        with self.server.context.lock:
            handle = dev.open_buffer(samples, enabled, cyclic)
        self.buffers[dev] = _OpenBuffer(handle, size, samples, mask_hex, time.monotonic(), self.server.busy_clock())
        self._reply(0)

    def _close_buffer(self, dev: IIODevice, abandoned: bool = False) -> None:
        handle = self.buffers.pop(dev).handle
        with self.server.context.lock:
            try:
                handle.abandon() if abandoned else handle.close()
            except Exception:  # noqa: BLE001 - closing must always finish
                log.exception("iiod: closing a buffer of %s failed", dev.id)
        if abandoned:
            log.info("iiod: %s:%d went away with a %s buffer open: released", *self.client_address[:2], dev.id)

    def _buffer(self, tok: list[str]) -> tuple[_OpenBuffer, int]:
        """The connection's open buffer named by ``tok[1]`` and the byte count ``tok[2]``, at most its size."""
        if len(tok) != 3 or not tok[2].isdigit():
            raise IIOError(_errno.EINVAL)
        dev = self._device(tok[1])
        buf = self.buffers.get(dev)
        if buf is None:
            raise IIOError(_errno.EBADF)
        nbytes = int(tok[2])
        if nbytes > buf.nbytes:
            raise IIOError(_errno.EINVAL, f"{nbytes} bytes exceed the {buf.nbytes}-byte buffer")
        return buf, nbytes

    def _readbuf(self, tok: list[str]) -> None:
        buf, nbytes = self._buffer(tok)
        n = nbytes // buf.sample_size
        if n == 0:
            self._reply(0)
            return
        t, busy = self.arrival
        idle = max(0.0, (t - buf.since) - (busy - buf.busy_since))
        data = memoryview(buf.handle.read(n, idle_s=idle)).cast("B")  # the handle locks what it shares
        if data.nbytes != n * buf.sample_size:
            raise IIOError(_errno.EIO, "device returned a short buffer")
        self._send_parts(b"%d\n%s\n" % (data.nbytes, buf.mask_hex.encode()), data)
        buf.since, buf.busy_since = time.monotonic(), self.server.busy_clock()

    def _writebuf(self, tok: list[str]) -> None:
        buf, nbytes = self._buffer(tok)  # refused before the client sends the bytes
        self._reply(0)
        data = self._recv_exact(nbytes)
        usable = len(data) - len(data) % buf.sample_size
        if usable == 0:
            raise IIOError(_errno.EINVAL)
        buf.handle.write(data[:usable])
        self._reply(nbytes)


class IIODServer(socketserver.ThreadingTCPServer):
    """Threaded IIOD server on ``host:port`` (port 0 = a free port) serving ``context``.

    ``max_connections``: clients served at once (one more gets ``-EBUSY`` and is closed);
    ``idle_timeout_s``: a connection silent this long is closed, its buffers released
    (None: never); ``max_buffer_bytes``: the largest buffer a client may open.
    """

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, context: IIOContext, host: str = "127.0.0.1", port: int = 0, *,
                 max_connections: int = MAX_CONNECTIONS, idle_timeout_s: float | None = IDLE_TIMEOUT_S,
                 max_buffer_bytes: int = MAX_BUFFER_BYTES):
        if max_connections < 1 or max_buffer_bytes < 1 or (idle_timeout_s is not None and not idle_timeout_s > 0):
            raise ValueError("max_connections and max_buffer_bytes must be >= 1, idle_timeout_s > 0 or None")
        self.context = context
        self.max_connections = int(max_connections)
        self.idle_timeout_s = None if idle_timeout_s is None else float(idle_timeout_s)
        self.max_buffer_bytes = int(max_buffer_bytes)
        self.stopping = False
        self.refused = 0  # connections refused so far
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._refused: collections.deque[tuple[float, socket.socket]] = collections.deque()
        self._busy_lock = threading.Lock()
        self._busy_active = 0  # requests being served now
        self._busy_total = 0.0
        self._busy_mark = 0.0
        self._thread: threading.Thread | None = None
        self._serving = False
        super().__init__((host, port), _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def connections(self) -> int:
        """Connections being served."""
        with self._conns_lock:
            return len(self._conns)

    # ----- time the server spends serving (not counted against a client's pace) -------------------
    @contextlib.contextmanager
    def busy(self):
        """Count the time of one request in :meth:`busy_clock`."""
        self._busy_step(1)
        try:
            yield
        finally:
            self._busy_step(-1)

    def _busy_step(self, delta: int) -> None:
        with self._busy_lock:
            now = time.monotonic()
            if self._busy_active:
                self._busy_total += now - self._busy_mark
            self._busy_mark = now
            self._busy_active += delta

    def busy_clock(self) -> float:
        """Seconds so far during which at least one request was being served."""
        with self._busy_lock:
            if self._busy_active:
                return self._busy_total + time.monotonic() - self._busy_mark
            return self._busy_total

    # ----- connections ------------------------------------------------------------------------------
    def process_request(self, request, client_address) -> None:
        with self._conns_lock:
            full = len(self._conns) >= self.max_connections
            if not full:
                self._conns.add(request)
        if full:
            log.warning("iiod: refusing %s:%d: %d connections open (max_connections)", *client_address[:2],
                        self.max_connections)
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)  # a thread serves it
        except RuntimeError as e:  # the system cannot start another thread
            with self._conns_lock:
                self._conns.discard(request)
            log.warning("iiod: refusing %s:%d: %s", *client_address[:2], e)
            self._refuse(request)

    def shutdown_request(self, request) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        log.exception("iiod: serving %s failed", client_address)

    def _refuse(self, sock: socket.socket) -> None:
        """Answer ``-EBUSY`` and end the connection; it is closed a moment later, so the client reads the line."""
        self.refused += 1
        try:
            sock.setblocking(False)
            sock.send(b"%d\n" % -_errno.EBUSY)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._refused.append((time.monotonic() + _REFUSAL_LINGER_S, sock))
        while len(self._refused) > _REFUSED_PENDING_MAX:
            self._drop(self._refused.popleft()[1])

    @staticmethod
    def _drop(sock: socket.socket) -> None:
        # Read what the client sent (a bounded amount) so closing sends FIN, not a reset that would eat the error line.
        try:
            for _ in range(16):
                if not sock.recv(1 << 16):
                    break
        except OSError:
            pass
        sock.close()

    def service_actions(self) -> None:
        now = time.monotonic()
        while self._refused and self._refused[0][0] <= now:
            self._drop(self._refused.popleft()[1])

    # ----- running ----------------------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.05) -> None:
        self._serving = True
        try:
            super().serve_forever(poll_interval)
        finally:
            self._serving = False

    def start(self) -> "IIODServer":
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"iiod:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, drop every connection (closing their buffers), release the port."""
        if self.stopping:
            return
        self.stopping = True
        if self._serving:
            self.shutdown()
        while self._refused:
            self._drop(self._refused.popleft()[1])
        with self._conns_lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # Let the handlers close their buffers (stopping the transmitter) before returning.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self._conns_lock:
                if not self._conns:
                    break
            time.sleep(0.01)
