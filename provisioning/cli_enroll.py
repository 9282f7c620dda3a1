"""`edgeseal-provision enroll`: provision one box end to end (provisioning.enroll)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from provisioning.cli_common import (
    add_passphrase_options,
    add_tpm_options,
    device_id_value,
    load_trusted,
    passphrase,
)
from provisioning.enroll import Enrollment, enroll
from provisioning.install import config_snippet


def _enroll(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="edgeseal-enroll-") as temporary:
        job = Enrollment(
            device_id=args.device_id,
            model=args.model,
            ca_dir=args.ca_dir,
            passphrase=passphrase(args),
            trusted=load_trusted(args.tpm_ca),
            dest=args.dest,
            work_dir=args.work_dir or Path(temporary),
            tcti=args.tcti,
            handle=args.handle,
            force=args.force,
        )
        path = enroll(job, print)
    if args.work_dir:
        print(f"each step's file is in {args.work_dir}")
    print("identity section for edgeseal.yaml:")
    print(config_snippet(args.tcti, args.handle, path), end="")
    return 0


def add_commands(commands: argparse._SubParsersAction, leaf: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "enroll",
        parents=[leaf],
        help="provision a box end to end: keygen, csr, attest, challenge, activate, issue, install",
        description="On a station holding both the CA and the device's TPM: every step of the factory flow,"
        " one line each. A box already holding a chain for its TPM key under this CA is left alone.",
    )
    parser.add_argument("--device-id", type=device_id_value, required=True, help="the device id")
    parser.add_argument("--model", help="device model, goes in subject OU")
    parser.add_argument("--ca-dir", type=Path, required=True, help="CA directory")
    parser.add_argument(
        "--tpm-ca", type=Path, action="append", required=True, metavar="PEM", help="TPM vendor CA certificates"
    )
    parser.add_argument("--dest", type=Path, required=True, help="directory of device-chain.pem")
    parser.add_argument("--work-dir", type=Path, help="keep each step's file here (default: a temporary directory)")
    parser.add_argument("--force", action="store_true", help="issue and install a new certificate regardless")
    add_tpm_options(parser)
    add_passphrase_options(parser)
    parser.set_defaults(handler=_enroll)
