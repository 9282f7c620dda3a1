"""edgeseal-provision: the factory's command line.

    ca init | challenge | issue       the manufacturer CA          (cli_ca)
    tpm keygen | attest | activate    the device key in the TPM    (cli_tpm)
    key create, csr, install, inspect the device's key and chain   (cli_device)
    enroll                            all of it for one box        (cli_enroll)
    secret seal                       TPM-sealed site secrets      (secret_cli)
    chain-key create | show           the gateway's chain account  (cli_chain_key)

Exit codes: 0 ok, 1 a finding (a chain or evidence that does not verify, material that
already exists), 2 bad usage or unusable input. Errors are caught once, in `main`.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from agent.errors import EdgesealError
from provisioning import cli_ca, cli_chain_key, cli_device, cli_enroll, cli_tpm, secret_cli
from provisioning.cli_common import PASSPHRASE_ENV, PROG, Parser, verbose_parent

__all__ = ["PASSPHRASE_ENV", "main"]


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


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Provision edgeseal devices: CA, TPM device key, CSR, certificate.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    leaf = verbose_parent()
    for module in (cli_ca, cli_tpm, cli_device, cli_enroll, cli_chain_key):
        module.add_commands(commands, leaf)
    secret_cli.add_secret_commands(commands, leaf)
    return parser
