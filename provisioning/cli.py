"""edgeseal-provision: the factory's command line (CA, device key, CSR, inspect).

Exit codes: 0 ok, 1 a finding (a chain that does not verify, material that already
exists), 2 bad usage or unusable input. Errors are caught once, in `main`.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import EdgesealError, KeyError_, UsageError, VerificationFailed
from agent.keys.signer import key_id
from agent.keys.software import load_certificate_chain, load_key_file
from agent.trust.certs import device_id_of
from provisioning import ca_store
from provisioning.ca import build_csr, create_ca, issue_device_certificate
from provisioning.chain import chain_problems, describe_chain
from provisioning.files import read_bytes, write_device_key, write_public

PROG = "edgeseal-provision"
PASSPHRASE_ENV = "EDGESEAL_CA_PASSPHRASE"


class _Parser(argparse.ArgumentParser):
    """Usage errors go through the one error path, so `main` returns 2 instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage().rstrip()}")


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = _parser().parse_args(argv)
        return args.handler(args)
    except EdgesealError as exc:
        if getattr(args, "verbose", False):
            traceback.print_exc()
        print(f"{PROG}: {exc.diagnostics()}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # --help
        return int(exc.code or 0)


def _ca_init(args: argparse.Namespace) -> int:
    passphrase = _passphrase(args)
    ca = create_ca(args.org)
    ca_store.save(args.dir, ca, passphrase, force=args.force)
    print(f"created a CA in {args.dir}; publish {args.dir / ca_store.ROOT_CERT} to verifiers")
    print("\n".join(describe_chain([ca.issuing_cert, ca.root_cert])))
    return 0


def _ca_issue(args: argparse.Namespace) -> int:
    issuer = ca_store.load_issuer(args.dir, _passphrase(args))
    cert = issue_device_certificate(issuer, _load_csr(args.csr))
    write_public(args.output, _pem(cert))
    if args.chain_out:
        write_public(args.chain_out, _pem(cert) + _pem(issuer[1]))
    print(f"issued {args.output} for device {device_id_of(cert)}, key id {key_id(cert.public_key()).hex()}")
    return 0


def _key_create(args: argparse.Namespace) -> int:
    if not args.software:
        raise UsageError("say which key to create: --software (a TPM key comes with 'tpm keygen')")
    key = ec.generate_private_key(ec.SECP256R1())
    write_device_key(args.output, key, overwrite=args.force)
    print(f"wrote software key {args.output} (mode 0600), key id {key_id(key.public_key()).hex()}")
    return 0


def _csr(args: argparse.Namespace) -> int:
    key = load_key_file(args.key)
    csr = build_csr(key, args.device_id, args.model)
    write_public(args.output, csr.public_bytes(serialization.Encoding.PEM))
    print(f"wrote {args.output} for device {args.device_id}, key id {key_id(key.public_key()).hex()}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    certs = load_certificate_chain(args.chain)
    print("\n".join(describe_chain(certs)))
    if args.ca is None:
        return 0
    roots = load_certificate_chain(args.ca)
    if len(roots) != 1:
        raise KeyError_(f"{args.ca}: expected one root certificate, found {len(roots)}")
    problems = chain_problems(certs, roots[0])
    if problems:
        raise VerificationFailed(f"{args.chain} does not chain to {args.ca}:\n  " + "\n  ".join(problems))
    print(f"{args.chain} chains to {args.ca}")
    return 0


def _passphrase(args: argparse.Namespace) -> bytes:
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


def _load_csr(path: Path) -> x509.CertificateSigningRequest:
    data = read_bytes(path, "CSR")
    for load in (x509.load_pem_x509_csr, x509.load_der_x509_csr):
        try:
            return load(data)
        except ValueError:
            continue
    raise KeyError_(f"{path}: not a PEM or DER certificate signing request")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _parser() -> argparse.ArgumentParser:
    # --verbose is accepted before or after the command; SUPPRESS keeps a subcommand
    # from resetting a value given before it.
    leaf = argparse.ArgumentParser(add_help=False)
    leaf.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    parser = _Parser(prog=PROG, description="Provision edgeseal devices: CA, device key, CSR, inspect.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ca = commands.add_parser("ca", help="run the manufacturer CA").add_subparsers(
        dest="ca_command", required=True, metavar="COMMAND"
    )
    init = ca.add_parser("init", parents=[leaf], help="create a root and an issuing CA in a directory")
    init.add_argument("--dir", type=Path, required=True, help="CA directory (created 0700)")
    init.add_argument("--org", required=True, help="organization named in the CA certificates")
    init.add_argument("--force", action="store_true", help="replace an existing CA in --dir")
    _passphrase_options(init)
    init.set_defaults(handler=_ca_init)

    issue = ca.add_parser("issue", parents=[leaf], help="issue a device certificate for a CSR")
    issue.add_argument("--dir", type=Path, required=True, help="CA directory")
    issue.add_argument("--csr", type=Path, required=True, help="the device's CSR (PEM or DER)")
    issue.add_argument("-o", "--output", type=Path, required=True, help="device certificate (PEM)")
    issue.add_argument("--chain-out", type=Path, help="device + issuing certificate, for identity.cert_chain")
    _passphrase_options(issue)
    issue.set_defaults(handler=_ca_issue)

    key = commands.add_parser("key", help="create a device key").add_subparsers(
        dest="key_command", required=True, metavar="COMMAND"
    )
    create = key.add_parser(
        "create",
        parents=[leaf],
        help="create a software device key",
        description="Create a software device key (development, test, demo). A production"
        " key lives in the TPM and is created with 'tpm keygen'.",
    )
    create.add_argument("--software", action="store_true", help="a P-256 key in a PEM file (required)")
    create.add_argument("-o", "--output", type=Path, required=True, help="key file, written 0600")
    create.add_argument("--force", action="store_true", help="replace an existing key file")
    create.set_defaults(handler=_key_create)

    csr = commands.add_parser("csr", parents=[leaf], help="make a CSR signed by the device key")
    csr.add_argument("--key", type=Path, required=True, help="software device key (mode 0600)")
    csr.add_argument("--device-id", required=True, help="device id, goes in subject serialNumber and CN")
    csr.add_argument("--model", help="device model, goes in subject OU")
    csr.add_argument("-o", "--output", type=Path, required=True, help="CSR file (PEM)")
    csr.set_defaults(handler=_csr)

    inspect = commands.add_parser("inspect", parents=[leaf], help="describe a chain, check it against a root")
    inspect.add_argument("chain", type=Path, help="PEM chain, device certificate first")
    inspect.add_argument("--ca", type=Path, help="root certificate the chain must lead to")
    inspect.set_defaults(handler=_inspect)
    return parser


def _passphrase_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--passphrase-file", type=Path, help="file holding the CA key passphrase")
    source.add_argument(
        "--passphrase-env",
        default=PASSPHRASE_ENV,
        metavar="VAR",
        help=f"environment variable holding the passphrase (default {PASSPHRASE_ENV})",
    )
