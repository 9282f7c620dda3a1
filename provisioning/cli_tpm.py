"""`edgeseal-provision tpm ...`: the device key and the TPM's side of enrollment."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.keys.tpm.esys import connected
from agent.trust.certs import key_id
from provisioning import evidence
from provisioning.cli_common import add_tpm_options, device_id_value, load_csr
from provisioning.files import read_bytes, write_private, write_public
from provisioning.tpm_identity import activate, device_public_key, gather_evidence, keygen


def _keygen(args: argparse.Namespace) -> int:
    with connected(args.tcti) as esapi:
        public, created = keygen(esapi, args.handle, args.device_id, force=args.force)
    state = "created" if created else "already there (same device id, same key: unchanged)"
    print(f"handle: 0x{args.handle:08x}")
    print(f"kid:    {key_id(device_public_key(public)).hex()}")
    print(f"key:    {state}")
    return 0


def _attest(args: argparse.Namespace) -> int:
    csr = load_csr(args.csr)
    with connected(args.tcti) as esapi:
        found = gather_evidence(esapi, args.handle, csr)
    write_public(args.output, evidence.encode(found))
    print(f"wrote {args.output}: the TPM's certification of the key at 0x{args.handle:08x} and its EK certificate")
    return 0


def _activate(args: argparse.Namespace) -> int:
    found = evidence.decode_evidence(read_bytes(args.attest, "evidence"))
    challenge = evidence.decode_challenge(read_bytes(args.challenge, "challenge"))
    with connected(args.tcti) as esapi:
        secret = activate(esapi, found, challenge)
    write_private(args.output, secret, overwrite=True)
    print(f"wrote {args.output} (mode 0600): give it to 'ca issue --response'")
    return 0


def add_commands(commands: argparse._SubParsersAction, leaf: argparse.ArgumentParser) -> None:
    tpm = commands.add_parser("tpm", help="the device key in the TPM").add_subparsers(
        dest="tpm_command", required=True, metavar="COMMAND"
    )
    keygen_ = tpm.add_parser(
        "keygen",
        parents=[leaf],
        help="create the device key in the TPM (repeatable: same id, same key)",
        description="Create the non-exportable device key, a primary key of the endorsement hierarchy derived"
        " from the device id, and persist it at the handle. Running it again gives the same key.",
    )
    keygen_.add_argument("--device-id", type=device_id_value, required=True, help="the device id the key is made for")
    keygen_.add_argument("--force", action="store_true", help="replace another key at the handle")
    add_tpm_options(keygen_)
    keygen_.set_defaults(handler=_keygen)

    attest = tpm.add_parser("attest", parents=[leaf], help="the TPM's evidence that the CSR's key lives in it")
    attest.add_argument("--csr", type=Path, required=True, help="the CSR made by 'csr --tpm'")
    attest.add_argument("-o", "--output", type=Path, required=True, help="evidence file for 'ca challenge'")
    add_tpm_options(attest)
    attest.set_defaults(handler=_attest)

    activate_ = tpm.add_parser("activate", parents=[leaf], help="answer the CA's challenge inside the TPM")
    activate_.add_argument("--attest", type=Path, required=True, help="the evidence the challenge answers")
    activate_.add_argument("--challenge", type=Path, required=True, help="challenge from 'ca challenge'")
    activate_.add_argument("-o", "--output", type=Path, required=True, help="response file (written 0600)")
    add_tpm_options(activate_)
    activate_.set_defaults(handler=_activate)
