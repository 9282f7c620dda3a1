"""`edgeseal-provision chain-key create | show`: the gateway's account on the anchoring chain.

A secp256k1 key in an encrypted keystore (`agent.anchor.keystore`) whose passphrase is a
random value sealed to this gateway's TPM. The keystore module is imported by these
commands only: eth_account takes most of a second to import, which no other command needs.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

from agent.keys.secrets import SECRET_NAME_RULE, seal_secret, secret_path
from agent.keys.tpm.esys import connected
from provisioning.cli_common import add_tcti_option
from provisioning.files import AlreadyExists
from provisioning.secret_cli import DEFAULT_DIR


def _create(args: argparse.Namespace) -> int:
    from agent.anchor import keystore

    if args.keystore.exists() and not args.force:  # existing material is left alone: exit 1, as for keys
        raise AlreadyExists(f"{args.keystore} exists: --force replaces the chain keystore (and the account it holds)")
    keystore.check_destination(args.keystore, force=args.force)
    if args.passphrase_secret:
        passphrase = _sealed_passphrase(args)
        where = f"sealed to this TPM as secret {args.passphrase_secret!r} in {args.secrets_dir}"
    else:
        passphrase = keystore.read_passphrase_file(args.passphrase_file)
        where = f"in {args.passphrase_file} (development only: not protected by the TPM)"
    address = keystore.create_keystore(args.keystore, passphrase, force=args.force)
    print(f"chain account {address}")
    print(f"wrote {args.keystore} (mode 0600); its passphrase is {where}")
    print(
        f"next: fund {address} on the anchoring chain (or permission it, on a permissioned chain),"
        f" and set anchor.key.keystore to {args.keystore.absolute()} in the agent configuration"
        + (f", with anchor.key.passphrase_secret: {args.passphrase_secret}" if args.passphrase_secret else "")
    )
    return 0


def _sealed_passphrase(args: argparse.Namespace) -> bytes:
    """A random passphrase, sealed before any keystore uses it: a keystore whose passphrase
    was not stored could never be opened. base64url, as the agent reads secrets as text."""
    secret_path(args.secrets_dir, args.passphrase_secret)  # a bad name fails before the TPM is opened
    passphrase = secrets.token_urlsafe(32).encode()
    with connected(args.tcti) as esapi:
        seal_secret(esapi, args.secrets_dir, args.passphrase_secret, passphrase, force=args.force)
    return passphrase


def _show(args: argparse.Namespace) -> int:
    from agent.anchor import keystore

    print(keystore.keystore_address(args.keystore))
    return 0


def add_commands(commands: argparse._SubParsersAction, leaf: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    chain_key = commands.add_parser("chain-key", help="the gateway's account on the anchoring chain").add_subparsers(
        dest="chain_key_command", required=True, metavar="COMMAND"
    )
    create = chain_key.add_parser(
        "create",
        parents=[leaf],
        help="create the chain account: a secp256k1 key in an encrypted keystore",
        description="Create a secp256k1 key in a Web3 Secret Storage (v3) keystore, mode 0600, and print its"
        " address for the chain operator to fund or permission. With --passphrase-secret the passphrase is random"
        " and sealed to this gateway's TPM (first: if sealing fails, no keystore is written), so a copied keystore"
        " is useless elsewhere; --passphrase-file is for development only.",
    )
    create.add_argument("--keystore", type=Path, required=True, metavar="PATH", help="keystore file to write")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--passphrase-secret",
        metavar="NAME",
        help=f"seal a new random passphrase to the TPM as this secret ({SECRET_NAME_RULE})",
    )
    source.add_argument(
        "--passphrase-file",
        type=Path,
        metavar="FILE",
        help="development only: the passphrase is this file's content (one trailing newline dropped),"
        " not protected by the TPM",
    )
    create.add_argument(
        "--secrets-dir",
        type=Path,
        default=DEFAULT_DIR,
        metavar="DIR",
        help=f"with --passphrase-secret: secrets folder (default {DEFAULT_DIR})",
    )
    add_tcti_option(create)
    create.add_argument("--force", action="store_true", help="replace an existing keystore and passphrase secret")
    create.set_defaults(handler=_create)

    show = chain_key.add_parser("show", parents=[leaf], help="print the chain account's address")
    show.add_argument("--keystore", type=Path, required=True, metavar="PATH", help="keystore file")
    show.set_defaults(handler=_show)
