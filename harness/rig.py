"""Rigs: which radio, which paths to and from the DUT, and how dBFS maps to dBm.

A rig file (YAML, under ``testplans/rigs/``) names the radio by URI, the RF
paths between the radio's ports and the DUT, the calibration that maps
digital full scale to dBm at the radio's ports, and, for simulated rigs, the
simulated bench (radio physics and DUT model). :class:`Rig` is the open rig a
measurement talks to: it plays a waveform at a power *at the DUT input* and
returns captures scaled to sqrt(mW) *at the DUT output*.

Levels at the DUT planes come from the rig's thru calibration
(``<rig stem>.cal.json``, see :mod:`harness.calibration`) when one is attached,
else from the nominal description (port calibration + declared paths).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from devices import CapabilityError, DeviceError, Radio, StreamConfig, driver_option_types, open_radio
from devices.paths import PATH_ELEMENTS, Path as RFPath
from devices.radio import LevelSummary, tx_underflow
from devices.ranging import AutoRange, mean_power_dbfs, peak_dbfs
from harness.config import (ConfigError, LineList, LineMap, Section, build, excerpt, fail_closed, kind_of, load_yaml,
                            name_in)
from harness.calibration import Calibration, CalibrationError, attach_calibration
from harness.capture import CaptureRecord, TxRecord
from harness.errors import LevelError
from harness.stimulus import Waveform


# ------------------------------------------------------------------ the file
@dataclass
class PortSpec:
    channel: int = field(default=0, metadata={"doc": "radio channel used for this port"})
    gain_db: float | None = field(default=None, metadata={
        "doc": "fixed gain; omitted: TX gain is set from the wanted power, RX gain auto-ranges"})


@dataclass
class RxPortSpec(PortSpec):
    reference_channel: int | None = field(default=None, metadata={
        "doc": "RX channel fed by a splitter at the DUT input (paths.reference): the delay measurement's "
               "reference, captured with the DUT output on one clock; omitted: none"})
    reference_gain_db: float | None = field(default=None, metadata={
        "doc": "fixed gain of the reference channel; omitted: set from the stimulus level and paths.reference"})


@dataclass
class CalibrationSpec:
    tx_full_scale_dbm: float | None = field(default=None, metadata={
        "doc": "TX port power of a full-scale CW at TX gain 0 dB; default: the device's nominal value"})
    rx_full_scale_dbm: float | None = field(default=None, metadata={
        "doc": "RX port power reaching digital full scale at RX gain 0 dB; default: the device's nominal value"})
    # The thru calibration (harness calibrate): what to measure and how long it stays valid.
    frequencies_hz: list[float] = field(default_factory=list, metadata={
        "doc": "centre frequencies to calibrate at, besides those of the plans given to 'harness calibrate'"})
    levels_dbm: list[float] = field(default_factory=list, metadata={
        "doc": "DUT-input powers to calibrate at, besides those of the plans"})
    sample_rate_hz: float | None = field(default=None, metadata={
        "doc": "sample rate for frequencies listed here (default: the plans' rate, else 7.68 MHz)"})
    max_age_days: float = field(default=30.0, metadata={
        "doc": "a real rig refuses to run on an older calibration (unless --uncalibrated)", "bounds": (0.0, 3650.0)})
    file: str | None = field(default=None, metadata={
        "doc": "calibration file, relative to the rig file (default: <rig stem>.cal.json)"})


@dataclass
class TxBand:
    low_hz: float = field(metadata={"doc": "lowest frequency the transmitted band may reach"})
    high_hz: float = field(metadata={"doc": "highest frequency the transmitted band may reach"})

    def __post_init__(self):
        if not (math.isfinite(self.low_hz) and math.isfinite(self.high_hz) and self.low_hz < self.high_hz):
            raise ValueError(f"a TX band needs low < high, got {self.low_hz:g}..{self.high_hz:g} Hz")


@dataclass
class RigLimits:
    max_rx_input_dbm: float = field(default=10.0, metadata={"doc": "damage level of the RX port"})
    max_dut_input_dbm: float | None = field(default=None, metadata={"doc": "never drive the DUT harder"})
    tx_bands: list[TxBand] = field(default_factory=list, metadata={
        "doc": "where a rig server lets clients transmit ({low, high} ranges the whole TX band must lie in); "
               "empty: a rig server transmits nowhere"})

    def __post_init__(self):
        # a NaN or infinite protection limit would compare false everywhere: no protection at all
        for name in ("max_rx_input_dbm", "max_dut_input_dbm"):
            v = getattr(self, name)
            if (v is not None or name == "max_rx_input_dbm") and not (isinstance(v, (int, float))
                                                                     and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite power in dBm, got {excerpt(v)}")


@dataclass
class PowerMeterSpec:
    """The reference power sensor of ``harness calibrate --reference meter``: a rig resource."""

    kind: Literal["sim", "manual"] = field(metadata={
        "doc": "sim: a simulated sensor at the DUT input plane of a simulated bench; manual: a meter the "
               "operator reads (prompted, or --meter-reading)"})
    uncertainty_db: float = field(default=0.1, metadata={"doc": "stated uncertainty (k = 2)",
                                                         "bounds": (0.0, 10.0)})
    resolution_db: float = field(default=0.01, metadata={"doc": "display resolution", "bounds": (0.0, 1.0)})
    error_db: float = field(default=0.0, metadata={
        "doc": "sim only: the sensor's true error (unknown to the harness, within its uncertainty)",
        "bounds": (-10.0, 10.0)})


@dataclass
class RigSpec:
    name: str
    device: str  # URI
    tx_to_dut: RFPath
    dut_to_rx: RFPath
    description: str = ""
    tx: PortSpec = field(default_factory=PortSpec)
    rx: RxPortSpec = field(default_factory=RxPortSpec)
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)
    limits: RigLimits = field(default_factory=RigLimits)
    #: DUT input plane (a splitter there) to the reference RX channel, None: no reference channel
    reference_path: RFPath | None = None
    sim_reference_path: RFPath | None = None
    dut: Any = None  # simulated DUT model (sim rigs only)
    dut_model: str | None = None
    sim: Any = None  # the simulated radio's physics: the sim: driver's 'sim' option (sim rigs only)
    #: physical paths of a simulated bench when they differ from the declared (nominal) ones
    sim_tx_to_dut: RFPath | None = None
    sim_dut_to_rx: RFPath | None = None
    file: str | None = None
    extra: dict = field(default_factory=dict)
    #: "pluto": the rig starts an emulated PlutoSDR (IIOD on 127.0.0.1) streaming the simulated bench
    emulate: str | None = None
    #: SHA-256 of the sections that define the RF set-up (a calibration is only valid for the same set-up)
    setup_sha256: str = ""
    #: SHA-256 of what the file declares of that set-up (ports, paths, nominal levels) without its device URI
    #: and simulated physics: what a rig server's client must declare alike (harness.calibration.bench_setup)
    declared_sha256: str = ""
    #: run option (--uncalibrated): ignore any calibration, use the nominal paths
    uncalibrated: bool = False
    #: how the DUT is replaced by a thru (thru and floor steps, calibration): "switch" (an RF switch the
    #: radio drives; the simulated bench has one), "manual" (the operator connects it), "none"
    dut_bypass: str = "none"
    #: the reference power sensor for calibration (None: the rig declares none)
    power_meter: PowerMeterSpec | None = None
    #: what the rig file declares, as a rig server describes it to its clients (:func:`declared_sections`)
    declared: dict = field(default_factory=dict)
    #: a rig built from a rig server's description (``--rig zmq://``): ``file`` is then the server's URI
    served: bool = False
    #: the served bench's thru calibration (harness.calibration.Calibration) on a served rig; None: it has none
    served_calibration: Any = None

    @property
    def calibration_file(self) -> Path | None:
        """Where this rig's thru calibration lives (None for a rig built in memory or served by a rig server)."""
        if self.file is None or self.served:
            return None
        rig = Path(self.file)
        if self.calibration.file:
            return rig.parent / self.calibration.file
        return rig.with_name(rig.stem + ".cal.json")

    @property
    def simulated(self) -> bool:
        """The RF is the simulator's: the sim: driver, or an emulated board streaming a simulated bench."""
        return self.emulate is not None or self.device.split(":", 1)[0].strip().lower() == "sim"

    def bench_options(self, seed: int | None = None) -> dict[str, Any]:
        """A simulated rig's bench as options of the sim: driver: the radio's physics, the DUT, the physical
        paths (``sim: paths:``, else the declared ones) and the seed (None: the ``sim`` section's)."""
        out = {"sim": self.sim, "dut": self.dut, "tx_path": self.sim_tx_to_dut or self.tx_to_dut,
               "rx_path": self.sim_dut_to_rx or self.dut_to_rx, "seed": seed}
        ref = self.sim_reference_path or self.reference_path
        if ref is not None:  # (the option only appears on a rig with a splitter: other drivers never see it)
            out["reference_path"] = ref
        return out

    def radio_options(self, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        """The URI and options :meth:`Rig.open` opens the radio with.

        A simulated rig is opened by the sim: driver, which builds its bench
        from :meth:`bench_options` and, for ``emulate``, serves it as that
        board and opens the board's driver at it.
        """
        if not self.simulated:
            return self.device, {}
        return ("sim:" if self.emulate else self.device), {**self.bench_options(seed), "emulate": self.emulate}


@dataclass
class _RigFile:
    name: str
    device: str = field(metadata={"doc": "radio URI: sim:, pluto:ip:192.168.2.1, soapy:driver=uhd, ..."})
    description: str = ""
    tx: PortSpec = field(default_factory=PortSpec)
    rx: RxPortSpec = field(default_factory=RxPortSpec)
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)
    limits: RigLimits = field(default_factory=RigLimits)
    emulate: Literal["pluto"] | None = field(default=None, metadata={
        "doc": "start an emulated board of this kind streaming the sim bench; device is then e.g. 'pluto:'"})
    dut_bypass: Literal["switch", "manual", "none"] = field(default="none", metadata={
        "doc": "how thru/floor steps replace the DUT: switch (an RF switch the radio drives), manual (the "
               "operator is asked), none (such steps are refused)"})
    power_meter: PowerMeterSpec | None = field(default=None, metadata={
        "doc": "reference power sensor for 'harness calibrate --reference meter' (kind: sim or manual)"})


_SECTIONS = ("paths", "dut", "sim")
#: rig sections (and calibration fields) that define the RF set-up; editing them voids a calibration.
#: The device URI stays in: on the bench another URI can be another board or driver, and a simulated bench's
#: radio has no serial to check. A client of a rig server (zmq://) is not checked against its own URI but
#: against the served bench's hash: the same bench reached over the network is the same RF set-up, and its
#: table belongs to it (harness.calibration.bench_setup).
_SETUP_SECTIONS = ("device", "tx", "rx", "paths", "sim")
#: the part a rig file declares (no device, no simulated physics): a client declares it as the served bench does
_DECLARED_SECTIONS = ("tx", "rx", "paths")
_SETUP_CAL_FIELDS = ("tx_full_scale_dbm", "tx_full_scale", "rx_full_scale_dbm", "rx_full_scale")


#: what a rig server tells its clients of its rig file (the declared rig, never the simulated bench: no ``sim``,
#: ``dut`` or ``emulate``), minus what is the server's own: ``calibration.file`` (its path there) and a simulated
#: power sensor's true ``error_db``
_DESCRIBED_SECTIONS = ("name", "description", "tx", "rx", "paths", "calibration", "limits", "dut_bypass",
                       "power_meter")
_NOT_DESCRIBED = {"calibration": ("file",), "power_meter": ("error_db",)}
#: largest declared description a rig server sends or a client accepts (JSON bytes; a rig file is at most 1 MiB)
MAX_DECLARED_BYTES = 2 << 20


def declared_sections(data: dict) -> dict:
    """The declared part of a rig file's data as plain JSON values (see :data:`_DESCRIBED_SECTIONS`); its
    ``tx``, ``rx``, ``paths`` and port calibration hash to the rig's ``declared_sha256``."""
    out = {}
    for key in _DESCRIBED_SECTIONS:
        if key in data:
            v = data[key]
            if isinstance(v, dict) and key in _NOT_DESCRIBED:
                v = {k: x for k, x in v.items() if k not in _NOT_DESCRIBED[key]}
            out[key] = v
    return json.loads(json.dumps(out, default=str))


def setup_hash(data: dict, sections: tuple[str, ...] = _SETUP_SECTIONS) -> str:
    """SHA-256 of a rig file's RF set-up (device, ports, paths, simulated physics, port calibration);
    ``sections=_DECLARED_SECTIONS``: of its declared part only.

    Name, description, limits, the DUT model and the calibration's own
    settings are left out: changing them does not change what a thru measures.
    """
    setup = {k: data[k] for k in sections if k in data}
    cal = data.get("calibration")
    if isinstance(cal, dict):
        setup["calibration"] = {k: cal[k] for k in _SETUP_CAL_FIELDS if k in cal}
    text = json.dumps(setup, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _parse_path(node: Any, what: str, file: str | None, line: int | None) -> RFPath:
    sec = Section(node, what, file, line)
    if node is None:
        return RFPath([])
    if not isinstance(node, list):
        raise sec.error(f"expected a list of path elements (each with 'kind'), got {kind_of(node)}")
    if len(node) > MAX_PATH_ELEMENTS:
        raise sec.error(f"{len(node)} path elements; at most {MAX_PATH_ELEMENTS} allowed")
    elements = []
    for i, item in enumerate(node):
        iline = node.item_lines[i] if hasattr(node, "item_lines") else line
        isec = Section(item, f"{what}[{i}]", file, iline)
        if not isinstance(item, dict) or "kind" not in item:
            raise isec.error(f"a path element needs 'kind' (one of: {', '.join(sorted(PATH_ELEMENTS))})")
        cls = name_in(item, "kind", PATH_ELEMENTS, isec, "path element kind")
        elements.append(build(cls, item, f"{what}[{i}] ({item['kind']})", file, iline, ignore=("kind",)))
    return RFPath(elements)


def _parse_paths(node: Any, what: str, file: str | None, line: int | None) -> tuple[RFPath, RFPath]:
    sec = Section(node, what, file, line)
    if not isinstance(node, dict):
        raise sec.error(f"expected a mapping with 'tx_to_dut' and 'dut_to_rx', got {kind_of(node)}")
    for key in node:
        if key not in ("tx_to_dut", "dut_to_rx", "reference"):
            raise sec.error(f"unknown path {excerpt(key)}; known: dut_to_rx, reference, tx_to_dut", key)
    for key in ("tx_to_dut", "dut_to_rx"):
        if key not in node:
            raise sec.error(f"missing path {key!r}")
    return (_parse_path(node["tx_to_dut"], f"{what}.tx_to_dut", file, node.line_of("tx_to_dut")),
            _parse_path(node["dut_to_rx"], f"{what}.dut_to_rx", file, node.line_of("dut_to_rx")))


def parse_dut_model(node: Any, what: str, file: str | None, line: int | None,
                    models: dict[str, type]) -> tuple[str, Any]:
    """Build the DUT model named by the section's ``model`` field from ``models`` (name -> dataclass)."""
    sec = Section(node, what, file, line)
    if not isinstance(node, dict) or "model" not in node:
        raise sec.error(f"a simulated DUT needs 'model' (one of: {', '.join(sorted(models))})")
    cls = name_in(node, "model", models, sec, "DUT model")
    return node["model"], build(cls, node, f"{what} ({node['model']})", file, line, ignore=("model",))


def _reference_path(node: Any, what: str, file: str | None) -> RFPath | None:
    """The optional ``reference`` path of a paths section (None when absent)."""
    if not isinstance(node, dict) or "reference" not in node:
        return None
    return _parse_path(node["reference"], f"{what}.reference", file, node.line_of("reference"))


#: a path has at most this many elements
MAX_PATH_ELEMENTS = 50


@fail_closed("rig")
def load_rig(path: str | Path) -> RigSpec:
    """Read and validate a rig file; raises :class:`ConfigError` naming file, line and field, and nothing else."""
    return _spec_of(load_yaml(path), str(path))


def _spec_of(data: LineMap, file: str) -> RigSpec:
    head = build(_RigFile, data, "rig", file, 1, ignore=_SECTIONS)
    if "paths" not in data:
        raise ConfigError("rig: missing section 'paths' (tx_to_dut, dut_to_rx)", file, 1)
    tx_path, rx_path = _parse_paths(data["paths"], "paths", file, data.line_of("paths"))
    ref_path = _reference_path(data["paths"], "paths", file)
    spec = RigSpec(name=head.name, device=head.device, tx_to_dut=tx_path, dut_to_rx=rx_path,
                   description=head.description, tx=head.tx, rx=head.rx, calibration=head.calibration,
                   limits=head.limits, file=file, setup_sha256=setup_hash(data), emulate=head.emulate,
                   declared_sha256=setup_hash(data, _DECLARED_SECTIONS),
                   dut_bypass=head.dut_bypass, reference_path=ref_path, power_meter=head.power_meter,
                   declared=declared_sections(data), extra={"calibration_line": data.line_of("calibration") or 1})
    if (head.rx.reference_channel is None) != (ref_path is None):
        raise ConfigError("rig: a reference channel needs both rx.reference_channel (the RX channel the splitter "
                          "feeds) and paths.reference (DUT input plane to that channel, the splitter first)", file,
                          data.line_of("rx") if "rx" in data else data.line_of("paths"))
    if head.rx.reference_channel is not None and head.rx.reference_channel == head.rx.channel:
        raise ConfigError(f"rig: rx.reference_channel {head.rx.reference_channel} is the DUT output's channel",
                          file, data.line_of("rx"))
    if spec.emulate and not spec.device.startswith(f"{spec.emulate}:"):
        raise ConfigError(f"rig: an emulated {spec.emulate} needs device '{spec.emulate}:' (its address is filled in "
                          f"when the emulator starts)", file, data.line_of("device"))
    if spec.simulated:
        types = driver_option_types("sim")  # the sim: driver's sections: its DUT models and its physics
        if "dut" not in data:
            raise ConfigError("rig: a simulated rig needs a 'dut' section with the DUT model", file, 1)
        spec.dut_model, spec.dut = parse_dut_model(data["dut"], "dut", file, data.line_of("dut"), types["dut"])
        sim_node = data.get("sim") or LineMap()
        spec.sim = build(types["sim"], sim_node, "sim", file, data.line_of("sim"), ignore=("paths",))
        if isinstance(sim_node, dict) and "paths" in sim_node:
            spec.sim_tx_to_dut, spec.sim_dut_to_rx = _parse_paths(sim_node["paths"], "sim.paths", file,
                                                                  sim_node.line_of("paths"))
            spec.sim_reference_path = _reference_path(sim_node["paths"], "sim.paths", file)
    else:
        for key in ("dut", "sim"):
            if key in data:
                raise ConfigError(f"rig: section {key!r} only applies to simulated (sim:) rigs", file,
                                  data.line_of(key))
    return spec


def is_server_uri(text: str) -> bool:
    """Whether a ``--rig`` argument names a rig server (``zmq://HOST:PORT``) rather than a rig file."""
    return str(text).strip().lower().startswith("zmq://")


@fail_closed("rig")
def load_served_rig(uri: str) -> RigSpec:
    """The rig a rig server serves at ``uri`` (``--rig zmq://HOST:PORT[?...]``), from its description: its
    declared ports, paths, nominal levels and limits, with the server as its device and the bench's table as
    its calibration; exactly the rig a client file naming the served bench and ``device: uri`` would be.
    Raises :class:`ConfigError` naming the URI (exit 2) when the server cannot be reached or cannot describe
    its rig (an older server: give a rig file instead)."""
    from devices.zmq import describe_server  # noqa: PLC0415 - pyzmq only for served rigs

    try:
        hello = describe_server(uri)
    except DeviceError as e:
        why = str(e).removeprefix(f"{uri}: ")
        raise ConfigError(f"cannot read the rig the server describes: {why}; nothing was run", uri) from None
    return rig_from_description(uri, hello.get("rig"), hello.get("software"))


def rig_from_description(uri: str, rig: Any, software: Any = None) -> RigSpec:
    """A :class:`RigSpec` whose device is ``uri`` from a rig server's description (``hello``'s ``rig``), checked
    as a rig file is (ConfigError naming the URI)."""
    rig = rig if isinstance(rig, dict) else {}
    declared = rig.get("declared")
    if not isinstance(declared, dict):
        sw = f"harness {software[:40]}" if isinstance(software, str) else "an older harness"
        raise ConfigError(f"the rig server ({sw}) cannot describe its rig: give a rig file whose device is this "
                          f"URI instead (--rig FILE, its ports, paths and nominal levels those of the served rig "
                          f"file)", uri)
    if len(json.dumps(declared, default=str)) > MAX_DECLARED_BYTES:
        raise ConfigError(f"the rig server's description exceeds {MAX_DECLARED_BYTES} bytes", uri)
    declared = {k: v for k, v in declared.items() if k in _DESCRIBED_SECTIONS}  # a newer server's extras: ignored
    # the device is the URI (checked when it was asked: it may carry long key paths a rig file's field refuses)
    data = _lines({**declared, "device": "zmq:"}, uri)
    if "name" not in data:
        raise ConfigError("the rig server's description names no rig", uri)
    spec = _spec_of(data, uri)
    spec.device = uri
    if spec.declared_sha256 != rig.get("declared_sha256"):
        raise ConfigError("the rig server's description does not hash to the set-up it declares "
                          "(declared_sha256): the description is damaged or the server's harness differs", uri)
    setup = rig.get("setup_sha256")
    spec.setup_sha256 = setup if isinstance(setup, str) else ""
    spec.served = True
    table = rig.get("calibration")
    if table is not None:
        try:
            spec.served_calibration = Calibration.from_dict(table)
        except CalibrationError as e:
            raise ConfigError(f"the rig server's calibration table: {e.message}", uri) from None
        from devices.zmq_wire import server_address  # noqa: PLC0415 - pyzmq only for served rigs

        spec.served_calibration.source = f"{server_address(uri)} (the rig server's table)"
    else:
        why = rig.get("calibration_status")
        spec.extra["served_calibration_reason"] = str(why)[:300] if why else "the rig server has no calibration"
    return spec


def _lines(v: Any, name: str) -> Any:
    """Plain JSON values as the YAML loader's LineMap/LineList (no line numbers: the URI is named instead)."""
    if isinstance(v, dict):
        out = LineMap((str(k), _lines(x, name)) for k, x in v.items())
        out.file, out.line, out.key_lines = name, None, {}
        return out
    if isinstance(v, list):
        out = LineList(_lines(x, name) for x in v)
        out.file, out.line, out.item_lines = name, None, [None] * len(out)
        return out
    return v


# ------------------------------------------------------------------ runtime
#: what the transmitter is playing (kept under its historical name)
TxSetting = TxRecord


_underflow = tx_underflow


class Rig:
    """An open rig: a radio plus the paths and calibration around the DUT."""

    #: RX auto-ranging: aim the peak here, accept peaks in [low, high] dBFS
    TARGET_PEAK_DBFS = -6.0
    PEAK_WINDOW_DBFS = (-20.0, -1.0)
    TX_PEAK_DBFS = -1.0  # digital back-off of the waveform peak
    #: a capture that lost samples (overflow, drops, TX underflow) is taken again this many times at most
    INTEGRITY_RETRIES = 3

    def __init__(self, spec: RigSpec, radio: Radio):
        self.spec = spec
        self.radio = radio
        self.caps = radio.capabilities
        self.device_time_s = 0.0  # time spent in radio calls (benchmarks split it out)
        self._rx_gain_db = spec.rx.gain_db if spec.rx.gain_db is not None else \
            self.caps.rx_gain_range_db.clip((self.caps.rx_gain_range_db.low + self.caps.rx_gain_range_db.high) / 2)
        self._freq_hz: float | None = None
        self._rate_hz: float | None = None
        self._rx_bw_hz: float | None = None
        self.tx_setting: TxSetting | None = None
        self.dut_bypassed = False
        #: asks the operator to make a connection (``input``-like; for dut_bypass: manual), None: nobody
        self.operator: Callable[[str], Any] | None = None
        #: the thru calibration in use (harness.calibration.Calibration), None: nominal paths
        self.calibration = None
        #: how the DUT-plane levels are obtained, for the results header
        self.calibration_status: dict = {"applied": False, "reason": "nominal paths"}
        #: the URI and options the radio was opened with (:meth:`open`): a rig server opens it again so after a loss
        self.opened_with: tuple[str, dict] | None = None

    # ----- opening
    @classmethod
    def open(cls, spec: RigSpec, seed: int | None = None, calibration: Any = "auto") -> "Rig":
        """Open the radio and attach the rig's calibration.

        ``calibration``: ``"auto"`` (default) loads ``spec.calibration_file`` and
        refuses (:class:`harness.calibration.CalibrationError`, a ConfigError)
        a real rig without a valid one, and any rig with an invalid one, unless
        ``spec.uncalibrated``; ``"optional"`` never refuses (inspection);
        ``"off"`` uses the nominal paths; a ``Calibration`` object is checked and used.
        """
        uri, options = spec.radio_options(seed)
        radio = open_radio(uri, **options)  # an emulated board's server stops when its radio closes
        try:
            served = getattr(radio, "server_rig", None) or {}
            if spec.served and served.get("declared_sha256") != spec.declared_sha256:
                raise ConfigError(f"the rig server now serves another rig than the {spec.name!r} it described "
                                  f"(restarted on another rig file?): nothing was run; run again", spec.file)
            rig = cls(spec, radio)
            rig.opened_with = (uri, options)
            for side in ("tx", "rx"):  # nominal levels: the rig's declared ones, else the device's
                name = f"{side}_full_scale_dbm"
                if getattr(spec.calibration, name) is None and getattr(rig.caps, name) is None:
                    raise ConfigError(f"rig: calibration.{name} is missing and the {rig.caps.driver} device states "
                                      f"no nominal level: declare it (a datasheet value; a thru calibration then "
                                      f"measures the truth)", spec.file, spec.extra.get("calibration_line", 1))
            attach_calibration(rig, calibration)
            return rig
        except BaseException:
            radio.close()
            raise

    def close(self) -> None:
        self.radio.close()

    def bypass_dut(self, on: bool) -> None:
        """Put a thru in place of the DUT (True) or the DUT back (False), as the rig file declares.

        ``dut_bypass: switch``: the radio's RF switch (the simulated bench has
        one); ``manual``: :attr:`operator` is asked to connect it (the
        transmitter is off meanwhile); ``none``: refused (validation refuses
        thru steps on such a rig before anything transmits).
        """
        how = self.spec.dut_bypass
        if how == "switch":
            try:
                self.radio.set_dut_bypass(bool(on))
            except CapabilityError as e:
                raise DeviceError(f"rig {self.spec.name!r} declares a DUT bypass switch, but {e}") from None
        elif how == "manual":
            if self.operator is None:
                raise DeviceError(f"rig {self.spec.name!r}: the thru is connected by hand (dut_bypass: manual) "
                                  f"and nobody can be asked (no terminal, no --yes)")
            self.stop()
            self.operator("Connect the thru in place of the DUT (DUT input plane to DUT output plane)." if on
                          else "Reconnect the DUT in place of the thru.")
        else:
            raise DeviceError(f"rig {self.spec.name!r} declares no DUT bypass (dut_bypass: none): thru and "
                              f"floor steps cannot replace the DUT")
        self.dut_bypassed = bool(on)

    # ----- timing against the transmitter (the delay measurement)
    def timing_method(self) -> str | None:
        """How this rig times captures against its transmitter: ``"reference_channel"`` (the rig declares a
        splitter at the DUT input onto an RX channel the radio captures with the DUT output's, on one
        clock), ``"hardware_time"`` (the radio's timestamped streams), or None (:meth:`timing_problem`)."""
        ref = self.spec.rx.reference_channel
        if ref is not None and "coherent_rx" in self.caps.timing and ref < self.caps.rx_channels:
            return "reference_channel"
        if "hardware_time" in self.caps.timing:
            return "hardware_time"
        return None

    def timing_problem(self) -> str | None:
        """Why captures cannot be timed against the transmitter on this rig (None: they can). A method the board
        has but its connection withholds (a remote radio's server without the feature) is the connection's
        fault, and named as such."""
        if self.timing_method() is not None:
            return None
        ref = self.spec.rx.reference_channel
        wanted = ("coherent_rx", "hardware_time") if ref is not None else ("hardware_time",)
        withheld, link = self.radio.timing_withheld(wanted)
        hw = None if "hardware_time" in withheld else "the radio has no hardware time"
        if ref is not None:
            if "coherent_rx" in withheld:
                return f"the rig declares reference channel {ref}, but {link}" + (f", and {hw}" if hw else "")
            why = ("cannot capture RX channels together on one clock" if "coherent_rx" not in self.caps.timing
                   else f"has no RX channel {ref} ({self.caps.rx_channels} RX channel"
                        f"{'s' if self.caps.rx_channels != 1 else ''})")
            return (f"the rig declares reference channel {ref}, but {self.caps.driver} {why}, and "
                    f"{hw or link}")
        if hw is None:
            return f"{link}, and the rig declares no reference channel"
        return (f"the radio has no hardware time and the rig declares no reference channel ({self.caps.driver}: "
                f"declare rx.reference_channel and paths.reference for a splitter at the DUT input)")

    def bypass_problem(self) -> str | None:
        """Why a thru cannot be put in place of the DUT on this rig (None: it can)."""
        how = self.spec.dut_bypass
        if how == "none":
            return ("the rig declares no DUT bypass (dut_bypass: none): declare 'switch' for an RF switch the "
                    "radio drives or 'manual' to be asked to connect the thru")
        if how == "manual" and self.operator is None:
            return "the thru is connected by hand (dut_bypass: manual): run from a terminal or give --yes"
        return None

    def __enter__(self) -> "Rig":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- calibration
    @property
    def tx_full_scale_dbm(self) -> float:
        """TX port power of a full-scale CW at TX gain 0 dB: the rig file's value, else the device's nominal."""
        return self._full_scale("tx")

    @property
    def rx_full_scale_dbm(self) -> float:
        """RX port power reaching full scale at RX gain 0 dB: the rig file's value, else the device's nominal."""
        return self._full_scale("rx")

    def _full_scale(self, direction: str) -> float:
        name = f"{direction}_full_scale_dbm"
        v = getattr(self.spec.calibration, name)
        v = getattr(self.caps, name) if v is None else v
        if v is None:
            raise LevelError(f"rig {self.spec.name}: no {direction.upper()} calibration (calibration.{name}) and "
                             f"the device states no nominal value")
        return v

    def input_dbm_at_0dbfs(self, freq_hz: float, power_dbm: float) -> float:
        """DUT-input power (dBm) of a 0 dBFS-RMS waveform at TX gain 0 dB, for a wanted ``power_dbm``.

        From the calibration (interpolated over frequency and level) when one
        is attached, else the port calibration plus the declared tx_to_dut path.
        """
        if self.calibration is not None:
            return self.calibration.input_dbm_at_0dbfs(freq_hz, power_dbm)
        return self.tx_full_scale_dbm + float(self.spec.tx_to_dut.gain_db_at(freq_hz))

    def output_dbm_at_0dbfs(self, freq_hz: float) -> float:
        """DUT-output power (dBm) that reads 0 dBFS at RX gain 0 dB (calibrated, else nominal)."""
        if self.calibration is not None:
            return self.calibration.output_dbm_at_0dbfs(freq_hz)
        return self.rx_full_scale_dbm - float(self.spec.dut_to_rx.gain_db_at(freq_hz))

    def rx_port_dbm(self, freq_hz: float, dut_output_dbm: float) -> float:
        """Power at the RX port for ``dut_output_dbm`` at the DUT output (calibrated, else nominal paths)."""
        return dut_output_dbm + self.rx_full_scale_dbm - self.output_dbm_at_0dbfs(freq_hz)

    def calibration_problem(self, freq_hz: float, level_dbm: float | None) -> str | None:
        """Why the attached calibration cannot serve this LO and DUT-input level (None: it can, or none is used)."""
        if self.calibration is None:
            return None
        return self.calibration.problem(freq_hz, level_dbm)

    # ----- checks
    def check(self, freq_hz: float, sample_rate_hz: float, span_hz: float = 0.0, tx_span_hz: float = 0.0) -> None:
        """Raise CapabilityError if the radio cannot tune/sample there, or its RX filter cannot pass
        +-``span_hz`` around the LO flat (or its TX filter the stimulus out to +-``tx_span_hz``), before
        anything transmits: what lies on a filter's skirt would read low, never to be trusted."""
        self.caps.check_frequency(freq_hz)
        self.caps.check_sample_rate(sample_rate_hz)
        self.caps.check_channel(self.spec.tx.channel, "tx")
        self.caps.check_channel(self.spec.rx.channel, "rx")
        if span_hz > sample_rate_hz / 2 + 1e-6:
            raise CapabilityError(f"the analysis reads ±{span_hz / 1e6:.4g} MHz from the LO, beyond the Nyquist "
                                  f"band ±{sample_rate_hz / 2e6:.4g} MHz of {sample_rate_hz / 1e6:.6g} MS/s")
        for tx, span, what in ((False, span_hz, "the analysis reads"), (True, tx_span_hz, "the stimulus reaches")):
            flat = self.caps.flat_span_hz(tx)
            if span > flat + 1e-6:
                bw = (self.caps.tx_rf_bandwidth_range_hz or self.caps.rf_bandwidth_range_hz) if tx else \
                    self.caps.rf_bandwidth_range_hz
                raise CapabilityError(
                    f"{what} ±{span / 1e6:.4g} MHz from the LO, beyond the {self.caps.driver} "
                    f"{'TX' if tx else 'RX'} usable bandwidth ±{flat / 1e6:.4g} MHz (its analog filter's flat "
                    f"part at the widest setting, {bw.high / 1e6:.6g} MHz); there it would be read through "
                    f"the filter's skirt: move the LO closer or narrow the span")

    # ----- settings
    def rf_bandwidth_hz(self, sample_rate_hz: float, span_hz: float = 0.0, tx: bool = False) -> float:
        """Analogue bandwidth for a rate when the analysis reads (or the stimulus reaches) out to ``span_hz``.

        The default 0.8 x rate, widened until +-span_hz lies in the filter's flat part;
        :meth:`check` refuses a span the radio's filter cannot pass flat.
        """
        caps = self.caps
        rng = (caps.tx_rf_bandwidth_range_hz or caps.rf_bandwidth_range_hz) if tx else caps.rf_bandwidth_range_hz
        flat = caps.tx_flat_fraction if tx else caps.rx_flat_fraction
        return rng.clip(max(0.8 * sample_rate_hz, 2 * span_hz / flat))

    def tune(self, freq_hz: float, sample_rate_hz: float, span_hz: float = 0.0) -> None:
        """Set TX and RX centre frequency and rate (TX muted until the next :meth:`play`)."""
        if self.radio.transmitting:
            self.stop()
        self._freq_hz, self._rate_hz = freq_hz, sample_rate_hz
        self._rx_bw_hz = self.rf_bandwidth_hz(sample_rate_hz, span_hz)
        self.tx_setting = None
        self._configure_rx()

    def _stream(self, gain_db: float, channel: int, rf_bandwidth_hz: float | None = None) -> StreamConfig:
        if self._freq_hz is None:
            raise DeviceError("rig: tune() before playing or capturing")
        return StreamConfig(freq_hz=self._freq_hz, sample_rate_hz=self._rate_hz, gain_db=gain_db,
                            rf_bandwidth_hz=rf_bandwidth_hz or 0.8 * self._rate_hz, channel=channel)

    def _configure_rx(self) -> None:
        t0 = time.perf_counter()
        try:
            actual = self.radio.configure_rx(self._stream(self._rx_gain_db, self.spec.rx.channel, self._rx_bw_hz))
        finally:
            self.device_time_s += time.perf_counter() - t0
        self._rx_gain_db = actual.gain_db

    #: a timed start is commanded this far ahead of the device clock on a board whose clock runs in real time
    TIMED_START_LEAD_S = 0.05

    def play(self, waveform: Waveform, power_dbm: float | None = None, timed: bool = False) -> TxSetting:
        """Transmit ``waveform`` cyclically at ``power_dbm`` (default: its own) at the DUT input.

        ``timed`` on a hardware-time rig: sample 0 leaves at a commanded device time (recorded as the
        TX record's ``start_time_ns``), and this returns once the device clock has passed it.
        """
        if self._freq_hz is None:
            raise DeviceError("rig: tune() before play()")
        if abs(waveform.sample_rate_hz - self._rate_hz) > 1e-6 * self._rate_hz:
            raise DeviceError(f"waveform rate {waveform.sample_rate_hz:g} differs from the rig rate {self._rate_hz:g}")
        power = waveform.power_dbm if power_dbm is None else power_dbm
        lim = self.spec.limits.max_dut_input_dbm
        if lim is not None and power > lim + 1e-9 and not self.dut_bypassed:  # a thru needs no protection
            raise LevelError(f"{power:.2f} dBm at the DUT input exceeds the rig limit max_dut_input_dbm {lim:g} dBm")
        # power at the DUT input = a0 + TX gain + digital RMS level (dBFS)
        a0 = self.input_dbm_at_0dbfs(self._freq_hz, power)
        x = waveform.samples
        peak = float(max(np.max(np.abs(x.real)), np.max(np.abs(x.imag))))
        best_rms_dbfs = self.TX_PEAK_DBFS - 20 * math.log10(peak)  # RMS is 1.0 -> 0 dB
        gr = self.caps.tx_gain_range_db
        need = power - a0 - best_rms_dbfs
        if need > gr.high + 1e-9:
            raise LevelError(
                f"{power:.2f} dBm at the DUT input is out of reach: the radio delivers at most "
                f"{a0 + gr.high + best_rms_dbfs:.2f} dBm there with this waveform "
                f"(crest factor {waveform.crest_factor_db:.1f} dB)")
        gain = max(need, gr.low)
        if gr.step:  # round down: the digital level makes up the remainder
            gain = gr.low + math.floor((gain - gr.low) / gr.step + 1e-9) * gr.step
        t0 = time.perf_counter()
        try:
            from harness.measurements import occupied_span_hz  # noqa: PLC0415 - measurements load late

            # the widest TX filter: what the stimulus puts off its centre (tones, neighbours) is then played
            # at its calibrated level, not on the filter's skirt (at 40 MHz: 0.01 dB at ±12 MHz)
            tx_bw = max(self.rf_bandwidth_hz(self._rate_hz, occupied_span_hz(waveform), tx=True),
                        (self.caps.tx_rf_bandwidth_range_hz or self.caps.rf_bandwidth_range_hz).high)
            actual = self.radio.configure_tx(self._stream(gain, self.spec.tx.channel, tx_bw))
            rms_dbfs = power - a0 - actual.gain_db
            if rms_dbfs < -60.0:
                raise LevelError(f"{power:.2f} dBm at the DUT input is below what the TX can set cleanly "
                                 f"({rms_dbfs:.1f} dBFS at minimum gain)")
            if rms_dbfs > best_rms_dbfs + 0.5:
                raise LevelError(f"TX gain setting {actual.gain_db:g} dB leaves too little digital headroom")
            at_ns = None
            if timed and self.timing_method() == "hardware_time":
                lead_s = float(getattr(self.radio, "timed_start_lead_s", self.TIMED_START_LEAD_S))
                at_ns = self.radio.hardware_time_ns() + int(round(lead_s * 1e9))
            self.radio.transmit(x, cyclic=True, level=10 ** (rms_dbfs / 20), at_time_ns=at_ns)
            if at_ns is not None and lead_s > 0:
                time.sleep(lead_s)  # a real board's clock runs with the wall clock: the start is past
        finally:
            self.device_time_s += time.perf_counter() - t0
        port_dbm = self.tx_full_scale_dbm + actual.gain_db + rms_dbfs  # nominal port level, for the record
        cal = self.calibration
        bound = 0.0 if cal is None else cal.level_bound_db(self._freq_hz, power)
        self.tx_setting = TxRecord(self._freq_hz, power, actual.gain_db, rms_dbfs, port_dbm, waveform.source, bound,
                                   at_ns, 0.0 if cal is None else cal.thru_u_db(self._freq_hz, power),
                                   0.0 if cal is None else cal.input_u_db(self._freq_hz, power))
        return self.tx_setting

    def stop(self) -> bool:
        """Stop transmitting (safe at any time); True when the transmitter is confirmed off."""
        t0 = time.perf_counter()
        try:
            return bool(self.radio.stop_tx())
        finally:
            self.device_time_s += time.perf_counter() - t0
            self.tx_setting = None

    @property
    def tx_confirmed_off(self) -> bool:
        """Whether the radio confirmed its last stop (or never transmitted)."""
        return bool(getattr(self.radio, "tx_confirmed_off", True))

    @property
    def lost(self) -> str | None:
        """Why the radio is lost (a missed deadline, or its device gone), None while it answers."""
        return getattr(self.radio, "lost", None)

    def capture(self, n_samples: int, autorange: bool = True, label: str = "") -> CaptureRecord:
        """Capture at the DUT output; with ``autorange`` the RX gain is adjusted until the peak sits well.

        The one place where a capture becomes a :class:`CaptureRecord`: samples
        as delivered, the settings actually applied, what was playing, the
        integrity flags and the dBFS -> dBm scaling with the calibration behind it.
        """
        return self._capture(n_samples, autorange, label, False)[0]

    def settle(self, n_samples: int) -> LevelSummary:
        """Let ``n_samples`` of signal pass (ALC, AGC, thermal): captured as :meth:`capture` captures them
        (auto-ranged, checked against the RX-port limit) and discarded; on a remote radio they stay on the
        server and only the summary crosses the link."""
        return self._capture(n_samples, True, "", False, keep=False)

    #: the reference channel's RMS level aimed at (dBFS): room for a 12 dB crest factor and 12-bit resolution
    REFERENCE_RMS_DBFS = -20.0

    def capture_with_reference(self, n_samples: int, label: str = "") -> tuple[CaptureRecord, CaptureRecord]:
        """The DUT output (as :meth:`capture`) and, taken at the same instants on the same clock, the DUT input
        through the rig's reference channel (record ``<label>.reference``, scaled to the DUT input plane by
        the nominal ``paths.reference``)."""
        if self.timing_method() != "reference_channel":
            raise DeviceError(f"rig {self.spec.name!r} has no reference channel: {self.timing_problem()}")
        return self._capture(n_samples, True, label, True)

    def _reference_gain_db(self) -> float:
        if self.spec.rx.reference_gain_db is not None:
            return float(self.spec.rx.reference_gain_db)
        gr = self.caps.rx_gain_range_db
        if self.tx_setting is None:
            return gr.high
        port_dbm = self.tx_setting.power_dbm + float(self.spec.reference_path.gain_db_at(self._freq_hz))
        return float(gr.clip(self.REFERENCE_RMS_DBFS - port_dbm + self.rx_full_scale_dbm))

    @property
    def ranging(self) -> AutoRange:
        """The RX auto-ranging rule (devices/ranging.py) with this rig's window."""
        return AutoRange(self.TARGET_PEAK_DBFS, *self.PEAK_WINDOW_DBFS)

    def _ranged(self, n_samples: int, fixed: bool, keep: bool):
        """The radio's ranged capture (next to the radio on a remote rig): (capture or None, summary, retries)."""
        t0 = time.perf_counter()
        try:
            got = self.radio.capture_ranged(n_samples, self._stream(self._rx_gain_db, self.spec.rx.channel,
                                                                    self._rx_bw_hz),
                                            None if fixed else self.ranging, keep=keep,
                                            retries=self.INTEGRITY_RETRIES)
        finally:
            self.device_time_s += time.perf_counter() - t0
        self._rx_gain_db = got.gain_db
        return got.capture, got.summary, got.retries

    def _ranged_with_reference(self, n_samples: int, fixed: bool):
        """The DUT output ranged as :meth:`_ranged` and the reference channel captured with it (one
        ``capture_channels`` call per trial): (capture, reference capture, retries, reference gain)."""
        gr = self.caps.rx_gain_range_db
        rule = self.ranging
        ceiling = gr.high
        retries = 0
        ref_gain = self._reference_gain_db()
        for _attempt in range(rule.max_trials):
            cap, ref_cap, tries = self._intact_capture(n_samples, ref_gain)
            retries += tries
            if ref_cap.meta.overload and self.spec.rx.reference_gain_db is None and ref_gain > gr.low:
                ref_gain = gr.clip(ref_gain - 10.0)  # the reference channel clipped: again, 10 dB lower
                continue
            if fixed:
                break
            new_gain, ceiling = rule.next_gain(self._rx_gain_db, ceiling, peak_dbfs(cap.samples), cap.meta.overload,
                                               gr)
            if new_gain is None:
                break
            self._rx_gain_db = new_gain
            self._configure_rx()
        return cap, ref_cap, retries, ref_gain

    def _capture(self, n_samples: int, autorange: bool, label: str, reference: bool, keep: bool = True):
        gr = self.caps.rx_gain_range_db
        fixed = self.spec.rx.gain_db is not None or not autorange
        ref_cap = ref_gain = None
        if reference:
            cap, ref_cap, retries, ref_gain = self._ranged_with_reference(n_samples, fixed)
            summary = LevelSummary.of(cap)
        else:
            cap, summary, retries = self._ranged(n_samples, fixed, keep)
        if summary.overload:
            raise DeviceError(f"RX overload at gain {self._rx_gain_db:g} dB (range {gr.describe('dB')}): the DUT "
                              f"output is too strong or too unsteady for the rig (add attenuation in dut_to_rx)")
        if ref_cap is not None and ref_cap.meta.overload:
            raise DeviceError(f"reference channel overload at gain {ref_gain:g} dB: add attenuation in "
                              f"paths.reference")
        tx = self.tx_setting
        if (tx is not None and tx.start_time_ns is not None and summary.time_ns is not None
                and summary.time_ns < tx.start_time_ns):
            raise DeviceError(f"the capture began at device time {summary.time_ns} ns, before the timed "
                              f"transmission's start {tx.start_time_ns} ns")
        port_dbm = summary.mean_power_dbfs + (self.rx_full_scale_dbm - summary.config.gain_db)
        if port_dbm > self.spec.limits.max_rx_input_dbm:
            self.stop()
            raise LevelError(f"{port_dbm:.1f} dBm at the RX port exceeds its limit "
                             f"{self.spec.limits.max_rx_input_dbm:g} dBm; transmitter stopped")
        if not keep:
            return summary
        out_fs_dbm = self.output_dbm_at_0dbfs(summary.config.freq_hz) - summary.config.gain_db
        scale_u_db = 0.0 if self.calibration is None else self.calibration.output_u_db(summary.config.freq_hz)
        records = [self._record(cap, out_fs_dbm, label, retries, summary.peak_dbfs, scale_u_db)]
        if ref_cap is not None:
            rs = ref_cap.samples
            ref_port_dbm = mean_power_dbfs(rs) + self.rx_full_scale_dbm - ref_cap.meta.config.gain_db
            if ref_port_dbm > self.spec.limits.max_rx_input_dbm:
                self.stop()
                raise LevelError(f"{ref_port_dbm:.1f} dBm at the reference RX port exceeds its limit "
                                 f"{self.spec.limits.max_rx_input_dbm:g} dBm; transmitter stopped")
            f = ref_cap.meta.config.freq_hz
            ref_fs_dbm = self.rx_full_scale_dbm - ref_cap.meta.config.gain_db - float(
                self.spec.reference_path.gain_db_at(f))
            records.append(self._record(ref_cap, ref_fs_dbm, f"{label}.reference", retries, peak_dbfs(rs)))
        return records

    def _record(self, cap, full_scale_dbm: float, label: str, retries: int, peak_dbfs: float,
                scale_u_db: float = 0.0) -> CaptureRecord:
        cfg, meta = cap.meta.config, cap.meta
        return CaptureRecord(
            samples=np.asarray(cap.samples, dtype=np.complex64), sample_rate_hz=cfg.sample_rate_hz,
            freq_hz=cfg.freq_hz, rx_gain_db=cfg.gain_db, full_scale_dbm=full_scale_dbm, tx=self.tx_setting,
            label=label, rf_bandwidth_hz=cfg.rf_bandwidth_hz, timestamp_s=meta.timestamp,
            rx_time_ns=None if meta.time_ns is None else int(meta.time_ns), rx_channel=int(cfg.channel),
            overflow=meta.overflow, underflow=_underflow(meta), dropped_samples=meta.dropped_samples,
            retries=retries, overload=meta.overload, clipped_samples=meta.clipped_samples, peak_dbfs=peak_dbfs,
            dut_bypassed=self.dut_bypassed, calibration=self._calibration_id(), scale_u_db=scale_u_db,
            extra=dict(meta.extra))

    def _intact_capture(self, n_samples: int, reference_gain_db: float | None = None):
        """A capture without lost samples: one with an RX overflow, dropped samples or a TX underflow is taken
        again, at most INTEGRITY_RETRIES times (never stitched). Returns (capture, reference capture or None,
        retries); exhaustion raises DeviceError naming the faults. ``reference_gain_db``: the reference
        channel is captured too, at that gain."""
        for attempt in range(self.INTEGRITY_RETRIES + 1):
            t0 = time.perf_counter()
            try:
                if reference_gain_db is None:
                    cap, ref = self.radio.capture(n_samples), None
                else:
                    cap, ref = self.radio.capture_channels(
                        n_samples, (self.spec.rx.channel, self.spec.rx.reference_channel),
                        (self._rx_gain_db, reference_gain_db))
            finally:
                self.device_time_s += time.perf_counter() - t0
            faults = [f for f in cap.meta.faults() if not f.startswith("ADC overload")]
            if ref is not None:
                faults += [f"reference channel {f}" for f in ref.meta.faults() if not f.startswith("ADC overload")]
            if _underflow(cap.meta):
                faults.append("TX underflow")
            if not faults:
                return cap, ref, attempt
        raise DeviceError(f"capture corrupted in {self.INTEGRITY_RETRIES + 1} attempts "
                          f"(last: {', '.join(faults)}): samples were lost between the radio and the host")

    def _calibration_id(self) -> str | None:
        st = self.calibration_status
        return f"{st.get('file')} ({st.get('created_at')})" if st.get("applied") else None



__all__ = ["CapabilityError", "LevelError", "PowerMeterSpec", "Rig", "RigSpec", "TxSetting", "is_server_uri",
           "load_rig", "load_served_rig", "rig_from_description"]
