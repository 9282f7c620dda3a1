"""`edgeseal-provision key create | csr | install | inspect`: the device's key, CSR and
certificate chain."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import UsageError, VerificationFailed
from agent.keys.software import load_certificate_chain, load_key_file
from agent.keys.tpm.esys import connected
from agent.keys.tpm.signer import read_device_key
from agent.trust.certs import key_id
from provisioning.ca import build_csr
from provisioning.chain import chain_problems, describe_chain, summarize
from provisioning.cli_common import add_tpm_options, load_root
from provisioning.files import write_device_key, write_public
from provisioning.install import check_chain, config_snippet, install_chain
from provisioning.tpm_identity import describe_key, device_public_key, make_csr


def _key_create(args: argparse.Namespace) -> int:
    if not args.software:
        raise UsageError("say which key to create: --software (a TPM key comes with 'tpm keygen')")
    key = ec.generate_private_key(ec.SECP256R1())
    write_device_key(args.output, key, overwrite=args.force)
    print(f"wrote software key {args.output} (mode 0600), key id {key_id(key.public_key()).hex()}")
    return 0


def _csr(args: argparse.Namespace) -> int:
    if args.tpm:
        with connected(args.tcti) as esapi:
            csr = make_csr(esapi, args.handle, args.device_id, args.model)
        source = f"the TPM key at 0x{args.handle:08x}"
    else:
        csr = build_csr(load_key_file(args.key), args.device_id, args.model)
        source = str(args.key)
    write_public(args.output, csr.public_bytes(serialization.Encoding.PEM))
    kid = key_id(csr.public_key()).hex()  # type: ignore[arg-type]  # build_csr takes P-256 keys only
    print(f"wrote {args.output} for device {args.device_id}, signed by {source}, key id {kid}")
    return 0


def _install(args: argparse.Namespace) -> int:
    chain = load_certificate_chain(args.chain)
    root = load_root(args.ca) if args.ca else None
    with connected(args.tcti) as esapi:
        tpm_key = device_public_key(read_device_key(esapi, args.handle))
    check_chain(chain, tpm_key, args.handle, root)
    path, changed = install_chain(args.dest, chain, force=args.force)
    print(f"installed {path}" if changed else f"{path} already holds this chain (unchanged)")
    print("identity section for edgeseal.yaml:")
    print(config_snippet(args.tcti, args.handle, path), end="")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    if (args.chain is None) == (not args.tpm):
        raise UsageError("inspect a chain file (CHAIN) or the TPM key (--tpm), one of the two")
    if args.tpm and args.ca:
        raise UsageError("--ca checks a chain file; it does not go with --tpm")
    report, failure = _inspect_tpm(args) if args.tpm else _inspect_chain(args)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    if failure:
        raise VerificationFailed(failure)
    return 0


def _inspect_chain(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    certs = load_certificate_chain(args.chain)
    report: dict[str, Any] = {"certificates": [summarize(cert) for cert in certs]}
    if not args.json:
        print("\n".join(describe_chain(certs)))
    if args.ca is None:
        return report, None
    problems = chain_problems(certs, load_root(args.ca))
    report.update(chain_valid=not problems, problems=problems)
    if problems:
        return report, f"{args.chain} does not chain to {args.ca}:\n  " + "\n  ".join(problems)
    if not args.json:
        print(f"{args.chain} chains to {args.ca}")
    return report, None


def _inspect_tpm(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    with connected(args.tcti) as esapi:
        report = describe_key(esapi, args.handle)
    report["tcti"] = str(args.tcti)
    if not args.json:
        exportable = "no: made in this TPM, fixed to it and its parent" if report["non_exportable"] else "yes"
        print(f"TPM handle {report['handle']} ({report['tcti']})")
        print(f"  key id:     {report['kid']}")
        print(f"  attributes: {'|'.join(report['attributes'])}")
        print(f"  exportable: {exportable}")
        print(report["public_key"] or "  (not an EC key)", end="")
    if report["problems"]:
        return report, f"TPM handle {report['handle']} holds no edgeseal device key: " + "; ".join(report["problems"])
    return report, None


def add_commands(commands: argparse._SubParsersAction, leaf: argparse.ArgumentParser) -> None:
    _add_key_create(commands, leaf)
    _add_csr(commands, leaf)
    _add_install(commands, leaf)
    _add_inspect(commands, leaf)


def _add_key_create(commands: argparse._SubParsersAction, leaf: argparse.ArgumentParser) -> None:
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


def _add_csr(commands: argparse._SubParsersAction, leaf: argparse.ArgumentParser) -> None:
    csr = commands.add_parser("csr", parents=[leaf], help="make a CSR signed by the device key")
    signer = csr.add_mutually_exclusive_group(required=True)
    signer.add_argument("--tpm", action="store_true", help="the device key in the TPM (production)")
    signer.add_argument("--key", type=Path, help="a software device key file (mode 0600)")
    csr.add_argument("--device-id", required=True, help="device id, goes in subject serialNumber and CN")
    csr.add_argument("--model", help="device model, goes in subject OU")
    csr.add_argument("-o", "--output", type=Path, required=True, help="CSR file (PEM)")
    add_tpm_options(csr)
    csr.set_defaults(handler=_csr)


def _add_install(commands: argparse._SubParsersAction, leaf: argparse.ArgumentParser) -> None:
    install = commands.add_parser("install", parents=[leaf], help="install the certificate chain for the agent")
    install.add_argument("--chain", type=Path, required=True, help="device certificate, then intermediates (PEM)")
    install.add_argument("--dest", type=Path, required=True, help="directory of device-chain.pem")
    install.add_argument("--ca", type=Path, help="root certificate the chain must lead to")
    install.add_argument("--force", action="store_true", help="replace another installed chain")
    add_tpm_options(install)
    install.set_defaults(handler=_install)


def _add_inspect(commands: argparse._SubParsersAction, leaf: argparse.ArgumentParser) -> None:
    inspect = commands.add_parser("inspect", parents=[leaf], help="describe a chain or the TPM key")
    inspect.add_argument("chain", type=Path, nargs="?", help="PEM chain, device certificate first")
    inspect.add_argument("--ca", type=Path, help="root certificate the chain must lead to")
    inspect.add_argument("--tpm", action="store_true", help="describe the key at the TPM handle instead")
    inspect.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_tpm_options(inspect)
    inspect.set_defaults(handler=_inspect)
