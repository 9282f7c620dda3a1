"""What every edgeseal-provision command shares: the parser that turns usage errors into
UsageError, the TPM and passphrase options, and reading the factory's input files."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.errors import KeyError_, UsageError
from agent.keys.software import load_certificate_chain
from agent.keys.tpm.handles import DEFAULT_HANDLE, HANDLE_RULE, handle_problem
from agent.keys.tpm.tcti import Tcti, parse_tcti
from agent.trust.certs import DEVICE_ID_PATTERN, DEVICE_ID_RULE
from provisioning.files import read_bytes

PROG = "edgeseal-provision"
PASSPHRASE_ENV = "EDGESEAL_CA_PASSPHRASE"
DEFAULT_TCTI = "device:/dev/tpmrm0"


class Parser(argparse.ArgumentParser):
    """Usage errors go through the one error path, so `main` returns 2 instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage().rstrip()}")


def verbose_parent() -> argparse.ArgumentParser:
    # --verbose is accepted before or after the command; SUPPRESS keeps a subcommand
    # from resetting a value given before it.
    leaf = argparse.ArgumentParser(add_help=False)
    leaf.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    return leaf


def tcti_value(text: str) -> Tcti:
    try:
        return parse_tcti(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected {exc}, found {text!r}") from None


def handle_value(text: str) -> int:
    """A persistent handle in hex (0x81020001) or decimal; the agent's configuration rule."""
    try:
        handle = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {HANDLE_RULE} (e.g. 0x81020001), found {text!r}") from None
    problem = handle_problem(handle)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return handle


def device_id_value(text: str) -> str:
    if not re.fullmatch(DEVICE_ID_PATTERN, text):
        raise argparse.ArgumentTypeError(f"expected {DEVICE_ID_RULE}, found {text!r}")
    return text


def add_tcti_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tcti",
        type=tcti_value,
        default=parse_tcti(DEFAULT_TCTI),
        help=f"how to reach the TPM (default {DEFAULT_TCTI})",
    )


def add_tpm_options(parser: argparse.ArgumentParser) -> None:
    add_tcti_option(parser)
    parser.add_argument(
        "--handle",
        type=handle_value,
        default=DEFAULT_HANDLE,
        help=f"persistent handle of the device key (default 0x{DEFAULT_HANDLE:08x})",
    )


def add_passphrase_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--passphrase-file", type=Path, help="file holding the CA key passphrase")
    source.add_argument(
        "--passphrase-env",
        default=PASSPHRASE_ENV,
        metavar="VAR",
        help=f"environment variable holding the passphrase (default {PASSPHRASE_ENV})",
    )


def passphrase(args: argparse.Namespace) -> bytes:
    if args.passphrase_file is not None:
        # Files written by `echo` or editors end with a newline that is not part of it.
        value = read_bytes(args.passphrase_file, "passphrase file").removesuffix(b"\n").removesuffix(b"\r")
    elif args.passphrase_env in os.environ:
        value = os.fsencode(os.environ[args.passphrase_env])
    else:
        raise UsageError(f"no CA passphrase: set {args.passphrase_env} or use --passphrase-file")
    if not value:
        raise UsageError("the CA passphrase is empty")
    return value


def load_csr(path: Path) -> x509.CertificateSigningRequest:
    data = read_bytes(path, "CSR")
    for load in (x509.load_pem_x509_csr, x509.load_der_x509_csr):
        try:
            return load(data)
        except ValueError:
            continue
    raise KeyError_(f"{path}: not a PEM or DER certificate signing request")


def load_trusted(paths: list[Path]) -> list[x509.Certificate]:
    """Every certificate in every --tpm-ca file (PEM; a file may hold a bundle)."""
    certificates = []
    for path in paths:
        found = load_certificate_chain(path)
        if not found:
            raise KeyError_(f"{path}: holds no PEM certificate")
        certificates += found
    return certificates


def load_root(path: Path) -> x509.Certificate:
    roots = load_certificate_chain(path)
    if len(roots) != 1:
        raise KeyError_(f"{path}: expected one root certificate, found {len(roots)}")
    return roots[0]


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
