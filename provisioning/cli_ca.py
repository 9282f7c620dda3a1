"""`edgeseal-provision ca ...`: the manufacturer CA (init, challenge, issue)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.errors import UsageError
from agent.trust.certs import device_id_of, key_id
from provisioning import ca_store, evidence, issuance
from provisioning.ca import create_ca
from provisioning.chain import describe_chain
from provisioning.cli_common import (
    add_passphrase_options,
    load_csr,
    load_trusted,
    passphrase,
    pem,
)
from provisioning.files import read_bytes, write_public


def _init(args: argparse.Namespace) -> int:
    secret = passphrase(args)
    ca = create_ca(args.org)
    ca_store.save(args.dir, ca, secret, force=args.force, development=args.development)
    if args.development:
        print(f"created a development CA in {args.dir}: it certifies software keys too; never ship its certificates")
    else:
        print(f"created a production CA in {args.dir}: it certifies only keys proven to live in a TPM")
    print(f"publish {args.dir / ca_store.ROOT_CERT} to verifiers")
    print("\n".join(describe_chain([ca.issuing_cert, ca.root_cert])))
    return 0


def _challenge(args: argparse.Namespace) -> int:
    found = evidence.decode_evidence(read_bytes(args.attest, "evidence"))
    challenge = issuance.challenge(args.dir, passphrase(args), load_csr(args.csr), found, load_trusted(args.tpm_ca))
    write_public(args.output, evidence.encode(challenge))
    print(f"evidence verified; wrote {args.output}: answer it with 'tpm activate' on the device's TPM")
    return 0


def _issue(args: argparse.Namespace) -> int:
    proof = _proof(args)
    issued = issuance.issue(args.dir, passphrase(args), load_csr(args.csr), proof)
    cert = issued.certificate
    write_public(args.output, pem(cert))
    if args.chain_out:
        write_public(args.chain_out, pem(cert) + pem(issued.issuing_cert))
    basis = "TPM evidence" if issued.evidence else "no TPM evidence (development CA)"
    kid = key_id(cert.public_key()).hex()  # type: ignore[arg-type]  # the CA certifies only P-256 keys
    print(f"issued {args.output} for device {device_id_of(cert)}, key id {kid}, on {basis}")
    return 0


def _proof(args: argparse.Namespace) -> issuance.TpmProof | None:
    given = [args.attest, args.response, args.tpm_ca or None]
    if not any(given):
        return None
    if not all(given):
        raise UsageError("TPM proof takes all of --attest, --response and --tpm-ca")
    return issuance.TpmProof(
        evidence.decode_evidence(read_bytes(args.attest, "evidence")),
        read_bytes(args.response, "challenge response"),
        load_trusted(args.tpm_ca),
    )


def add_commands(commands: argparse._SubParsersAction, leaf: argparse.ArgumentParser) -> None:
    ca = commands.add_parser("ca", help="run the manufacturer CA").add_subparsers(
        dest="ca_command", required=True, metavar="COMMAND"
    )
    init = ca.add_parser("init", parents=[leaf], help="create a root and an issuing CA in a directory")
    init.add_argument("--dir", type=Path, required=True, help="CA directory (created 0700)")
    init.add_argument("--org", required=True, help="organization named in the CA certificates")
    init.add_argument("--force", action="store_true", help="replace an existing CA in --dir")
    init.add_argument(
        "--development", action="store_true", help="a CA that may certify software keys (demo, tests; never ship)"
    )
    add_passphrase_options(init)
    init.set_defaults(handler=_init)

    challenge = ca.add_parser("challenge", parents=[leaf], help="verify TPM evidence, answer with a credential")
    _common_ca_options(challenge)
    challenge.add_argument("--attest", type=Path, required=True, help="evidence from 'tpm attest'")
    _tpm_ca_option(challenge, required=True)
    challenge.add_argument("-o", "--output", type=Path, required=True, help="challenge file for 'tpm activate'")
    challenge.set_defaults(handler=_challenge)

    issue = ca.add_parser("issue", parents=[leaf], help="issue a device certificate for a CSR")
    _common_ca_options(issue)
    issue.add_argument("--attest", type=Path, help="evidence from 'tpm attest' (production CA: required)")
    issue.add_argument("--response", type=Path, help="the answer from 'tpm activate' (production CA: required)")
    _tpm_ca_option(issue, required=False)
    issue.add_argument("-o", "--output", type=Path, required=True, help="device certificate (PEM)")
    issue.add_argument("--chain-out", type=Path, help="device + issuing certificate, for identity.cert_chain")
    issue.set_defaults(handler=_issue)


def _common_ca_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, required=True, help="CA directory")
    parser.add_argument("--csr", type=Path, required=True, help="the device's CSR (PEM or DER)")
    add_passphrase_options(parser)


def _tpm_ca_option(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--tpm-ca",
        type=Path,
        action="append",
        required=required,
        metavar="PEM",
        help="TPM vendor CA certificates (repeatable; a file may hold several): self-signed ones are"
        " the trusted roots, the others intermediates",
    )
