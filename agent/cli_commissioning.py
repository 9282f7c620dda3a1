"""Commissioning commands: read a device or a server directly, before and while tags are
written. `probe modbus`, `browse` (OPC UA), and `opcua trust|certs` (the OPC UA trust list)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from agent.cli_args import duration, positive_int
from agent.errors import DeviceFailed, UsageError


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    probe = sub.add_parser("probe", help="read a device directly, for commissioning")
    _add_modbus_probe(probe.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL"))

    opcua = sub.add_parser("opcua", help="OPC UA: this client's certificate and the servers it trusts")
    _add_opcua(opcua.add_subparsers(dest="opcua_command", required=True, metavar="COMMAND"))

    _add_browse(sub)


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
    modbus.add_argument("--watch", type=duration, metavar="SECONDS", help="read every SECONDS until Ctrl-C")
    modbus.add_argument("--count", type=positive_int, metavar="K", help="stop after K reads (1 s apart unless --watch)")
    modbus.add_argument(
        "--timeout", type=duration, default=1.0, metavar="DURATION", help="wait for an answer, e.g. 500ms (default 1s)"
    )
    serial = modbus.add_argument_group("serial line, rtu:// only (default 9600 baud, even parity)")
    serial.add_argument("--baud", type=int, help="line speed in bits per second")
    serial.add_argument("--parity", choices=("none", "even", "odd"))
    serial.add_argument("--stopbits", type=int, choices=(1, 2), help="default 1 with parity, 2 without")


OPCUA_TRUST = """A server certificate the agent refused is in STATE_DIR/pki/rejected/certs; the
agent's message gives its SHA-1 thumbprint and this command with it. Compare the
thumbprint with the one the server itself shows before trusting it.

  edgeseal opcua trust --state-dir /var/lib/edgeseal 1A2B...                   from rejected/
  edgeseal opcua trust --state-dir /var/lib/edgeseal plc1.der                  a DER or PEM file (a server or a CA)
  edgeseal opcua trust --state-dir /var/lib/edgeseal opc.tcp://plc1:4840       show what the server presents
  edgeseal opcua trust --state-dir /var/lib/edgeseal opc.tcp://plc1:4840 --thumbprint 1A2B...

Exit status: 0 trusted, 1 the server was not reached, did not present that thumbprint,
or was only shown (no --yes or --thumbprint), 2 bad usage."""


def _add_opcua(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    trust = commands.add_parser(
        "trust",
        help="trust a server certificate: by thumbprint, from a file, or as a server presents it",
        description="Add a server's certificate (or a CA's) to the OPC UA trust list in STATE_DIR/pki.",
        epilog=OPCUA_TRUST,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    trust.add_argument("--state-dir", required=True, type=Path)
    trust.add_argument(
        "target", metavar="THUMBPRINT|FILE|URL", help="SHA-1 thumbprint, certificate file or opc.tcp:// URL"
    )
    confirm = trust.add_mutually_exclusive_group()
    confirm.add_argument("--yes", action="store_true", help="with a URL: trust every certificate the server presents")
    confirm.add_argument("--thumbprint", metavar="SHA1", help="with a URL: trust the certificate with this thumbprint")
    trust.add_argument(
        "--timeout", type=duration, default=5.0, metavar="DURATION", help="wait for the server, e.g. 2s (default 5s)"
    )
    certs = commands.add_parser("certs", help="list this client's certificate and the trusted and rejected ones")
    certs.add_argument("--state-dir", required=True, type=Path)
    certs.add_argument("--json", action="store_true", help="machine-readable list")


BROWSE_HELP = """Walks the address space from --node (default the Objects folder, i=85) down
hierarchical references (Organizes, HasComponent, ...), --depth levels deep (default 3).
Properties such as EURange are not listed, nor the standard Server object unless --node
names it. Node ids are written with their namespace URI (nsu=), which, unlike an index
(ns=), survives a restart of the server.

  edgeseal browse opc.tcp://plc1:4840                              the tree
  edgeseal browse opc.tcp://plc1:4840 --node 'nsu=urn:acme:press;s=Line1' --depth 2
  edgeseal browse opc.tcp://plc1:4840 --yaml > plc1.yaml           tags to edit
  edgeseal browse opc.tcp://plc1:4840 --policy Basic256Sha256 --state-dir /var/lib/edgeseal \\
      --username operator --password-env PLC_PASSWORD

With --yaml: a sources: item with one tag per readable variable, named after its browse
path (lower-case, dots between names), each under a comment with its data type.

Exit status: 0 listed, 1 the server was not reached, refused this client or has no such
node (or, with --yaml, no readable variable), 2 bad usage."""


def _add_browse(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from drivers.opcua.config import POLICIES

    browse = sub.add_parser(
        "browse",
        help="list an OPC UA server's variables, as a tree or as tag YAML, for commissioning",
        description="List the objects and variables of an OPC UA server, or print them as a configuration's tags.",
        epilog=BROWSE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    browse.add_argument("url", help="the server's endpoint, opc.tcp://HOST:PORT[/PATH]")
    browse.add_argument("--node", metavar="NODEID", help="start here, e.g. 'nsu=urn:acme:press;s=Line1' (default i=85)")
    browse.add_argument(
        "--depth", type=positive_int, default=3, metavar="N", help="levels below the start node (default 3)"
    )
    browse.add_argument("--yaml", action="store_true", help="print a sources: item with the readable variables as tags")
    browse.add_argument("--policy", choices=POLICIES, default="None", metavar="POLICY", help=", ".join(POLICIES))
    browse.add_argument(
        "--mode", choices=("None", "Sign", "SignAndEncrypt"), help="default SignAndEncrypt with a secure policy"
    )
    browse.add_argument("--username", help="log in as this user (default anonymous)")
    browse.add_argument("--password-env", metavar="NAME", help="environment variable holding the user's password")
    browse.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="with a secure policy: DIR/pki holds this client's certificate and the trusted servers "
        "(the agent's state directory)",
    )
    browse.add_argument(
        "--timeout", type=duration, default=5.0, metavar="DURATION", help="wait for each answer, e.g. 2s (default 5s)"
    )


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


def _opcua(args: argparse.Namespace) -> int:
    from drivers.opcua.trust_cli import TrustFailed, TrustUsage, certs, trust

    try:
        if args.opcua_command == "certs":
            return certs(args.state_dir, as_json=args.json, out=sys.stdout)
        return trust(
            args.state_dir, args.target, yes=args.yes, expected=args.thumbprint, timeout=args.timeout, out=sys.stdout
        )
    except TrustUsage as exc:
        raise UsageError(str(exc)) from None
    except TrustFailed as exc:
        raise DeviceFailed(str(exc)) from None


def _browse(args: argparse.Namespace) -> int:
    from drivers.opcua.browse import Access, BrowseFailed, BrowseUsage, browse

    access = Access(args.policy, args.mode, args.username, args.password_env, args.state_dir)
    try:
        return browse(
            args.url, node=args.node, depth=args.depth, as_yaml=args.yaml, access=access, timeout=args.timeout,
            out=sys.stdout,
        )  # fmt: skip
    except BrowseUsage as exc:
        raise UsageError(str(exc)) from None
    except BrowseFailed as exc:
        raise DeviceFailed(str(exc)) from None


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "probe": _probe,  # one protocol so far: modbus
    "opcua": _opcua,  # trust, certs
    "browse": _browse,  # OPC UA
}
