"""`edgeseal demo`: the whole stack on one box with embedded defaults.

A simulated press line -> sealed buffer -> anchored on a chain -> export -> verify, with a
short summary. The device key is in a software TPM (swtpm, started in DIR/swtpm) when
swtpm is installed, else in a file, and every output says which.
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
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from agent.anchor import devchain
from agent.anchor.keystore import create_keystore, keystore_address
from agent.anchor.registry import deployed_code
from agent.buffer.store import Buffer
from agent.config import load_config
from agent.errors import UsageError
from agent.export import Selection, export_bundle
from agent.keys.tpm.handles import DEFAULT_HANDLE
from agent.keys.tpm.tcti import parse_tcti
from agent.report import render_text
from agent.runtime import RunStats, install_signal_handlers, run_agent
from agent.trust.bundle import Anchor, Bundle, decode_anchor
from agent.trust.payloads import open_checkpoint
from agent.trust.verify import Report, verify_bundle
from provisioning.devca import DemoIdentity, make_demo_identity, make_demo_tpm_identity
from provisioning.swtpm import SoftwareTpm, manufacture, swtpm_available

DEVICE_ID = "demo-press-line-1"
DISCLOSED_TAG = "press.temperature"
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


def run_demo(directory: Path, seconds: float, rpc: str | None = None) -> int:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{directory}: cannot use as the demo directory: {exc.strerror}") from None
    with contextlib.ExitStack() as stack:
        identity, key_text, identity_yaml = _identity(stack, directory)
        chain = _chain(stack, directory, rpc)
        config_path = directory / "edgeseal.yaml"
        template = importlib.resources.files("agent").joinpath("demo_config.yaml").read_text()
        config_path.write_text(template.replace("identity: {}\n", identity_yaml) + _anchor_yaml(chain))
        config = load_config(config_path)
        logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own summary
        print(f"edgeseal demo: device {DEVICE_ID}, {key_text}, {seconds:g} s")
        print(f"  chain       {chain.label}")
        print(f"  chain key   {chain.account} in {directory / CHAIN_KEY}, {KEY_LABEL}")
        started = time.time_ns()
        stats = asyncio.run(_run_for(config, seconds))
    print(f"  agent       boot {stats.boot}: {stats.seals} seals made, device log size {stats.log_size},", end=" ")
    print(f"{stats.dropped} readings dropped")

    anchored, results = _export_and_verify(directory, config.buffer.dir, identity.ca_path, started)
    carried = results[0][1].anchors  # the full bundle's
    print(_anchors_line(anchored, carried, chain, stats.log_size, config.seal.checkpoint_interval))
    for path, _, report in results:
        print(render_text(report, str(path)))
    print(f"  state       {config.buffer.dir}")
    on_chain = f" --rpc {chain.url}" if chain.persistent else ""  # the development chain is gone by then
    print(f"  verify with edgeseal verify {directory / 'bundle.cbor'} --ca {identity.ca_path}{on_chain}")
    return 0 if all(report.valid for _, _, report in results) else 1


def _identity(stack: contextlib.ExitStack, directory: Path) -> tuple[DemoIdentity, str, str]:
    """The device identity (in a software TPM started with `stack`, when swtpm is
    installed), how to say where its key is, and the config's `identity:` section."""
    if swtpm_available():
        tpm = stack.enter_context(SoftwareTpm(manufacture(directory / "swtpm")))
        identity = make_demo_tpm_identity(directory, DEVICE_ID, parse_tcti(tpm.tcti), DEFAULT_HANDLE)
        key_text = f"key in a software TPM (swtpm, {tpm.tcti})"
        identity_yaml = f'identity:\n  signer: tpm\n  tpm: {{tcti: "{tpm.tcti}"}}\n  cert_chain: device-chain.pem\n'
        return identity, key_text, identity_yaml
    identity = make_demo_identity(directory, DEVICE_ID)
    key_text = "SOFTWARE KEY (development only, not a TPM: install swtpm for a TPM-held key)"
    identity_yaml = "identity:\n  signer: software\n  key: device-key.pem\n  cert_chain: device-chain.pem\n"
    return identity, key_text, identity_yaml


def _export_and_verify(
    directory: Path, state_dir: str, ca_path: Path, started: int
) -> tuple[list[Anchor], list[tuple[Path, Bundle, Report]]]:
    """This run's anchor records, and the full and selective bundles written and verified."""
    roots = x509.load_pem_x509_certificates(ca_path.read_bytes())
    buffer = Buffer.open(state_dir, create=False)
    try:
        anchored = [decode_anchor(a.record) for a in buffer.anchors.anchored() if a.t >= started]
        exports = [
            (directory / "bundle.cbor", Selection()),
            (directory / f"{DISCLOSED_TAG}.cbor", Selection(frozenset({DISCLOSED_TAG}))),
        ]
        results = []
        for path, selection in exports:
            bundle, _ = export_bundle(buffer, selection)
            path.write_bytes(bundle.encode())
            results.append((path, bundle, verify_bundle(path.read_bytes(), roots)))
    finally:
        buffer.close()
    return anchored, results


async def _run_for(config: object, seconds: float) -> RunStats:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    asyncio.get_running_loop().call_later(seconds, stop.set)
    stats = await run_agent(config, stop)
    return stats


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
