"""A small client for scripts and notebooks: open a remote rig, tune, capture into numpy, release it.

    from harness.remote.client import RemoteRig

    with RemoteRig("zmq://rig1.example:5555?server_key=rig1.key&client_key=me.key_secret") as rig:
        print(rig.description["name"], rig.description["limits"])
        rig.tune(2.14e9, 15.36e6, rx_gain_db=30)
        x = rig.capture(100_000)            # complex64, full scale 1.0; raises if any sample was lost
        print(rig.last_meta.timestamp, rig.last_meta.config)
        for chunk in rig.stream(seconds=2):  # a continuous stream; rig.stream_lost counts any loss
            ...

Opening takes control of the rig (a lease the client renews in the background); leaving the ``with`` block
(or :meth:`RemoteRig.close`) stops the transmitter and releases it. The server's own limits apply to
everything transmitted (:meth:`RemoteRig.transmit`): a refusal raises
:class:`devices.zmq.RemoteRefused` naming the limit.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator

import numpy as np

from devices.radio import CaptureMeta, DeviceError, StreamConfig
from devices.registry import open_radio
from devices.zmq import ZmqRadio


class RemoteRig:
    def __init__(self, uri: str):
        radio = open_radio(uri)
        if not isinstance(radio, ZmqRadio):
            radio.close()
            raise DeviceError(f"{uri}: not a remote rig (zmq://HOST:PORT)")
        self.radio = radio
        self.last_meta: CaptureMeta | None = None
        self.stream_lost = 0

    @property
    def description(self) -> dict:
        """The served rig: name, description, limits (TX bands, maximum levels), DUT bypass; ``declared`` (its rig
        file's declared part) and ``calibration`` (the bench's table) are what ``--rig zmq://`` builds a rig from."""
        return dict(self.radio.server_rig)

    @property
    def capabilities(self):
        return self.radio.capabilities

    def tune(self, freq_hz: float, sample_rate_hz: float, rx_gain_db: float = 30.0,
             tx_gain_db: float | None = None) -> StreamConfig:
        """Tune the receiver (and the transmitter, when ``tx_gain_db`` is given); returns the RX settings applied."""
        if tx_gain_db is not None:
            self.radio.configure_tx(StreamConfig(freq_hz, sample_rate_hz, tx_gain_db))
        return self.radio.configure_rx(StreamConfig(freq_hz, sample_rate_hz, rx_gain_db))

    def transmit(self, samples: np.ndarray, level: float = 1.0, cyclic: bool = True) -> None:
        """Play ``samples * level`` (uploaded once by hash; the server checks its limits first)."""
        self.radio.transmit(samples, cyclic=cyclic, level=level)

    def stop(self) -> bool:
        return self.radio.stop_tx()

    def capture(self, n_samples: int, allow_loss: bool = False) -> np.ndarray:
        """``n_samples`` contiguous samples; a capture that lost any raises unless ``allow_loss`` (then the
        gaps are zeros and :attr:`last_meta` says how many)."""
        cap = self.radio.capture(int(n_samples))
        self.last_meta = cap.meta
        if not allow_loss and (cap.meta.overflow or cap.meta.dropped_samples):
            raise DeviceError(f"{self.radio.uri}: capture lost samples ({', '.join(cap.meta.faults())})")
        return cap.samples

    def stream(self, seconds: float, frame_samples: int = 1 << 16) -> Iterator[np.ndarray]:
        """Chunks of a continuous stream for ``seconds``; :attr:`stream_lost` counts the samples lost."""
        s = self.radio.stream(frame_samples)
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                chunk = s.read()
                if chunk is None:
                    break
                yield chunk[0].copy()
        finally:
            s.close()
            self.stream_lost = s.lost

    def publish_plain(self, endpoint: str, seconds: float, kind: str = "push", tee=None) -> int:
        """Republish the rig's continuous stream for ``seconds`` for GNU Radio (:func:`publish_plain`)."""
        return publish_plain(self.stream(seconds), endpoint, kind, tee)

    def close(self) -> None:
        """Stop the transmitter and release control of the rig."""
        self.radio.close()

    def __enter__(self) -> "RemoteRig":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def publish_plain(chunks: Iterable[np.ndarray], endpoint: str, kind: str = "push", tee=None, stop=None) -> int:
    """Publish ``chunks`` (complex64 arrays) for GNU Radio's ZMQ source blocks: raw complex64 items, no header,
    one message per chunk, on ``endpoint`` (bound here) as PUSH (``ZMQ Pull Source``: lossless, the PUSH waits
    while GNU Radio lags, and a rig server's stream then loses, and counts, what its credits cannot cover) or
    PUB (``ZMQ Sub Source``: a slow or late subscriber silently misses messages — PUB/SUB drops by design, so
    loss counted upstream says nothing about the subscriber). ``tee(chunk)`` sees every chunk sent; ``stop()``
    true ends a wait for a reader. Returns the number of samples published."""
    import zmq

    if kind not in ("push", "pub"):
        raise ValueError(f"kind must be 'push' or 'pub', got {kind!r}")
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH if kind == "push" else zmq.PUB)
    sock.linger = 2000
    sent = 0
    try:
        sock.bind(endpoint)
        for chunk in chunks:
            while not sock.poll(200, zmq.POLLOUT):  # a PUSH without a reader (a PUB never waits)
                if stop is not None and stop():
                    return sent
            sock.send(np.ascontiguousarray(chunk, dtype=np.complex64), copy=False)  # GNU Radio's gr_complex
            if tee is not None:
                tee(chunk)
            sent += chunk.size
    finally:
        sock.close()
    return sent
