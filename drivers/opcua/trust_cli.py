"""`edgeseal opcua trust` and `edgeseal opcua certs`: the operator's side of the OPC UA
trust list in STATE_DIR/pki (layout and rules in pki.py).

    trust THUMBPRINT   a certificate the driver refused (it is in rejected/), by the
                       SHA-1 thumbprint its message gave (or its SHA-256)
    trust FILE         every certificate of a DER or PEM file: a server's, or a CA's
    trust opc.tcp://…  what the server presents on its endpoints (GetEndpoints needs no
                       security); trusted only with --yes or a matching --thumbprint,
                       otherwise shown with the command that confirms it (exit 1)
    certs              this client's certificate, the trusted and the rejected ones

Usage errors raise TrustUsage (exit 2); a server that cannot be read or does not
present the expected certificate raises TrustFailed (exit 1).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import shlex
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from drivers.opcua.pki import CertificateInfo, Pki, PkiError, TrustResult, parse_thumbprint
from drivers.opcua.security import SecurityRefused, ServerUnreachable, server_certificates

URL_SCHEME = "opc.tcp://"


class TrustUsage(ValueError):
    """Bad usage or unusable input (exit 2)."""


class TrustFailed(Exception):
    """The server could not be read, or does not present what was expected (exit 1)."""


def trust(
    state_dir: Path, target: str, *, yes: bool = False, expected: str | None = None, timeout: float, out: TextIO
) -> int:
    """Trusts `target` (a thumbprint, a certificate file or a server URL); returns the
    exit status: 0 trusted, 1 a server's certificate shown but not confirmed."""
    pki = _pki(state_dir)
    if target.startswith(URL_SCHEME):
        return _trust_server(pki, target, yes=yes, expected=expected, timeout=timeout, out=out)
    if yes or expected:
        raise TrustUsage("--yes and --thumbprint go with an opc.tcp:// URL")
    if not _names_a_file(target) and not _is_thumbprint(target):
        raise TrustUsage(f"expected a SHA-1 thumbprint (40 hex digits), a certificate file or a URL, found {target!r}")
    try:
        results = pki.trust_file(Path(target)) if _names_a_file(target) else [pki.trust_thumbprint(target)]
    except PkiError as exc:
        raise TrustUsage(str(exc)) from None
    _print_trusted(results, out)
    return 0


def certs(state_dir: Path, *, as_json: bool, out: TextIO) -> int:
    """Lists this client's certificate, the trusted and the rejected ones."""
    listing = _pki(state_dir).listing()
    if as_json:
        document = {
            "own": listing.own.as_json() if listing.own else None,
            "trusted": [c.as_json() for c in listing.trusted],
            "rejected": [c.as_json() for c in listing.rejected],
            "unreadable": [str(p) for p in listing.unreadable],
        }
        print(json.dumps(document, indent=2), file=out)
        return 0
    now = dt.datetime.now(dt.UTC)
    print("own (this client's certificate; trust it on each server):", file=out)
    if listing.own:
        print(describe(listing.own, now), file=out)
    else:
        print("  none yet: it is made at the first connection with a secure policy", file=out)
    print(f"trusted ({len(listing.trusted)}):", file=out)
    for info in listing.trusted:
        print(describe(info, now), file=out)
    command = f"edgeseal opcua trust --state-dir {shlex.quote(str(state_dir))} THUMBPRINT"
    print(f"rejected ({len(listing.rejected)}): servers refused so far; trust one with: {command}", file=out)
    for info in listing.rejected:
        print(describe(info, now), file=out)
    for path in listing.unreadable:
        print(f"not a certificate: {path}", file=out)
    return 0


def describe(info: CertificateInfo, now: dt.datetime) -> str:
    """A certificate as a few indented lines."""
    why_not = info.out_of_date(now)
    lines = [
        f"  {info.subject}",
        f"    application URI   {info.application_uri or '(none)'}",
        f"    SHA-1 thumbprint  {info.thumbprint}",
        f"    SHA-256           {info.sha256}",
        f"    valid             {info.validity()}" + (f"  ({why_not})" if why_not else ""),
    ]
    if info.path:
        lines.append(f"    file              {info.path}")
    return "\n".join(lines)


def _trust_server(pki: Pki, url: str, *, yes: bool, expected: str | None, timeout: float, out: TextIO) -> int:
    _check_url(url)
    wanted = _thumbprint_option(expected) if expected else None
    logging.getLogger("asyncua").setLevel(logging.WARNING)  # its INFO lines narrate each protocol step
    try:
        presented = asyncio.run(server_certificates(url, timeout))
    except (ServerUnreachable, SecurityRefused) as exc:
        raise TrustFailed(str(exc)) from None
    if not presented:
        raise TrustFailed(f"{url}: the server presents no certificate (it offers security policy None only)")
    now = dt.datetime.now(dt.UTC)
    infos = [CertificateInfo.of(cert) for cert in presented]
    print(f"{url} presents:", file=out)
    for info in infos:
        print(describe(info, now), file=out)
    if wanted:
        chosen = [c for c, i in zip(presented, infos) if wanted in (i.thumbprint, i.sha256.replace(":", ""))]
        if not chosen:
            shown = ", ".join(i.thumbprint for i in infos)
            raise TrustFailed(f"{url}: no certificate of the server has thumbprint {wanted}; it presents {shown}")
    elif yes:
        chosen = presented
    elif all(pki.is_trusted(cert) for cert in presented):
        print("trusted already", file=out)
        return 0
    else:
        return _ask_to_confirm(pki.root.parent, url, infos, out)
    _print_trusted([pki.trust(cert) for cert in chosen], out)
    return 0


def _ask_to_confirm(state_dir: Path, url: str, infos: list[CertificateInfo], out: TextIO) -> int:
    print("not trusted yet: compare the thumbprint with the one the server itself shows, then run:", file=out)
    command = f"edgeseal opcua trust --state-dir {shlex.quote(str(state_dir))} {shlex.quote(url)}"
    for info in infos:
        print(f"  {command} --thumbprint {info.thumbprint}", file=out)
    return 1


def _print_trusted(results: list[TrustResult], out: TextIO) -> None:
    now = dt.datetime.now(dt.UTC)
    for result in results:
        print("already trusted:" if result.already_trusted else "trusted:", file=out)
        print(describe(result.certificate, now), file=out)


def _pki(state_dir: Path) -> Pki:
    if not state_dir.is_dir():
        raise TrustUsage(f"--state-dir {state_dir}: not a directory")
    return Pki(state_dir / "pki")


def _names_a_file(target: str) -> bool:
    """A path, not a thumbprint: it exists, or it is written like a file name."""
    path = Path(target)
    return path.exists() or "/" in target or path.suffix.lower() in (".der", ".pem", ".crt", ".cer")


def _is_thumbprint(text: str) -> bool:
    try:
        parse_thumbprint(text)
    except PkiError:
        return False
    return True


def _thumbprint_option(text: str) -> str:
    try:
        return parse_thumbprint(text)
    except PkiError as exc:
        raise TrustUsage(f"--thumbprint: {exc}") from None


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number 0..65535
    except ValueError:
        parts = None
    if parts is None or not parts.hostname:
        raise TrustUsage(f"expected a URL like opc.tcp://plc.local:4840, found {url!r}")
