"""`edgeseal-provision secret seal NAME`: seal a small secret to this gateway's TPM.

The value is read from standard input (or an environment variable), never from the
command line, where other users could see it in the process list.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agent.errors import UsageError
from agent.keys.secrets import SECRET_NAME_RULE, seal_secret
from agent.keys.tpm.esys import connected
from provisioning.cli_common import add_tcti_option

DEFAULT_DIR = Path("/etc/edgeseal/secrets")
MAX_SECRET = 128  # what a TPM seals as one object (MAX_SYM_DATA)


def add_secret_commands(commands: argparse._SubParsersAction, leaf: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    secret = commands.add_parser("secret", help="TPM-sealed secrets").add_subparsers(
        dest="secret_command", required=True, metavar="COMMAND"
    )
    seal = secret.add_parser(
        "seal",
        parents=[leaf],
        help="seal a secret (read from stdin) to this gateway's TPM",
        description="Seal a secret read from standard input (one trailing newline is dropped) to the TPM's"
        " owner storage key, as DIR/NAME.sealed. Configuration names it; the agent unseals it at start.",
    )
    seal.add_argument("name", help=f"secret name: {SECRET_NAME_RULE}")
    seal.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"secrets folder (default {DEFAULT_DIR})")
    seal.add_argument("--from-env", metavar="VAR", help="read the secret from this environment variable instead")
    add_tcti_option(seal)
    seal.add_argument("--force", action="store_true", help="replace an existing secret of that name")
    seal.set_defaults(handler=_seal)


def _seal(args: argparse.Namespace) -> int:
    value = _secret_value(args.from_env)
    with connected(args.tcti) as esapi:
        path = seal_secret(esapi, args.dir, args.name, value, force=args.force)
    print(f"sealed secret {args.name!r} to this TPM: {path} ({len(value)} bytes)")
    return 0


def _secret_value(variable: str | None) -> bytes:
    if variable is not None:
        if variable not in os.environ:
            raise UsageError(f"environment variable {variable} is not set")
        value = os.fsencode(os.environ[variable])
    else:
        value = sys.stdin.buffer.read().removesuffix(b"\n").removesuffix(b"\r")
    if not value:
        raise UsageError("the secret is empty")
    if len(value) > MAX_SECRET:
        raise UsageError(f"a sealed secret holds at most {MAX_SECRET} bytes, found {len(value)}")
    return value
