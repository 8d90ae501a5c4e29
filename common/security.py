"""CURVE encryption and authentication for deployments across hosts (``[security] curve = true``).

Keys (``make keys`` -> ``python -m common.security``, written under ``security.keys_dir``)::

    server.key / server.key_secret          every bookmux socket that binds is a CURVE server
    internal.key / internal.key_secret      bookmux services connecting to each other
    subscriber.key / subscriber.key_secret  a sample subscriber identity (allowed)
    clients/*.key                           the public keys allowed to connect (ZAP, every
                                            binding process): internal + subscriber; add a
                                            subscriber by dropping its public key file here

A peer whose public key is not in ``clients/`` completes no handshake and receives nothing.
When ``curve`` is off nothing here is used and sockets are plain (loopback-only by default).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from common.config import REPO_ROOT, Config


class KeyError_(RuntimeError):
    """A key file is missing or unreadable (the message says which and how to make it)."""


def _pair(keys: Path, name: str) -> tuple[bytes, bytes]:
    path = keys / f"{name}.key_secret"
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise KeyError_(f"cannot read CURVE key {path}: {e} (run `make keys`)") from None
    if secret is None:
        raise KeyError_(f"{path} holds no secret key")
    return public, secret


def load_public(path: str | Path) -> bytes:
    public, _ = zmq.auth.load_certificate(Path(path))
    return public


def load_pair(path: str | Path) -> tuple[bytes, bytes]:
    public, secret = zmq.auth.load_certificate(Path(path))
    if secret is None:
        raise KeyError_(f"{path} holds no secret key (give the .key_secret file)")
    return public, secret


@dataclass
class Security:
    """The keys of one process, and the ZAP authenticators it started (one per context)."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes
    clients_dir: Path
    _auth: dict[int, ThreadAuthenticator] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Config) -> Security | None:
        """None when CURVE is off; raises :class:`KeyError_` when a key is missing."""
        if not cfg.security.curve:
            return None
        keys = (REPO_ROOT / cfg.security.keys_dir).resolve()
        sp, ss = _pair(keys, "server")
        cp, cs = _pair(keys, "internal")
        clients = keys / "clients"
        if not clients.is_dir():
            raise KeyError_(f"{clients} does not exist (run `make keys`)")
        return cls(sp, ss, cp, cs, clients)

    def server(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before bind) a CURVE server that only admits the allowed client keys."""
        ctx = sock.context
        key = ctx.underlying           # one ZAP handler per libzmq context (shadows share it)
        if key not in self._auth:
            auth = ThreadAuthenticator(ctx)
            auth.start()
            auth.configure_curve(domain="*", location=str(self.clients_dir))
            self._auth[key] = auth
        sock.curve_secretkey = self.server_secret
        sock.curve_publickey = self.server_public
        sock.curve_server = True

    def client(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before connect) a CURVE client of a bookmux server."""
        sock.curve_secretkey = self.client_secret
        sock.curve_publickey = self.client_public
        sock.curve_serverkey = self.server_public

    def close(self) -> None:
        for auth in self._auth.values():
            auth.stop()
        self._auth.clear()


def client_keys(sock: zmq.Socket, *, server_key: str | Path, client_key: str | Path) -> None:
    """For command-line clients: CURVE with the server's public key file and our own secret file."""
    public, secret = load_pair(client_key)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = load_public(server_key)


def make_keys(keys: Path, *, force: bool = False) -> list[Path]:
    """Create the key files described in the module docstring; keeps existing ones unless ``force``."""
    keys.mkdir(parents=True, exist_ok=True)
    clients = keys / "clients"
    clients.mkdir(exist_ok=True)
    made = []
    for name in ("server", "internal", "subscriber"):
        if force or not (keys / f"{name}.key_secret").exists():
            public, _ = zmq.auth.create_certificates(str(keys), name)
            made.append(Path(public))
    for name in ("internal", "subscriber"):
        shutil.copy(keys / f"{name}.key", clients / f"{name}.key")
    for p in keys.glob("*.key_secret"):
        p.chmod(0o600)
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.security", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=str(REPO_ROOT / "keys"), help="where to write the keys (default %(default)s)")
    ap.add_argument("--force", action="store_true", help="replace existing key pairs")
    args = ap.parse_args(argv)
    made = make_keys(Path(args.dir), force=args.force)
    for p in made:
        print(f"created {p} (+ secret)")
    print(f"allowed client keys: {sorted(str(p.name) for p in (Path(args.dir) / 'clients').glob('*.key'))}")
    print("enable with [security] curve = true (or --set security.curve=true) on every service")
    return 0


if __name__ == "__main__":
    sys.exit(main())
