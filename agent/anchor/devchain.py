"""A development chain in this process: eth-tester (py-evm) served over real HTTP JSON-RPC.

The demo anchors on it through the agent's production path (an `AsyncHTTPProvider`
against a URL), and `edgeseal verify --rpc URL` can be pointed at it while it runs. It
mines each transaction into a block of its own at once (the agent's `finality:
immediate`), and it keeps nothing: every start is a new chain with the same chain id and
the same funded, unlocked dev accounts, so a registry deployed first by the first account
is at the same address every time.

HTTP is served by `http.server` on 127.0.0.1 from a thread of this module: eth-tester is
synchronous and CPU-bound, and must not stall the agent's event loop. Each request gets
a short-lived handler thread (HTTP/1.0: no connection outlives its answer), and one lock
serialises every call into eth-tester, which is not thread-safe. `stop()` joins them all.

`deploy_registry` and `fund` speak plain JSON-RPC (urllib) to any node with unlocked dev
accounts: this chain, or a local anvil given to `edgeseal demo --rpc`.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from eth_tester import EthereumTester, PyEVMBackend
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider

from agent.anchor.registry import creation_code, deployed_code
from agent.errors import UsageError

HOST = "127.0.0.1"
REQUEST_TIMEOUT = 2.0  # s a client may take to send its request (local clients send at once); bounds stop()
POLL = 0.05  # s between the server's looks at a stop request
MAX_BODY = 1 << 20  # no JSON-RPC request of the agent's comes near 1 MiB
CLIENT_TIMEOUT = 10.0  # s for a node's answer
DEPLOY_GAS = 1_000_000  # the registry's creation takes 225,434 (paris bytecode)
RECEIPT_WAIT = 30.0  # s: a node with a block time (anvil --block-time) mines within it
# JSON-RPC 2.0 error codes; -32000 is what geth and anvil answer for a refused request
PARSE_ERROR, INVALID_REQUEST, SERVER_ERROR = -32700, -32600, -32000
WRONG_NONCE = re.compile(r"Invalid transaction nonce: Expected (\d+), but got (\d+)")
Call = Callable[[str, list[Any]], dict[str, Any]]  # one JSON-RPC call into eth-tester: its response object


class DevChain:
    """`with DevChain() as chain:` a new chain at `chain.url` until the block ends."""

    def __init__(self) -> None:
        provider = EthereumTesterProvider(EthereumTester(PyEVMBackend()))
        web3 = Web3(provider, middleware=[])
        # web3's eth-tester middleware turns JSON-RPC params into eth-tester's and back
        dispatcher = Dispatcher(provider.request_func(web3, web3.middleware_onion))
        self._server = _Server((HOST, 0), _handler(dispatcher))
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(POLL,), name="devchain-http", daemon=True
        )
        self.chain_id = int(dispatcher.call("eth_chainId", [])["result"], 16)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> DevChain:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()  # joins the handler threads still answering

    def __enter__(self) -> DevChain:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads: none is left running


class Dispatcher:
    """JSON-RPC bodies in, JSON-RPC bodies out, one call into eth-tester at a time."""

    def __init__(self, request: Call) -> None:
        self._request, self._lock = request, threading.Lock()

    def answer(self, body: bytes) -> bytes:
        try:
            message = json.loads(body)
        except ValueError as exc:
            return json.dumps(_error(None, PARSE_ERROR, f"parse error: {exc}")).encode()
        if isinstance(message, list):  # a batch: answered in order, each on its own
            answers: Any = [self._one(item) for item in message] or _error(None, INVALID_REQUEST, "empty batch")
        else:
            answers = self._one(message)
        return json.dumps(answers).encode()

    def call(self, method: str, params: list[Any]) -> dict[str, Any]:
        """The JSON-RPC response object for one call; every failure is an error object."""
        with self._lock:
            try:
                response = _translated(self._request, method, params)
                if "result" in response:
                    return {"jsonrpc": "2.0", "result": _as_json(response["result"])}
            except Exception as exc:  # whatever eth-tester raises for a request, its client gets an answer
                return {"jsonrpc": "2.0", "error": {"code": SERVER_ERROR, "message": _reason(exc)}}
        return {"jsonrpc": "2.0", "error": response["error"]}

    def _one(self, request: object) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error(None, INVALID_REQUEST, "expected a JSON-RPC request object with a method")
        params = request.get("params", [])
        if not isinstance(params, list):
            return _error(request.get("id"), INVALID_REQUEST, "expected params as an array")
        return {**self.call(request["method"], params), "id": request.get("id")}


def _translated(request: Call, method: str, params: list[Any]) -> dict[str, Any]:
    """eth-tester's answer, with the one call of the agent's (and the verifier's) that it
    lacks: eth_getLogs by blockHash (EIP-234), asked by the number of the block with that
    hash (eth-tester has no reorgs: that block is the canonical one)."""
    if method == "eth_getLogs" and params and isinstance(params[0], dict) and "blockHash" in params[0]:
        criteria = dict(params[0])
        block_hash = criteria.pop("blockHash")
        block = request("eth_getBlockByHash", [block_hash, False]).get("result")
        if block is None:
            return {"jsonrpc": "2.0", "error": {"code": SERVER_ERROR, "message": f"unknown block {block_hash}"}}
        criteria["fromBlock"] = criteria["toBlock"] = hex(block["number"])
        return request(method, [criteria])
    return request(method, params)


def _reason(exc: Exception) -> str:
    text = str(exc.args[0]) if len(exc.args) == 1 else str(exc)
    # py-evm's words for a wrong nonce, said as geth and anvil say them (the worker reads "nonce too low")
    if wrong := WRONG_NONCE.search(text):
        expected, got = int(wrong[1]), int(wrong[2])
        return f"nonce too {'low' if got < expected else 'high'}: next nonce {expected}, transaction's {got}"
    return text or type(exc).__name__


def _error(request_id: object, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _as_json(value: Any, key: str = "") -> Any:
    """eth-tester's Python values as JSON-RPC: integers are hex quantities, bytes hex data;
    the one integer that is data is the 256-byte logs bloom."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return "0x" + value.to_bytes(256, "big").hex() if key == "logsBloom" else hex(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, dict):
        return {k: _as_json(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    raise TypeError(f"no JSON-RPC form for {type(value).__name__}")


def _handler(dispatcher: Dispatcher) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT

        def do_POST(self) -> None:  # the name http.server dispatches a POST to
            text = self.headers.get("Content-Length", "")
            length = int(text) if text.isdigit() else 0
            if not 0 < length <= MAX_BODY:
                self.send_error(413 if length else 411)
                return
            self._reply(dispatcher.answer(self.rfile.read(length)))

        def _reply(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request on stderr would drown the demo's output

    return Handler


# -- any node with unlocked dev accounts: deploy and fund over JSON-RPC ------------------


def deploy_registry(url: str) -> str:
    """Deploys the AnchorRegistry from the node's first unlocked account; its address once
    the receipt says it succeeded and the address holds the registry's code (a failed
    deploy still names a contractAddress)."""
    deployer = _first_account(url)
    deploy = {"from": deployer, "data": "0x" + creation_code().hex(), "gas": hex(DEPLOY_GAS)}
    tx = rpc(url, "eth_sendTransaction", [deploy])
    receipt = _receipt(url, tx)
    address = receipt.get("contractAddress")
    if int(receipt["status"], 16) != 1 or not address:
        raise UsageError(f"{url}: deploying the AnchorRegistry failed (transaction {tx}, status {receipt['status']})")
    code = bytes.fromhex(rpc(url, "eth_getCode", [address, "latest"]).removeprefix("0x"))
    if code != deployed_code():
        raise UsageError(
            f"{url}: the AnchorRegistry deployed at {address} has other code ({len(code)} bytes):"
            " a chain older than the paris fork?"
        )
    return Web3.to_checksum_address(address)


def fund(url: str, address: str, wei: int) -> None:
    """Sends `wei` from the node's first unlocked account to `address`."""
    sender = _first_account(url)
    tx = rpc(url, "eth_sendTransaction", [{"from": sender, "to": address, "value": hex(wei), "gas": hex(21_000)}])
    if int(_receipt(url, tx)["status"], 16) != 1:
        raise UsageError(f"{url}: funding {address} failed (transaction {tx})")


def rpc(url: str, method: str, params: list[Any]) -> Any:
    """The result of one JSON-RPC call; UsageError, saying why, when there is none."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT) as response:
            answer = json.load(response)
    except (OSError, ValueError) as exc:  # URLError, HTTPError and timeouts are OSErrors
        raise UsageError(f"{url}: {method} got no answer from the node: {exc}") from None
    if not isinstance(answer, dict) or "error" in answer or "result" not in answer:
        error = answer.get("error") if isinstance(answer, dict) else answer
        raise UsageError(f"{url}: the node refused {method}: {error}")
    return answer["result"]


def _first_account(url: str) -> str:
    accounts = rpc(url, "eth_accounts", [])
    if not accounts:
        raise UsageError(f"{url}: the node has no unlocked account to deploy and fund with (a dev node like anvil has)")
    return str(accounts[0])


def _receipt(url: str, tx: str) -> dict[str, Any]:
    deadline = time.monotonic() + RECEIPT_WAIT
    while (receipt := rpc(url, "eth_getTransactionReceipt", [tx])) is None:
        if time.monotonic() > deadline:
            raise UsageError(f"{url}: transaction {tx} not mined after {RECEIPT_WAIT:g} s")
        time.sleep(0.1)
    return dict(receipt)
