"""Remote rigs over ZeroMQ: the rig server (:mod:`.server`), its keys (:mod:`.keys`) and interlocks
(:mod:`.interlocks`). The client is the ``zmq://`` radio, :mod:`devices.zmq`; the wire format both use is
:mod:`devices.zmq_wire`, described in ``docs/remote-protocol.md``."""

# the server's timing defaults, here so that the command line states them without importing the server

#: a lost radio is opened again (same URI and options) this long after its loss, then after waits doubled up to
#: REOPEN_MAX_S: a device that re-enumerates comes back within seconds, one that stays away costs an attempt a half
#: minute (each bounded by the radio's reconnect deadline)
REOPEN_FIRST_S = 1.0
REOPEN_MAX_S = 30.0
#: an idle radio is probed this often (s)
PROBE_S = 5.0
