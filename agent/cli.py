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

from agent.errors import DeviceFailed, EdgesealError, InvalidBundle, UsageError

if TYPE_CHECKING:
    from cryptography import x509

    from agent.trust.verify import Report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeseal", description="Signed, buffered, anchored plant data.")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging and tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent (the service's main job)")
    run.add_argument("--config", required=True, type=Path)

    demo = sub.add_parser("demo", help="the whole stack on one box with embedded defaults")
    demo.add_argument("--seconds", type=_positive_seconds, default=10.0)
    demo.add_argument("--dir", type=Path, default=Path("edgeseal-demo"))

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
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes that check batches (default: all cores)"
    )

    sub.add_parser("schema", help="print the configuration's JSON Schema")

    probe = sub.add_parser("probe", help="read a device directly, for commissioning")
    _add_modbus_probe(probe.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL"))
    return p


PROBE_SPANS = """START:N is N registers (or coils, or discrete inputs) from START. START is the
zero-based protocol address, unless it is written the Modicon way for its table, counting
from 1: 5 or 6 digits whose first digit names the table, or the text form 4x0001.

  --holding 100:4     zero-based: holding registers 100..103 (Modicon 400101..400104)
  --holding 40101:4   Modicon (first digit 4): the same registers
  --holding 4x0101:4  Modicon, text form: the same registers
  --input 30001:2     Modicon (first digit 3): input registers 0..1
  --coils 00001:8     Modicon (first digit 0): coils 0..7; --coils 0:8 is the same
  --discrete 10001:8  Modicon (first digit 1): discrete inputs 0..7

Zero-based 40000..49999 with --holding (30000..39999 with --input, ...) look like Modicon
addresses: write them in 6-digit Modicon form (440001 is holding register 40000). Every
line of the output shows both forms.

Exit status: 0 read, 1 the device answered with an error or not at all, 2 bad usage."""


def _add_modbus_probe(protocols: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from drivers.modbus.points import ORDERS, VALUE_TYPES

    modbus = protocols.add_parser(
        "modbus",
        help="read registers or bits of a Modbus device and print them, as mbpoll does",
        description="Read N registers or bits of one Modbus device, once or repeatedly, and print each value\n"
        "with its zero-based and Modicon address, its raw registers in hexadecimal and its decoded value.",
        epilog=PROBE_SPANS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modbus.add_argument(
        "url", help="tcp://HOST[:PORT] (port 502 by default), rtu-over-tcp://HOST:PORT or rtu:///dev/ttyX"
    )
    modbus.add_argument("--unit", type=int, default=1, help="unit id (slave address), default 1")
    span = modbus.add_mutually_exclusive_group(required=True)  # START: zero-based or Modicon, see PROBE_SPANS
    span.add_argument("--holding", metavar="START:N", help="N holding registers from START (see below)")
    span.add_argument("--input", metavar="START:N", help="N input registers from START")
    span.add_argument("--coils", metavar="START:N", help="N coils from START")
    span.add_argument("--discrete", metavar="START:N", help="N discrete inputs from START")
    modbus.add_argument(
        "--type", choices=VALUE_TYPES, metavar="TYPE", help=f"{', '.join(VALUE_TYPES)}; default uint16, bool for bits"
    )
    modbus.add_argument(
        "--order", choices=ORDERS, metavar="ORDER", help=f"byte order of 32- and 64-bit values: {', '.join(ORDERS)}"
    )
    modbus.add_argument("--watch", type=_duration, metavar="SECONDS", help="read every SECONDS until Ctrl-C")
    modbus.add_argument(
        "--count", type=_positive_int, metavar="K", help="stop after K reads (1 s apart unless --watch)"
    )
    modbus.add_argument(
        "--timeout", type=_duration, default=1.0, metavar="DURATION", help="wait for an answer, e.g. 500ms (default 1s)"
    )
    serial = modbus.add_argument_group("serial line, rtu:// only (default 9600 baud, even parity)")
    serial.add_argument("--baud", type=int, help="line speed in bits per second")
    serial.add_argument("--parity", choices=("none", "even", "odd"))
    serial.add_argument("--stopbits", type=int, choices=(1, 2), help="default 1 with parity, 2 without")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
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
    from agent.config import load_config
    from agent.runtime import install_signal_handlers, run_agent

    config = load_config(args.config)

    async def main_task() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_agent(config, stop)

    asyncio.run(main_task())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(args.dir, args.seconds)


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


def _verify(args: argparse.Namespace) -> int:
    from agent.report import render_json, render_text
    from agent.trust.bundle import NotABundle
    from agent.trust.revocation import CrlError

    roots = _read_roots(args.ca)
    crls = [_read_crl(path) for path in args.crl]
    data = _read_bytes(args.file)
    try:
        report = _verify_with_jobs(data, roots, crls, args.jobs)
    except NotABundle as exc:
        raise InvalidBundle(f"{args.file}: unusable input: {exc}") from None
    except CrlError as exc:  # only the bundle's chain tells whose CRL it may be
        raise UsageError(f"{args.crl[exc.index]}: unusable CRL: {exc}") from None
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


def _probe(args: argparse.Namespace) -> int:
    from drivers.modbus.probe import TABLE_OPTIONS, ProbeFailed, ProbeUsage, Serial, make_probe, run

    option = next(name for name in TABLE_OPTIONS if getattr(args, name) is not None)
    serial = Serial(args.baud, args.parity, args.stopbits)
    try:
        probe = make_probe(
            args.url, args.unit, option, getattr(args, option), value_type=args.type, order=args.order,
            timeout=args.timeout, serial=serial,
        )  # fmt: skip
    except ProbeUsage as exc:
        raise UsageError(str(exc)) from None
    try:
        run(probe, sys.stdout, reads=args.count or (None if args.watch else 1), interval=args.watch or 1.0)
    except ProbeFailed as exc:
        raise DeviceFailed(str(exc)) from None
    return 0


def _schema(args: argparse.Namespace) -> int:
    from agent.config import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


_COMMANDS = {
    "run": _run,
    "demo": _demo,
    "check-config": _check_config,
    "export": _export,
    "verify": _verify,
    "schema": _schema,
    "probe": _probe,  # one protocol so far: modbus
}


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < 366 * 86400:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected seconds > 0, found {text!r}")
    return seconds


def _duration(text: str) -> float:
    from drivers.config_types import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected {exc}, found {text!r}") from None


def _positive_int(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, found {text!r}")
    return int(text)


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
