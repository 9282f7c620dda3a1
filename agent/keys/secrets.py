"""TPM-sealed secrets: small values (an MQTT password, a keystore passphrase) that are
useless away from this gateway's TPM.

`edgeseal-provision secret seal NAME` seals a value under the TPM's owner storage key and
writes DIR/NAME.sealed; configuration names the secret, and the agent unseals it at start.
The file holds only the TPM's sealed blob: copied to another box, or after an owner clear,
it cannot be opened. File format, CBOR: {"v": 1, "private": TPM2B_PRIVATE, "public": TPM2B_PUBLIC}.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import KeyError_
from agent.trust import cbor

if TYPE_CHECKING:
    from tpm2_pytss import ESAPI

    from agent.keys.tpm.worker import TpmWorker

SECRET_NAME_PATTERN = r"[A-Za-z0-9._-]{1,64}"
SECRET_NAME_RULE = "1-64 letters, digits and . _ -"
SUFFIX = ".sealed"


def secret_path(directory: str | os.PathLike[str], name: str) -> Path:
    if not re.fullmatch(SECRET_NAME_PATTERN, name) or name.startswith("."):
        raise KeyError_(f"expected a secret name of {SECRET_NAME_RULE} (not starting with .), found {name!r}")
    return Path(directory) / (name + SUFFIX)


def encode_sealed(private: bytes, public: bytes) -> bytes:
    return cbor.encode({"v": 1, "private": private, "public": public})


def decode_sealed(data: bytes, where: str) -> tuple[bytes, bytes]:
    try:
        value = cbor.decode(data)
    except cbor.CborError as exc:
        raise KeyError_(f"{where}: not a sealed secret file: {exc}") from None
    if not (
        isinstance(value, dict)
        and value.keys() == {"v", "private", "public"}
        and value["v"] == 1
        and all(isinstance(value[k], bytes) for k in ("private", "public"))
    ):
        raise KeyError_(f"{where}: not a version 1 sealed secret file")
    return value["private"], value["public"]


def read_sealed(directory: str | os.PathLike[str], name: str) -> tuple[bytes, bytes]:
    path = secret_path(directory, name)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        hint = f"seal it with 'edgeseal-provision secret seal {name}'"
        raise KeyError_(f"no sealed secret {name!r} in {directory}: {hint}") from None
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read sealed secret: {exc.strerror}") from None
    return decode_sealed(data, str(path))


def write_sealed(directory: str | os.PathLike[str], name: str, sealed: bytes, *, force: bool) -> Path:
    """Write atomically, mode 0600; refuse to replace an existing secret unless `force`."""
    path = secret_path(directory, name)
    Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists() and not force:
        raise KeyError_(f"{path} exists: use --force to replace secret {name!r}")
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, sealed)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return path


def seal_secret(esapi: ESAPI, directory: str | os.PathLike[str], name: str, value: bytes, *, force: bool) -> Path:
    from agent.keys.tpm import esys

    secret_path(directory, name)  # a bad name fails before the TPM is used
    return write_sealed(directory, name, encode_sealed(*esys.seal(esapi, value)), force=force)


async def unseal_secret(worker: TpmWorker, directory: str | os.PathLike[str], name: str) -> bytes:
    from agent.keys.tpm import esys

    private, public = read_sealed(directory, name)
    return await worker.call(lambda esapi: esys.unseal(esapi, private, public))
