"""The control link carries no more than it must, and a lost reply costs a retry, not a second action.

* A waveform crosses once, named by its SHA-256; played again at other levels only the level crosses, and the
  level reaches the bench (the RX power steps by the level's ratio). A waveform the server evicted is
  uploaded again when the server answers ``unknown_waveform``.
* A reply lost on its way to the client: the client sends the request again with the same id after its
  timeout, and the server answers from its reply cache without doing it again (one upload, one transmit).
"""

from __future__ import annotations

import numpy as np
import pytest

from devices import StreamConfig, open_radio
from harness.remote.server import RigServer
from tests.conftest import RIGS
from tests.remote_helpers import proxied, serve, stop

CFG = StreamConfig(2.14e9, 15.36e6, -30.0, 12e6)  # the amplifier well below compression
RX = StreamConfig(2.14e9, 15.36e6, 10.0, 12e6)
TONE = (0.5 * np.exp(2j * np.pi * np.arange(1 << 16) / 64)).astype(np.complex64)  # 512 KiB of cf32


def _power_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.abs(x) ** 2)))


def test_waveform_crosses_once_levels_apart():
    server = serve(RIGS / "sim-amplifier.yaml", seed=0)
    uploads = []
    do_upload = server._do_upload
    server._do_upload = lambda sha, payload: uploads.append(sha) or do_upload(sha, payload)
    try:
        uri, ctrl, data = proxied(server)
        with open_radio(uri) as r:
            r.configure_tx(CFG)
            r.configure_rx(RX)
            sent, power = [], []
            for level in (0.5, 0.25, 0.125):
                ctrl.reset()
                r.transmit(TONE, level=level)
                sent.append(ctrl.up)
                power.append(_power_db(r.capture(20_000).samples))
            assert sent[0] >= TONE.nbytes  # the upload
            assert max(sent[1:]) < 4096  # then only the request naming it, with its level
            assert len(uploads) == 1 and uploads[0] == r._uploaded.copy().pop()
            # the level reaches the bench: each halving of the digital level is -6.02 dB at the receiver
            assert np.diff(power) == pytest.approx([-6.02, -6.02], abs=0.05)
            server._waveforms.clear()  # evicted (the server keeps a bounded set)
            ctrl.reset()
            r.transmit(TONE, level=0.5)
            assert len(uploads) == 2 and ctrl.up >= TONE.nbytes  # unknown_waveform: uploaded again, once
            assert _power_db(r.capture(20_000).samples) == pytest.approx(power[0], abs=0.05)
        assert not server.radio.transmitting
    finally:
        stop(server)


def test_lost_reply_is_retried_with_its_id_and_not_done_twice(monkeypatch):
    armed, dropped = [False], []
    send = RigServer._send_reply

    def lossy(self, route, session, rid, rep):
        if armed[0] and rid not in dropped:  # cached as the server does, then lost on the way
            dropped.append(rid)
            s = self._sessions.get(session)
            s.in_progress.discard(rid)
            s.replies[rid] = rep
            return
        send(self, route, session, rid, rep)

    monkeypatch.setattr(RigServer, "_send_reply", lossy)
    server = serve(RIGS / "sim-amplifier.yaml", seed=0, lease_s=10.0)
    calls = {"upload": 0, "transmit": 0}
    do_upload, transmit = server._do_upload, server.radio.transmit

    def counted_upload(*a):
        calls["upload"] += 1
        return do_upload(*a)

    def counted_transmit(*a, **k):
        calls["transmit"] += 1
        return transmit(*a, **k)

    server._do_upload, server.radio.transmit = counted_upload, counted_transmit
    try:
        with open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1&timeout=0.3") as r:
            r._hb_stop.set()  # no heartbeat pings meanwhile: every reply dropped below is the radio's own
            r._hb_thread.join(5)
            r.configure_tx(CFG)
            before = server.counters["control_messages"]
            armed[0] = True
            r.transmit(TONE, level=0.5)  # upload, then transmit: the first reply of each is lost
            armed[0] = False
            assert len(dropped) == 2 and calls == {"upload": 1, "transmit": 1}
            assert server.counters["control_messages"] - before == 4  # each request sent twice, done once
            assert server.radio.transmitting
        assert not server.radio.transmitting
    finally:
        stop(server)
