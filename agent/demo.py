"""`edgeseal demo`: the whole stack on one box with embedded defaults.

A press line's PLC (Modbus TCP) and line controller (OPC UA), simulated in this process
(`agent.demo_plant`) and read by the real drivers, with 50 simulated meters -> sealed
buffer -> published to a local Mosquitto broker (when Mosquitto is installed) -> anchored
on a chain -> export -> verify, and a copy of the bundle with one reading changed, which
must fail to verify; then a short summary. The device key is in a software TPM (swtpm,
started in DIR/swtpm) when swtpm is installed, else in a file, and every output says which.
The chain is a development chain in this process (eth-tester with py-evm, served over
HTTP JSON-RPC: `agent.anchor.devchain`), new at every run, or a local node given with
--rpc (e.g. anvil), whose first unlocked account deploys the AnchorRegistry and funds the
demo's chain account. That account's keystore and its passphrase file (development only)
are kept in DIR like the device identity.
It leaves the agent's state directory at DIR/state and the root certificate that
verifies its data at DIR/ca.pem. Running it again continues the same device history.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from agent.anchor import devchain
from agent.anchor.keystore import create_keystore, keystore_address
from agent.anchor.onchain import check_anchors
from agent.anchor.registry import deployed_code
from agent.anchor.rpc import Chain
from agent.buffer.store import Buffer
from agent.config import load_config
from agent.demo_broker import Mosquitto, find_mosquitto
from agent.demo_plant import Plant, free_port
from agent.demo_tamper import Tampering, tamper
from agent.errors import UsageError
from agent.export import Selection, export_bundle
from agent.keys.tpm.handles import DEFAULT_HANDLE
from agent.keys.tpm.tcti import parse_tcti
from agent.report import render_text
from agent.runtime import RunStats, install_signal_handlers, run_agent
from agent.trust.anchor_check import AnchorCheck
from agent.trust.bundle import Anchor, Batch, Bundle, decode_anchor
from agent.trust.leaf import decode_leaf
from agent.trust.payloads import open_checkpoint
from agent.trust.verify import Report, verify_bundle
from drivers.api import is_bad
from provisioning.devca import DemoIdentity, make_demo_identity, make_demo_tpm_identity
from provisioning.swtpm import SoftwareTpm, manufacture, swtpm_available

DEVICE_ID = "demo-press-line-1"
DISCLOSED_TAG = "oven.temperature"
TAMPERED_TAG = "press.hydraulic_pressure"
FULL, TAMPERED = "bundle.cbor", "bundle-tampered.cbor"
CHAIN_KEY, CHAIN_PASSPHRASE, REGISTRY_FILE = "chain-key.json", "chain-passphrase", "chain-registry.json"
FUNDS = 10**18  # 1 ether: thousands of anchors at a development chain's fees (~50,000 gas at ~2 gwei)
KEY_LABEL = "passphrase in a plain file: DEVELOPMENT ONLY, production seals it in the TPM"


@dataclass(frozen=True)
class DemoChain:
    url: str
    chain_id: int
    contract: str
    account: str  # the demo's chain account, which sends the anchors
    label: str  # what the chain is, for the summary
    persistent: bool  # False: the development chain, gone when the demo ends


@dataclass(frozen=True)
class Checked:
    """An exported bundle, written to `path`, and what verifying it found."""

    path: Path
    bundle: Bundle
    report: Report


def run_demo(directory: Path, seconds: float, rpc: str | None = None) -> int:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{directory}: cannot use as the demo directory: {exc.strerror}") from None
    logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own progress and summary
    print(f"edgeseal demo: device {DEVICE_ID}, {seconds:g} s of plant data, in {directory}", flush=True)
    with contextlib.ExitStack() as stack:
        identity, key_text, identity_yaml = _identity(stack, directory)
        with _step("starting the development chain" if rpc is None else f"preparing the node at {rpc}"):
            chain = _chain(stack, directory, rpc)
        broker = _broker(stack, directory)
        plant = Plant(free_port(), free_port())
        config = load_config(_write_config(directory, identity_yaml, plant, chain, broker))
        waiting_before = _waiting(config.buffer.dir)
        started = time.time_ns()
        stats = asyncio.run(_run_for(config, plant, seconds))
        with _step("exporting a full and a selective bundle, and verifying them"):
            anchored, checked = _export_and_verify(directory, config.buffer.dir, identity.ca_path, started)
        with _step("checking this run's anchors on the chain"):  # while the development chain runs
            on_chain = asyncio.run(_check_on_chain(chain.url, checked[0].report, anchored))
        with _step(f"changing one reading in a copy of {FULL}, and verifying the copy"):
            forged, tampering = _tamper(checked[0], directory / TAMPERED, identity.ca_path)

    print("\nsummary")
    print(f"  device      {DEVICE_ID}, {key_text}")
    print(f"  chain       {chain.label}")
    print(f"  chain key   {chain.account} in {directory / CHAIN_KEY}, {KEY_LABEL}")
    print("\n".join(_sources_lines(config, checked[0].bundle)))
    print(f"  agent       boot {stats.boot}: {stats.seals} seals made, device log size {stats.log_size},", end=" ")
    print(f"{stats.dropped} readings dropped")
    print(_mqtt_line(broker, config.buffer.dir, stats.seals + waiting_before))
    print(_anchors_line(anchored, checked[0].bundle.anchors, chain, stats.log_size, config.seal.checkpoint_interval))
    print("\n".join(_on_chain_lines(on_chain)))
    print(render_text(checked[0].report, str(checked[0].path)))
    print(_selective_line(checked[1]))
    print("\n".join(_tampered_lines(forged, tampering)))
    print(f"  state       {config.buffer.dir}")
    print("\n".join(_by_hand(directory, identity.ca_path, config.buffer.dir, chain)))
    genuine = all(c.report.valid for c in checked) and all(check.verified for check in on_chain)
    return 0 if genuine and not forged.report.valid else 1


# -- progress -----------------------------------------------------------------------------


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """One line for a long step: what it is, then how long it took (or that it failed). A
    step named with a trailing colon prints its own progress on the line."""
    print(f"  {what} ", end="" if what.endswith(":") else "... ", flush=True)
    began = time.monotonic()
    try:
        yield
    except BaseException:
        print("failed", flush=True)
        raise
    print(f"done ({time.monotonic() - began:.1f} s)", flush=True)


async def _run_for(config: Any, plant: Plant, seconds: float) -> RunStats:
    """The plant simulators started, the agent run for `seconds` with a dot a second, the
    simulators stopped."""
    stop = asyncio.Event()
    install_signal_handlers(stop)
    async with contextlib.AsyncExitStack() as stack:
        with _step(f"starting the plant: Modbus TCP press PLC at {plant.modbus_url}, OPC UA line controller"):
            await stack.enter_async_context(plant)
        with _step(f"running the agent for {seconds:g} s:"):
            asyncio.get_running_loop().call_later(seconds, stop.set)
            dots = asyncio.create_task(_dots())
            try:
                stats = await run_agent(config, stop)
            finally:
                dots.cancel()
            print(" ", end="")  # after the dots
    return stats


async def _dots() -> None:
    """A dot every second, the seconds so far every tenth: the run is alive and how far along."""
    elapsed = 0
    while True:  # until cancelled once the agent has stopped
        await asyncio.sleep(1)
        elapsed += 1
        print(elapsed if elapsed % 10 == 0 else ".", end="", flush=True)


# -- set-up -------------------------------------------------------------------------------


def _identity(stack: contextlib.ExitStack, directory: Path) -> tuple[DemoIdentity, str, str]:
    """The device identity (in a software TPM started with `stack`, when swtpm is
    installed), how to say where its key is, and the config's `identity:` section."""
    if swtpm_available():
        with _step("starting a software TPM (swtpm) and making the device key in it"):
            tpm = stack.enter_context(SoftwareTpm(manufacture(directory / "swtpm")))
            identity = make_demo_tpm_identity(directory, DEVICE_ID, parse_tcti(tpm.tcti), DEFAULT_HANDLE)
        key_text = f"key in a software TPM (swtpm, {tpm.tcti})"
        identity_yaml = f'identity:\n  signer: tpm\n  tpm: {{tcti: "{tpm.tcti}"}}\n  cert_chain: device-chain.pem\n'
        return identity, key_text, identity_yaml
    print("  swtpm is not installed: the device key is a SOFTWARE KEY in a file", flush=True)
    identity = make_demo_identity(directory, DEVICE_ID)
    key_text = "SOFTWARE KEY (development only, not a TPM: install swtpm for a TPM-held key)"
    identity_yaml = "identity:\n  signer: software\n  key: device-key.pem\n  cert_chain: device-chain.pem\n"
    return identity, key_text, identity_yaml


def _broker(stack: contextlib.ExitStack, directory: Path) -> Mosquitto | None:
    """A local Mosquitto broker, stopped with `stack`; None when Mosquitto is not installed."""
    executable = find_mosquitto()
    if executable is None:
        print("  Mosquitto is not installed: sealed batches stay in the buffer, none published", flush=True)
        return None
    with _step("starting an MQTT broker (mosquitto)"):
        return stack.enter_context(Mosquitto(executable, directory / "mosquitto"))


def _write_config(
    directory: Path, identity_yaml: str, plant: Plant, chain: DemoChain, broker: Mosquitto | None
) -> Path:
    """DIR/edgeseal.yaml: the embedded template with this run's identity, ports and sections."""
    template = importlib.resources.files("agent").joinpath("demo_config.yaml").read_text()
    text = (
        template.replace("identity: {}\n", identity_yaml)
        .replace("tcp://127.0.0.1:MODBUS_PORT", plant.modbus_url)
        .replace("opc.tcp://127.0.0.1:OPCUA_PORT/edgeseal-demo/", plant.opcua_url)
    )
    mqtt = f"mqtt:\n  url: {broker.url}\n" if broker else ""
    path = directory / "edgeseal.yaml"
    path.write_text(text + mqtt + _anchor_yaml(chain))
    return path


# -- export, verify, tamper ---------------------------------------------------------------


def _export_and_verify(
    directory: Path, state_dir: str, ca_path: Path, started: int
) -> tuple[list[Anchor], list[Checked]]:
    """This run's anchor records, and the full and selective bundles written and verified."""
    roots = x509.load_pem_x509_certificates(ca_path.read_bytes())
    buffer = Buffer.open(state_dir, create=False)
    try:
        anchored = [decode_anchor(a.record) for a in buffer.anchors.anchored() if a.t >= started]
        exports = [
            (directory / FULL, Selection()),
            (directory / f"{DISCLOSED_TAG}.cbor", Selection(frozenset({DISCLOSED_TAG}))),
        ]
        checked = []
        for path, selection in exports:
            bundle, _ = export_bundle(buffer, selection)
            path.write_bytes(bundle.encode())
            checked.append(Checked(path, bundle, verify_bundle(path.read_bytes(), roots)))
    finally:
        buffer.close()
    return anchored, checked


async def _check_on_chain(url: str, report: Report, anchored: list[Anchor]) -> list[AnchorCheck]:
    """This run's anchor records checked on the chain, as `edgeseal verify --rpc` checks
    them. (Records of earlier runs name development chains that are gone.)"""
    claims = [claim for claim in report.anchors if claim.record in anchored]
    chain = Chain.connect(url)
    try:
        return await check_anchors(chain, claims)
    finally:
        await chain.close()


def _on_chain_lines(checks: list[AnchorCheck]) -> list[str]:
    lines = []
    for check in checks:
        where = f"log size {check.claim.checkpoint.size} in block {check.claim.record.block}"
        if check.verified and check.log is not None:
            submitter = "0x" + check.log.event.submitter.hex()
            lines.append(
                f"  on chain    {where}: VERIFIED ({check.confirmations} confirmations, submitter {submitter})"
            )
        else:
            lines.append(f"  on chain    {where}: NOT VERIFIED: {'; '.join(check.problems)}")
    return lines


def _tamper(genuine: Checked, path: Path, ca_path: Path) -> tuple[Checked, Tampering]:
    """A copy of the genuine full bundle with one reading changed, written to `path` and verified."""
    forged, tampering = tamper(genuine.bundle, TAMPERED_TAG)
    path.write_bytes(forged.encode())
    roots = x509.load_pem_x509_certificates(ca_path.read_bytes())
    return Checked(path, forged, verify_bundle(path.read_bytes(), roots)), tampering


def _waiting(state_dir: str) -> int:
    """Sealed batches the broker has not acknowledged yet (none before the first run)."""
    if not Path(state_dir).exists():
        return 0
    buffer = Buffer.open(state_dir, create=False)
    try:
        return buffer.backlog().batches
    finally:
        buffer.close()


# -- the summary --------------------------------------------------------------------------


def _sources_lines(config: Any, bundle: Bundle) -> list[str]:
    """Each source: its driver, where it reads, and its readings in the full bundle."""
    tags: Counter[str] = Counter()
    bad: Counter[str] = Counter()
    for batch in bundle.batches:
        for leaf in map(decode_leaf, batch.readings if isinstance(batch, Batch) else ()):
            tags[leaf.tag] += 1
            if is_bad(leaf.quality):
                bad[leaf.tag] += 1
    lines = []
    for source in config.sources:
        names = [name for _, name in source.tag_names()]
        where = f", {source.url}" if hasattr(source, "url") else ""
        count, failed = sum(tags[n] for n in names), sum(bad[n] for n in names)
        of_them = f", {failed} of them Bad (no value)" if failed else ""
        heading = "  sources     " if not lines else " " * 14
        lines.append(f"{heading}{source.name} ({source.type}{where}): {count} readings of {len(names)} tags{of_them}")
    return lines


def _mqtt_line(broker: Mosquitto | None, state_dir: str, to_send: int) -> str:
    if broker is None:
        return "  mqtt        SKIPPED: Mosquitto is not installed (apt-get install mosquitto), nothing was published"
    waiting = _waiting(state_dir)
    left = f"{waiting} still in the buffer, sent at the next run" if waiting else "none left in the buffer"
    return f"  mqtt        {to_send - waiting} of {to_send} batches acknowledged by mosquitto at {broker.url}; {left}"


def _selective_line(checked: Checked) -> str:
    verdict = "VALID" if checked.report.valid else "INVALID"
    disclosed = ", ".join(f"{tag} ({n})" for tag, n in sorted(checked.report.tags.items()))
    return f"{checked.path}: {verdict}\n  disclosed   {disclosed}; nothing else of the batches is revealed"


def _tampered_lines(forged: Checked, tampering: Tampering) -> list[str]:
    change = f"{tampering.tag} at seq {tampering.seq} changed from {tampering.genuine:.6g} to {tampering.forged:.6g}"
    if forged.report.valid:
        return [f"{forged.path}: VALID, BUT IT MUST NOT BE: {change}"]
    return [f"{forged.path}: INVALID, as expected ({change})"] + [
        f"  FINDING     {finding}" for finding in forged.report.findings
    ]


def _by_hand(directory: Path, ca_path: Path, state_dir: str, chain: DemoChain) -> list[str]:
    on_chain = f" --rpc {chain.url}" if chain.persistent else ""  # the development chain is gone by then
    return [
        "  verify by hand:",
        f"    edgeseal verify {directory / FULL} --ca {ca_path}{on_chain}",
        f"    edgeseal verify {directory / TAMPERED} --ca {ca_path}      # exit 1: a finding",
        f"    edgeseal export --state-dir {state_dir} -o temp.cbor --tag {DISCLOSED_TAG}",
    ]


# -- the chain ----------------------------------------------------------------------------


def _chain(stack: contextlib.ExitStack, directory: Path, rpc: str | None) -> DemoChain:
    """The development chain (stopped with `stack`), or the node at `rpc`, with the
    registry deployed and the demo's chain account funded."""
    account = _chain_account(directory)
    return _development_chain(stack, account) if rpc is None else _node(directory, rpc, account)


def _development_chain(stack: contextlib.ExitStack, account: str) -> DemoChain:
    chain = stack.enter_context(devchain.DevChain())
    contract = devchain.deploy_registry(chain.url)
    devchain.fund(chain.url, account, FUNDS)
    label = (
        f"development chain {chain.chain_id} at {chain.url}: eth-tester (py-evm) in this process,"
        f" new at every run; AnchorRegistry {contract}"
    )
    return DemoChain(chain.url, chain.chain_id, contract, account, label, persistent=False)


def _node(directory: Path, rpc: str, account: str) -> DemoChain:
    """A local node: the registry of the last run if the node still holds it, else a new
    one, recorded for the next run; the account topped up from the node's first account."""
    chain_id = int(devchain.rpc(rpc, "eth_chainId", []), 16)
    contract = _last_registry(directory, rpc, chain_id)
    new = contract is None
    if contract is None:
        contract = devchain.deploy_registry(rpc)
        record = {"rpc": rpc, "chain_id": chain_id, "contract": contract}
        (directory / REGISTRY_FILE).write_text(json.dumps(record) + "\n")
    if int(devchain.rpc(rpc, "eth_getBalance", [account, "latest"]), 16) < FUNDS:
        devchain.fund(rpc, account, FUNDS)
    label = f"node at {rpc}, chain {chain_id}; AnchorRegistry {contract} ({'deployed now' if new else 'as last run'})"
    return DemoChain(rpc, chain_id, contract, account, label, persistent=True)


def _chain_account(directory: Path) -> str:
    """The demo's chain account, made at the first run: a keystore whose passphrase is in
    a plain file beside it (development only)."""
    keystore, passphrase_file = directory / CHAIN_KEY, directory / CHAIN_PASSPHRASE
    if not keystore.exists():
        passphrase = secrets.token_urlsafe(24)
        fd = os.open(passphrase_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(passphrase + "\n")
        create_keystore(keystore, passphrase.encode())
    return keystore_address(keystore)


def _last_registry(directory: Path, rpc: str, chain_id: int) -> str | None:
    """The registry the last run deployed on this node, if the node still holds it. (A
    new registry at every run would let the agent settle a transaction it sent to the old
    one as an anchor in the new one.)"""
    try:
        last = json.loads((directory / REGISTRY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(last, dict) or (last.get("rpc"), last.get("chain_id")) != (rpc, chain_id):
        return None
    code = devchain.rpc(rpc, "eth_getCode", [last.get("contract"), "latest"])
    return str(last["contract"]) if bytes.fromhex(code.removeprefix("0x")) == deployed_code() else None


def _anchor_yaml(chain: DemoChain) -> str:
    """The `anchor:` section: every checkpoint anchored as soon as it is made (the demo
    makes one every 5 s); a local chain's blocks are final once mined."""
    return f"""anchor:
  rpc: {chain.url}
  chain_id: {chain.chain_id}
  contract: "{chain.contract}"
  key: {{keystore: {CHAIN_KEY}, passphrase_file: {CHAIN_PASSPHRASE}}}
  finality: immediate
  interval: 2s
  poll_interval: 200ms
  reconnect_delay: 200ms
  reconnect_delay_max: 2s
"""


def _anchors_line(anchored: list[Anchor], carried: list[Anchor], chain: DemoChain, log_size: int, every: float) -> str:
    """This run's anchors, and whether the exported bundle carries them."""
    if not anchored:
        return f"  anchors     none this run (a checkpoint comes every {every:g} s: run longer, e.g. --seconds 10)"
    last = max(anchored, key=lambda a: a.block)
    ours = {a.tx for a in anchored}
    carries = "carries them" if ours <= {a.tx for a in carried} else "DOES NOT CARRY them all"
    earlier = sum(1 for a in carried if a.tx not in ours)
    gone = ", on development chains now gone" if not chain.persistent else ""
    older = f" and {earlier} of earlier runs{gone}" if earlier else ""
    return (
        f"  anchors     {len(anchored)} this run, up to log size {_size(last)} of {log_size},"
        f" the last in block {last.block} of chain {chain.chain_id}; the bundle {carries}{older}"
    )


def _size(anchor: Anchor) -> int:
    return open_checkpoint(anchor.checkpoint)[1].size
