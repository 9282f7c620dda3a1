"""`edgeseal`: the agent, operator and auditor commands (DESIGN 4).

Exit codes everywhere: 0 ok, 1 a finding (invalid data, failed check), 2 bad usage or
unusable input. Every EdgesealError is caught here, once; a traceback is shown only
with --verbose.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent import cli_commissioning as commissioning
from agent import logs
from agent.cli_args import positive_int, positive_seconds
from agent.errors import EdgesealError, InvalidBundle, UsageError

if TYPE_CHECKING:
    from cryptography import x509

    from agent.trust.anchor_check import AnchorCheck
    from agent.trust.verify import Report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeseal", description="Signed, buffered, anchored plant data.")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging and tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent (the service's main job)")
    run.add_argument("--config", required=True, type=Path)

    demo = sub.add_parser("demo", help="the whole stack on one box with embedded defaults")
    demo.add_argument("--seconds", type=positive_seconds, default=10.0)
    demo.add_argument("--dir", type=Path, default=Path("edgeseal-demo"))
    demo.add_argument(
        "--rpc",
        metavar="URL",
        help="anchor on this local node (e.g. anvil) instead of an in-process development chain; "
        "its first unlocked account deploys the registry and funds the demo's chain account",
    )

    check = sub.add_parser("check-config", help="validate a configuration file (no I/O beyond reading it)")
    check.add_argument("path", type=Path)

    export = sub.add_parser("export", help="export a bundle for auditors")
    export.add_argument("--state-dir", required=True, type=Path)
    export.add_argument("-o", "--output", required=True, type=Path)
    export.add_argument("--tag", action="append", default=[], help="disclose only this tag (repeatable)")
    export.add_argument("--since", help="readings at or after this time (ISO 8601 or ns since epoch)")
    export.add_argument("--until", help="readings before this time (ISO 8601 or ns since epoch)")

    verify = sub.add_parser("verify", help="verify a bundle against the manufacturer CA")
    verify.add_argument("file", type=Path)
    verify.add_argument("--ca", required=True, type=Path, help="PEM file of trusted root certificate(s)")
    verify.add_argument(
        "--crl",
        action="append",
        default=[],
        type=Path,
        help="PEM or DER CRL of a CA in the device's chain (repeatable); a listed certificate is a finding",
    )
    verify.add_argument(
        "--rpc", metavar="URL", help="check the anchor records on this node of their chain (http:// or https://)"
    )
    verify.add_argument("--poa", action="store_true", help="the --rpc chain is a PoA chain (QBFT/IBFT extraData)")
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes that check batches (default: all cores)"
    )

    watch = sub.add_parser("watch", help="check a device's batches live, as they arrive over MQTT")
    watch.add_argument("--mqtt", required=True, metavar="URL", help="the broker: mqtt://HOST[:PORT] or mqtts://…")
    watch.add_argument(
        "--topic", required=True, metavar="PREFIX", help="the agent's topic prefix, e.g. edgeseal/v1/GW-1"
    )
    watch.add_argument("--ca", required=True, type=Path, metavar="PEM", help="PEM file of trusted root certificate(s)")
    watch.add_argument("--json", action="store_true", help="one JSON object per event line")
    until = watch.add_mutually_exclusive_group()
    until.add_argument("--count", type=positive_int, metavar="N", help="stop after N batch messages")
    until.add_argument("--seconds", type=positive_seconds, metavar="S", help="stop after S seconds")
    watch.add_argument(
        "--tls-ca", metavar="PEM", help="CA of the broker's certificate (mqtts://; default the system's)"
    )
    watch.add_argument("--cert", metavar="PEM", help="client certificate, for mutual TLS")
    watch.add_argument("--key", metavar="PEM", help="its private key")
    watch.add_argument("--username", help="user name at the broker")
    watch.add_argument("--password-env", metavar="NAME", help="environment variable holding the password")

    status = sub.add_parser("status", help="how far sealing and delivery have come, from the state directory")
    status.add_argument("--state-dir", required=True, type=Path)
    status.add_argument("--json", action="store_true", help="machine-readable")

    sub.add_parser("schema", help="print the configuration's JSON Schema")

    commissioning.add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(verbose=args.verbose)
    try:
        return _COMMANDS[args.command](args)
    except EdgesealError as exc:
        if args.verbose:
            logging.exception("failed")
        print(f"edgeseal: {exc.diagnostics()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_went_away()


def _reader_went_away() -> int:
    """`edgeseal … | head`: the reader closed the pipe early. Not an error worth a
    traceback; stdout is pointed at /dev/null so the flush at exit cannot fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141  # what a shell reports for a process ended by SIGPIPE


def _run(args: argparse.Namespace) -> int:
    from agent import crashpoints
    from agent.config import load_config
    from agent.reload import Reload
    from agent.runtime import install_signal_handlers, run_agent

    crashpoints.arm(os.environ)
    config = load_config(args.config)

    async def main_task() -> None:
        stop, reload = asyncio.Event(), Reload(args.config)
        install_signal_handlers(stop)
        reload.install()
        await run_agent(config, stop, reload=reload)

    asyncio.run(main_task())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(args.dir, args.seconds, args.rpc)


def _check_config(args: argparse.Namespace) -> int:
    from agent.config import load_config

    load_config(args.path)
    print(f"{args.path}: ok")
    return 0


def _export(args: argparse.Namespace) -> int:
    from agent.buffer.store import Buffer
    from agent.export import Selection, export_bundle

    selection = Selection(frozenset(args.tag), _time(args.since, "--since"), _time(args.until, "--until"))
    if args.output.resolve().parent == args.state_dir.resolve():
        raise UsageError(f"{args.output}: write the bundle outside the state directory")
    buffer = Buffer.open(args.state_dir, create=False)
    try:
        bundle, summary = export_bundle(buffer, selection)
    finally:
        buffer.close()
    _write_atomically(args.output, bundle.encode())
    kind = "selective" if selection.selective else "full"
    print(f"{args.output}: {kind} bundle, {summary.batches} batches, {summary.readings} readings,", end=" ")
    print(f"log size {summary.log_size}")
    if summary.left_out_older_key:
        print(f"note: {summary.left_out_older_key} older seals were made with an earlier device key and were left out")
    if summary.left_out_unchecked:
        print(f"note: {summary.left_out_unchecked} newer seals are not yet covered by a checkpoint and were left out")
    return 0


def _status(args: argparse.Namespace) -> int:
    from agent.buffer.store import Buffer
    from agent.status import print_status, read_status

    buffer = Buffer.open(args.state_dir, create=False)
    try:
        print_status(read_status(buffer), sys.stdout, as_json=args.json)
    finally:
        buffer.close()
    return 0


def _verify(args: argparse.Namespace) -> int:
    from agent.report import render_json, render_text
    from agent.trust.bundle import NotABundle
    from agent.trust.revocation import CrlError

    if args.rpc is not None and not args.rpc.startswith(("http://", "https://")):
        raise UsageError(f"--rpc: expected an http:// or https:// URL, found {args.rpc!r}")
    roots = _read_roots(args.ca)
    crls = [_read_crl(path) for path in args.crl]
    data = _read_bytes(args.file)
    try:
        report = _verify_with_jobs(data, roots, crls, args.jobs)
    except NotABundle as exc:
        raise InvalidBundle(f"{args.file}: unusable input: {exc}") from None
    except CrlError as exc:  # only the bundle's chain tells whose CRL it may be
        raise UsageError(f"{args.crl[exc.index]}: unusable CRL: {exc}") from None
    if args.rpc is not None:
        report.record_chain_checks(_check_on_chain(report, args.rpc, args.poa))
    print(render_json(report) if args.json else render_text(report, str(args.file)))
    return 0 if report.valid else 1


def _verify_with_jobs(
    data: bytes, roots: list[x509.Certificate], crls: list[x509.CertificateRevocationList], jobs: int
) -> Report:
    """Batches are checked in `jobs` processes: verification is CPU-bound and per batch."""
    from concurrent.futures import ProcessPoolExecutor

    from agent.trust.verify import verify_bundle

    if jobs <= 1:
        return verify_bundle(data, roots, crls=crls)
    with ProcessPoolExecutor(jobs) as pool:
        return verify_bundle(data, roots, pool.map, crls=crls)


def _check_on_chain(report: Report, url: str, poa: bool) -> list[AnchorCheck]:
    """The report's anchor claims checked on the node at `url`; a node that cannot be
    asked is unusable input, not a finding."""
    from agent.anchor.onchain import check_anchors
    from agent.anchor.rpc import Chain, ChainUnavailable

    async def ask() -> list[AnchorCheck]:
        chain = Chain.connect(url, poa=poa)
        try:
            return await check_anchors(chain, report.anchors)
        finally:
            await chain.close()

    try:
        return asyncio.run(ask())
    except ChainUnavailable as exc:
        raise UsageError(f"--rpc {url}: cannot check the anchors: {exc}") from None


def _watch(args: argparse.Namespace) -> int:
    from agent.watch import Broker, run_watch

    broker = Broker(args.mqtt, args.tls_ca, args.cert, args.key, args.username, args.password_env)
    return run_watch(
        _read_roots(args.ca), args.topic, broker, as_json=args.json, count=args.count, seconds=args.seconds
    )


def _schema(args: argparse.Namespace) -> int:
    from agent.config import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


_COMMANDS = {
    "run": _run,
    "demo": _demo,
    "check-config": _check_config,
    "export": _export,
    "status": _status,
    "verify": _verify,
    "watch": _watch,
    "schema": _schema,
    **commissioning.COMMANDS,
}


def _time(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    if text.isascii() and text.isdigit():
        if len(text) > 20:  # ns since 1970 fit in 19 digits for the next two centuries
            raise UsageError(f"{option}: {text[:24]}... is not a time")
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option}: expected ISO 8601 time or ns since epoch, found {text!r}") from None
    if moment.tzinfo is None:
        raise UsageError(f"{option}: give a time zone (e.g. {text}Z or {text}+01:00)")
    return int(moment.timestamp() * 1_000_000) * 1000


MAX_INPUT_BYTES = 4 << 30  # no bundle or certificate file is near this; /dev/zero is


def _read_bytes(path: Path) -> bytes:
    try:
        if path.exists() and not path.is_file():
            raise UsageError(f"{path}: cannot read: not a regular file")
        if path.stat().st_size > MAX_INPUT_BYTES:
            raise UsageError(f"{path}: larger than {MAX_INPUT_BYTES >> 30} GiB")
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None


def _read_roots(path: Path) -> list[x509.Certificate]:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(_read_bytes(path))
    except ValueError as exc:
        raise UsageError(f"{path}: not a PEM certificate file: {exc}") from None


def _read_crl(path: Path) -> x509.CertificateRevocationList:
    from agent.trust.revocation import CrlError, load_crl

    try:
        return load_crl(_read_bytes(path))
    except CrlError as exc:
        raise UsageError(f"{path}: not a usable CRL: {exc}") from None


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a bundle."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UsageError(f"{path}: not a regular file; give the name of a new or existing bundle file")
    tmp = path.parent / f".{path.name}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


if __name__ == "__main__":
    sys.exit(main())
