"""CURVE key pairs and allow-lists for the rig server, with pyzmq's own certificate files (``zmq.auth``).

``harness keys new NAME --dir DIR`` writes ``NAME.key`` (public: give it to the other side) and
``NAME.key_secret`` (keep it). A server allows the clients whose public ``*.key`` files lie in its
``--allow`` directory, nobody else (default deny).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from devices.zmq_wire import key_fingerprint

log = logging.getLogger("harness.remote")


def new_key_pair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write a CURVE key pair ``name.key`` / ``name.key_secret`` in ``directory``; refuses to overwrite."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    pub, sec = d / f"{name}.key", d / f"{name}.key_secret"
    for p in (pub, sec):
        if p.exists():
            raise FileExistsError(f"{p} exists; remove it first or choose another name")
    public_file, secret_file = zmq.auth.create_certificates(str(d), name)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def load_secret(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``.key_secret`` file."""
    public, secret = zmq.auth.load_certificate(str(path))
    if not secret:
        raise ValueError(f"{path} holds no secret key (a .key_secret file is needed)")
    return public, secret


def load_public(path: str | Path) -> bytes:
    public, _ = zmq.auth.load_certificate(str(path))
    return public


class AllowList:
    """The CURVE credentials provider: a key is allowed when its public file lies in the allow directory.

    The directory is read again on every handshake, so adding or removing a key file takes effect for the
    next connection. Every refusal is logged with the key's fingerprint.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.refused: list[str] = []  # fingerprints refused (bounded)

    def keys(self) -> set[bytes]:
        if not self.directory.is_dir():
            return set()
        try:
            return set(zmq.auth.load_certificates(str(self.directory)).keys())
        except (OSError, ValueError) as e:
            log.error("allow-list %s unreadable: %s: every client refused", self.directory, e)
            return set()

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys():
            return True
        fp = key_fingerprint(key)
        log.warning("refused client key %s (not in the allow-list %s)", fp, self.directory)
        if len(self.refused) < 1000:
            self.refused.append(fp)
        return False


def start_authenticator(context: zmq.Context, allow: AllowList) -> ThreadAuthenticator:
    """A ZAP handler for ``context`` that lets in CURVE clients on ``allow`` only."""
    auth = ThreadAuthenticator(context, log=logging.getLogger("harness.remote.zap"))
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=allow)
    return auth
