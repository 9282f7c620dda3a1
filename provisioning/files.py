"""Reading and writing the factory's key and certificate files.

Every OSError is turned into an error that names the file here, at the boundary, so the
CLI never shows a traceback for a missing directory or a permission problem.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import EdgesealError, KeyError_
from agent.files import fsync_directory, write_new_file


class AlreadyExists(EdgesealError):
    """A command would replace existing key material; it did nothing instead."""

    exit_code = 1


def read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read {what}: {exc.strerror}") from None


def refuse_existing(paths: list[Path], hint: str) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise AlreadyExists(f"{', '.join(existing)}: already exists; {hint}")


def write_private(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write a secret file with mode 0600 from the moment it exists.

    Without `overwrite`, O_EXCL makes the refusal atomic. With it, the data goes to a new
    file beside the target that is renamed over it, because opening an existing 0644
    file with O_TRUNC would keep its old, readable mode.
    """
    target = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp") if overwrite else path
    try:
        write_new_file(target, data, 0o600)
        if overwrite:
            os.replace(target, path)
    except FileExistsError:
        raise AlreadyExists(f"{path}: already exists; use --force to replace it") from None
    except OSError as exc:
        if overwrite:
            _remove_quietly(target)
        raise KeyError_(f"{path}: cannot write: {exc.strerror}") from None


def write_device_key(path: Path, key: ec.EllipticCurvePrivateKey, *, overwrite: bool = False) -> None:
    """A software device key, unencrypted PKCS#8 PEM as `agent.keys.software` reads it."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(path, pem, overwrite=overwrite)


def write_public(path: Path, data: bytes) -> None:
    """Write a certificate or CSR: public data, replaced if present."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise KeyError_(f"{path}: cannot write: {exc.strerror}") from None


def write_public_atomic(path: Path, data: bytes) -> None:
    """Replace `path` (mode 0644) so that a reader, or a power cut, sees either the old
    file or the new one, never half of one: what the agent reads at start must be whole."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write_new_file(temporary, data, 0o644)
        os.chmod(temporary, 0o644)  # the umask may have narrowed it
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except OSError as exc:
        _remove_quietly(temporary)
        raise KeyError_(f"{path}: cannot write: {exc.strerror}") from None


def append_synced(path: Path, line: bytes) -> None:
    """Append one line and fsync it (and the directory, when the file is new): a record
    that was reported written survives a power cut."""
    try:
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        with os.fdopen(fd, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if created:
            fsync_directory(path.parent)
    except OSError as exc:
        raise KeyError_(f"{path}: cannot append: {exc.strerror}") from None


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # the write error already reported is the one that matters
