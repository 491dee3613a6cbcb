"""The emulated PlutoSDR defends itself like a server: bounded reads, connections and idle time,
clients that vanish release what they held, other clients are answered during a large read,
and the emulator's own work never shows up as an RX overflow. All on 127.0.0.1."""

from __future__ import annotations

import errno
import gc
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest

from conftest import required

import adi  # noqa: E402 - a project dependency: missing, the module must fail, not skip

from devices.sim import Attenuator, Path, SimBench, SimConfig, Thru  # noqa: E402
from devices.sim.pluto_emulator import serve  # noqa: E402

FS = 7_680_000
RX, TX, PHY = "cf-ad9361-lpc", "cf-ad9361-dds-core-lpc", "ad9361-phy"
TOOLS = required("libiio-utils (iio_info) not installed" if shutil.which("iio_info") is None else None)


def make_bench(seed: int = 5) -> SimBench:
    return SimBench(SimConfig(seed=seed), Path([Attenuator(10.0)]), Thru(loss_db=5.0), Path([Attenuator(20.0)]))


@pytest.fixture
def start():
    """start(**options) -> (bench, server, port); every server is stopped afterwards."""
    servers = []

    def _start(**options):
        bench = make_bench()
        server, port = serve(bench, **options)
        servers.append(server)
        with server.emulator.lock:
            server.emulator._set_rate(str(FS))
        return bench, server, port

    yield _start
    gc.collect()
    for s in servers:
        s.stop()


class Raw:
    """A raw IIOD connection: request lines, integer replies, payloads."""

    def __init__(self, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    def ask(self, line: str, payload: bytes = b"") -> bytes:
        self.sock.sendall(line.encode() + b"\r\n")
        if payload:
            if self.f.readline() != b"0\n":
                raise AssertionError(f"{line!r} refused")
            self.sock.sendall(payload)
        return self.f.readline()

    def write_attr(self, line: str, value: bytes) -> bytes:
        """WRITE: the value's bytes follow the request line at once."""
        self.sock.sendall(f"{line} {len(value)}\r\n".encode() + value)
        return self.f.readline()

    def read_attr(self, line: str) -> bytes:
        n = int(self.ask(line))
        assert n >= 0, f"{line!r}: {n}"
        return self.f.read(n + 1)[:-1]

    def readbuf(self, nbytes: int) -> bytes:
        n = int(self.ask(f"READBUF {RX} {nbytes}"))
        assert n == nbytes, n
        self.f.readline()  # mask
        return self.f.read(n)

    def close(self) -> None:
        self.f.close()
        self.sock.close()


def wait_for(cond, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def version_and_print_answer(port: int) -> None:
    c = Raw(port)
    try:
        assert c.ask("VERSION").startswith(b"0.25.")
        xml = c.read_attr("PRINT")
        assert xml.startswith(b"<?xml") and xml.endswith(b"</context>")
    finally:
        c.close()


# ----------------------------------------------------------------------------- bounds
def test_reads_and_writes_are_bounded_by_the_opened_buffer(start):
    _, server, port = start(max_buffer_bytes=1 << 20)
    c = Raw(port)
    assert c.ask(f"OPEN {RX} {1 << 18} 00000003") == b"0\n"  # exactly 1 MiB: allowed
    assert c.ask(f"CLOSE {RX}") == b"0\n"
    assert c.ask(f"OPEN {RX} {(1 << 18) + 1} 00000003") == b"%d\n" % -errno.ENOMEM
    assert c.ask(f"OPEN {RX} {10 ** 12} 00000003") == b"%d\n" % -errno.ENOMEM
    assert c.ask(f"OPEN {RX} 1024 00000003") == b"0\n"
    t0 = time.monotonic()
    assert c.ask(f"READBUF {RX} {10 ** 12}") == b"%d\n" % -errno.EINVAL  # never attempted
    assert c.ask(f"READBUF {RX} 4097") == b"%d\n" % -errno.EINVAL
    assert time.monotonic() - t0 < 1.0
    assert len(c.readbuf(4096)) == 4096
    assert c.ask(f"OPEN {TX} 256 00000003 CYCLIC") == b"0\n"
    assert c.ask(f"WRITEBUF {TX} {10 ** 12}") == b"%d\n" % -errno.EINVAL  # refused before any payload
    assert c.ask(f"WRITEBUF {TX} 1024", np.zeros(512, "<i2").tobytes()) == b"1024\n"
    assert c.ask("VERSION").startswith(b"0.25.")
    c.close()


# ----------------------------------------------------------------------------- fuzz
def _fuzz_requests(rng: random.Random, n: int) -> list[bytes]:
    """Malformed, truncated, oversized and random requests, and mutations of valid ones."""
    valid = [f"READ {PHY} ensm_mode", f"READ {PHY} OUTPUT altvoltage1 frequency", f"OPEN {RX} 64 00000003",
             f"READBUF {RX} 256", f"OPEN {TX} 16 00000003 CYCLIC", f"CLOSE {RX}", f"GETTRIG {RX}",
             f"SET {RX} BUFFERS_COUNT 4", "TIMEOUT 100", "VERSION", f"READ {RX} DEBUG direct_reg_access",
             f"WRITE {PHY} DEBUG direct_reg_access 10", f"WRITEBUF {TX} 64", f"READ {PHY} INPUT voltage0 hardwaregain"]
    words = ["OPEN", "READBUF", "WRITEBUF", "READ", "WRITE", "CLOSE", "SET", "SETTRIG", "TIMEOUT", "PRINT",
             RX, TX, PHY, "iio:device9", "INPUT", "OUTPUT", "DEBUG", "BUFFER", "CYCLIC", "BUFFERS_COUNT",
             "-1", "0", "4096", str(10 ** 12), "9" * 200, "ffffffff", "00000003", "zzzzzzzz", "\x00", "\xff"]
    out = []
    for _ in range(n):
        kind = rng.randrange(8)
        if kind == 0:  # random bytes, one line
            line = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120))).replace(b"\n", b"") + b"\r\n"
        elif kind == 1:  # random words
            line = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 7))).encode("latin-1") + b"\r\n"
        elif kind == 2:  # oversized line (the server drops the connection)
            line = b"READ " + b"A" * rng.choice((4096, 5000, 70000)) + b"\r\n"
        elif kind == 3:  # huge sizes
            cmd = rng.choice(("READBUF", "WRITEBUF", "OPEN"))
            line = f"{cmd} {rng.choice((RX, TX))} {rng.choice((10 ** 12, 2 ** 63, 10 ** 40))} 00000003\r\n".encode()
        elif kind == 4:  # a WRITE announcing more bytes than sent (truncated payload)
            line = f"WRITE {PHY} ensm_mode {rng.choice((5, 100, 10 ** 6, 10 ** 9))}\r\nfdd".encode()
        elif kind == 5:  # a valid request, cut short
            v = rng.choice(valid).encode()
            line = v[:rng.randrange(1, len(v))]
        elif kind == 6:  # a valid request with one character mutated
            v = bytearray(rng.choice(valid).encode())
            v[rng.randrange(len(v))] = rng.randrange(256)
            line = bytes(v) + b"\r\n"
        else:  # a valid request as is
            line = rng.choice(valid).encode() + b"\r\n"
        out.append(line)
    return out


def _fuzz_worker(port: int, batches: list[list[bytes]], deadline: float, errors: list[str]) -> None:
    for batch in batches:
        if time.monotonic() > deadline:
            return
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.settimeout(0.05)
                for req in batch:
                    try:
                        s.sendall(req)
                        s.recv(1 << 16)  # take what is answered; no framing is assumed
                    except socket.timeout:
                        pass
                    except OSError:
                        break  # the server dropped this connection (framing lost): fine
        except OSError as e:  # connecting must always work: the limit is not reached here
            errors.append(repr(e))


def test_fuzzed_requests_leave_the_server_up_and_bounded(start, caplog):
    _, server, port = start(idle_timeout_s=0.5)
    rng = random.Random(1234)
    requests = _fuzz_requests(rng, 2000)
    batches = [requests[i:i + 20] for i in range(0, len(requests), 20)]  # 100 connections of 20 requests
    workers = 6
    version_and_print_answer(port)  # warm-up: first allocations before measuring
    gc.collect()
    threads_before = threading.active_count()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        deadline = time.monotonic() + 20
        errors: list[str] = []
        with caplog.at_level(logging.ERROR, logger="devices.sim.iiod"):
            pool = [threading.Thread(target=_fuzz_worker, args=(port, batches[k::workers], deadline, errors))
                    for k in range(workers)]
            for t in pool:
                t.start()
            for t in pool:
                t.join(timeout=30)
            assert not any(t.is_alive() for t in pool)
            assert time.monotonic() < deadline, "the fuzz run did not finish in time"
            assert not errors, errors[:3]
            # every fuzz connection ends (closed by the client, or idle timeout for a truncated payload)
            assert wait_for(lambda: server.connections == 0, 5.0), server.connections
            version_and_print_answer(port)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[:2000]
        gc.collect()
        now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert now - base < 8 << 20, f"{(now - base) / 1e6:.1f} MB kept after the fuzz run"
    assert peak - base < 64 << 20, f"peak {(peak - base) / 1e6:.1f} MB during the fuzz run"
    assert wait_for(lambda: threading.active_count() <= threads_before, 5.0), threading.active_count()


# ----------------------------------------------------------------------------- answers during a large read
@TOOLS
def test_iio_info_answers_within_a_second_during_a_large_read(start):
    bench, server, port = start()
    real_read = bench.read

    def slow_read(n):  # a slower machine: this block takes at least 3 s to compute
        with bench._lock:
            time.sleep(3.0)
            return real_read(n)

    bench.read = slow_read
    samples = 1 << 21
    reader = Raw(port, timeout=30)
    assert reader.ask(f"OPEN {RX} {samples} 00000003") == b"0\n"
    done = {}

    def big_read():
        done["data"] = reader.readbuf(4 * samples)
        done["t"] = time.monotonic()

    def lo_write():  # a change for the bench waits for the block, without blocking the others
        w = Raw(port, timeout=30)
        done["write"] = w.write_attr(f"WRITE {PHY} OUTPUT altvoltage0 frequency", b"1000000000\0")
        w.close()

    t_read = threading.Thread(target=big_read)
    t_read.start()
    time.sleep(0.3)
    t_write = threading.Thread(target=lo_write)
    t_write.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    out = subprocess.run(["iio_info", "-u", f"ip:127.0.0.1:{port}"], capture_output=True, text=True, timeout=10)
    t_info = time.monotonic() - t0
    t1 = time.monotonic()
    c = Raw(port)
    mode = c.read_attr(f"READ {PHY} ensm_mode")
    t_attr = time.monotonic() - t1
    c.close()
    still_reading = t_read.is_alive()
    t_read.join(timeout=30)
    t_write.join(timeout=30)
    assert out.returncode == 0, out.stderr
    assert "cf-ad9361-lpc" in out.stdout
    assert mode == b"fdd"
    assert t_info < 1.0, f"iio_info took {t_info:.3f} s during a large read"
    assert t_attr < 1.0, f"an attribute read took {t_attr:.3f} s during a large read"
    assert still_reading, "the large read ended before the measurement"
    assert len(done["data"]) == 4 * samples and done["write"] == b"11\n"
    assert bench.rx_config.freq_hz == pytest.approx(1e9, abs=3)
    reader.close()


# ----------------------------------------------------------------------------- connections
def test_connection_limit_refuses_clearly_and_recovers(start):
    _, server, port = start(max_connections=4)
    held = [Raw(port) for _ in range(4)]
    for c in held:
        assert c.ask("VERSION").startswith(b"0.25.")
    extra = socket.create_connection(("127.0.0.1", port), timeout=5)
    f = extra.makefile("rb")
    assert f.readline() == b"%d\n" % -errno.EBUSY
    assert f.readline() == b""  # then closed
    f.close()
    extra.close()
    assert server.refused == 1
    for c in held:  # the others are untouched
        assert c.ask(f"READ {PHY} ensm_mode") == b"3\n" and c.f.readline() == b"fdd\n"
    held.pop().close()
    assert wait_for(lambda: server.connections == 3, 5.0)
    version_and_print_answer(port)
    for c in held:
        c.close()


def test_idle_connection_is_closed_and_an_active_one_is_not(start):
    _, server, port = start(idle_timeout_s=0.5)
    idle, busy = Raw(port), Raw(port)
    assert idle.ask("VERSION").startswith(b"0.25.")
    t0 = time.monotonic()
    for _ in range(10):  # 1 s of requests every 0.1 s
        assert busy.ask("VERSION").startswith(b"0.25.")
        time.sleep(0.1)
    idle.sock.settimeout(5)
    assert idle.f.readline() == b""  # closed by the server
    assert 0.45 < time.monotonic() - t0 < 5
    assert busy.ask("VERSION").startswith(b"0.25.")
    idle.close()
    busy.close()


def _tx_powerdown(port: int) -> bytes:
    c = Raw(port)
    try:
        return c.read_attr(f"READ {PHY} OUTPUT altvoltage1 powerdown")
    finally:
        c.close()


def test_idle_client_holding_the_tx_buffer_releases_it(start):
    bench, server, port = start(idle_timeout_s=0.4)
    holder = Raw(port)
    assert holder.ask(f"OPEN {TX} 8 00000003 CYCLIC") == b"0\n"
    assert holder.ask(f"WRITEBUF {TX} 32", np.full(16, 1000 * 16, "<i2").tobytes()) == b"32\n"
    assert bench.transmitting and _tx_powerdown(port) == b"0"
    other = Raw(port)
    assert other.ask(f"OPEN {TX} 8 00000003 CYCLIC") == b"%d\n" % -errno.EBUSY
    other.close()
    assert wait_for(lambda: not bench.transmitting, 5.0)
    assert _tx_powerdown(port) == b"1"
    holder.sock.settimeout(5)
    assert holder.f.readline() == b""  # its connection is closed
    other = Raw(port)
    assert other.ask(f"OPEN {TX} 8 00000003 CYCLIC") == b"0\n"  # no EBUSY any more
    other.close()
    holder.close()


CHILD = r"""
import sys, time
import numpy as np
import adi
sdr = adi.Pluto(sys.argv[1])
sdr.sample_rate = 7680000
sdr.tx_cyclic_buffer = True
sdr.tx(np.exp(2j * np.pi * 0.05 * np.arange(4096)) * 1000 * 16)
print("transmitting", flush=True)
time.sleep(60)
"""


def test_client_killed_while_transmitting_releases_the_tx(start):
    bench, server, port = start()
    uri = f"ip:127.0.0.1:{port}"
    child = subprocess.Popen([sys.executable, "-c", CHILD, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        line = {}
        t = threading.Thread(target=lambda: line.setdefault("out", child.stdout.readline()))
        t.start()
        t.join(timeout=20)
        assert line.get("out", "").strip() == "transmitting", child.stderr.read() if child.poll() is not None else ""
        assert bench.transmitting and server.emulator.dma_owner is not None
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    assert wait_for(lambda: not bench.transmitting, 5.0), "the bench still transmits"
    assert _tx_powerdown(port) == b"1"
    # another client transmits at once: no EBUSY
    sdr = adi.Pluto(uri)
    try:
        sdr._ctrl.find_channel("altvoltage1", True).attrs["powerdown"].value = "0"
        sdr.tx_cyclic_buffer = True
        sdr.tx(np.full(1024, 500 * 16 + 0j))
        assert bench.transmitting
        sdr.tx_destroy_buffer()
    finally:
        del sdr
        gc.collect()


# ----------------------------------------------------------------------------- overflow
def test_emulator_time_never_counts_as_a_client_overrun(start):
    bench, server, port = start()
    real_read = bench.read

    def slow_read(n):  # computing a block takes 0.15 s: 4x the 34 ms (4 blocks) the DMA holds
        time.sleep(0.15)
        return real_read(n)

    bench.read = slow_read
    emu = server.emulator
    samples = 1 << 16
    a, b = Raw(port), Raw(port)
    assert a.ask(f"OPEN {RX} {samples} 00000003") == b"0\n"
    assert b.ask(f"OPEN {RX} {samples} 00000003") == b"0\n"
    before = emu.rx_overflows
    lo = b"1000000000\0"

    def stream(buf: Raw) -> None:
        ctl = Raw(port)  # the client's control connection
        for _ in range(4):
            buf.readbuf(4 * samples)
            # between its reads the client retunes: the change waits for the other client's block
            assert ctl.write_attr(f"WRITE {PHY} OUTPUT altvoltage0 frequency", lo) == b"%d\n" % len(lo)
        ctl.close()

    # two clients streaming at once: each waits for the other's blocks, on both connections
    threads = [threading.Thread(target=stream, args=(c,)) for c in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert emu.rx_overflows == before
    # a client that really falls behind still overruns the DMA
    time.sleep(0.2)
    a.readbuf(4 * samples)
    assert emu.rx_overflows == before + 1
    # the first READBUF after OPEN leaves the client time for its set-up requests
    bench.read = real_read
    assert a.ask(f"CLOSE {RX}") == b"0\n"
    assert a.ask(f"OPEN {RX} 1024 00000003") == b"0\n"  # 4 blocks = 0.53 ms
    time.sleep(0.01)
    a.readbuf(4096)
    assert emu.rx_overflows == before + 1
    a.close()
    b.close()
