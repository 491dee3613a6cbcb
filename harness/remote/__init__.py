"""Remote rigs over ZeroMQ: the rig server (:mod:`.server`), its keys (:mod:`.keys`) and interlocks
(:mod:`.interlocks`). The client is the ``zmq://`` radio, :mod:`devices.zmq`; the wire format both use is
:mod:`devices.zmq_wire`, described in ``docs/remote-protocol.md``."""
