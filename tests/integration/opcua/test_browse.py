"""`edgeseal browse` against real OPC UA servers (tests/opcua_servers.py; node-opcua for
BrowseNext): the tree, the YAML (which loads through the configuration loader and whose node
ids read the right values), --depth, --node, security and users; each failure is one line
and exit 1, bad usage exit 2; and a big address space costs a handful of requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Server, ua
from asyncua.client.ua_client import UaClient
from cli_runner import in_process
from cryptography import x509
from node_opcua import NodeOpcuaServer
from opcua_servers import Bulk, OpcUaServer, ServerFarm, ServerSpec, Variable, free_port, make_certificate

from agent.config import Config, load_config
from drivers.opcua.browse import OBJECTS, Walker
from drivers.opcua.browse_render import render_tree
from drivers.opcua.config import SourceConfig
from drivers.opcua.nodeid import NodeRef
from drivers.opcua.pki import Pki, thumbprint
from drivers.opcua.security import SecuritySettings
from drivers.opcua.session import Session

NS = "urn:edgeseal-test:plant"
OTHER_NS = "urn:edgeseal-test:other"
HEADER = "device:\n  id: gw1\nidentity:\n  key: device.pem\n  cert_chain: chain.pem\n"
VARIABLES = (
    Variable("Temp", value=21.5, eu_range=(0.0, 100.0)),
    Variable("Counter", type="Int32", value=-7),
    Variable("Running", type="Boolean", value=True),
    Variable("Recipe", type="String", value="Bracket-7 Ø12"),
    Variable("Secret", type="Int32", value=0, readable=False),
    Variable("Name", type="String", value="press 7", namespace=OTHER_NS, id="i=1001"),
    Variable("Profile", value=[1.5, 2.5], array=True, parent="Plant/Line2"),
    Variable("Deep", type="UInt16", value=5, parent="Plant/Area/Cell/Line3"),
)
# what the YAML's tags read: tag name -> value
READS = {
    "plant.line1.temp": 21.5,
    "plant.line1.counter": -7,
    "plant.line1.running": True,
    "plant.line1.recipe": "Bracket-7 Ø12",
    "plant.line1.name": "press 7",
    "plant.line2.profile": [1.5, 2.5],
}


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpcUaServer]:
    """One server for the tests that only read it; its namespace indexes moved by 2, so an
    index where a URI belongs would name the wrong namespace."""
    farm = ServerFarm(tmp_path_factory.mktemp("plant"))
    try:
        yield farm.start(ServerSpec(namespaces=(NS, OTHER_NS), shift=2, variables=VARIABLES))
    finally:
        farm.close()


@pytest.fixture
def browse(capsys: pytest.CaptureFixture[str]):
    """`edgeseal browse ...` in-process; an escaping exception is a traceback."""
    return in_process(capsys, "browse")


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "edgeseal.yaml"
    path.write_text(HEADER + text, encoding="utf-8")
    return load_config(path, env={})


def tags(config: Config) -> dict[str, NodeRef]:
    [source] = config.sources
    assert isinstance(source, SourceConfig)
    [group] = source.groups
    return {tag.name: tag.ref() for tag in group.tags}


async def read_values(url: str, refs: dict[str, NodeRef]) -> dict[str, Any]:
    async with Client(url, timeout=5) as client:
        namespaces = await client.get_namespace_array()
        nodes = {name: ua.NodeId(ref.identifier, namespaces.index(ref.namespace)) for name, ref in refs.items()}
        return {name: await client.get_node(node).read_value() for name, node in nodes.items()}


def test_tree_lists_objects_and_variables_without_properties(plant: OpcUaServer, browse) -> None:
    result = browse(plant.url)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "  Plant  nsu=urn:edgeseal-test:plant;s=Plant" in lines
    assert "    Line1  nsu=urn:edgeseal-test:plant;s=Plant/Line1" in lines
    assert "      Temp  nsu=urn:edgeseal-test:plant;s=Plant/Line1/Temp  Double  readable" in lines
    assert "      Counter  nsu=urn:edgeseal-test:plant;s=Plant/Line1/Counter  Int32  readable" in lines
    assert "      Secret  nsu=urn:edgeseal-test:plant;s=Plant/Line1/Secret  Int32  not readable" in lines
    assert "      Name  nsu=urn:edgeseal-test:other;i=1001  String  readable" in lines
    assert "      Profile  nsu=urn:edgeseal-test:plant;s=Plant/Line2/Profile  Double[]  readable" in lines
    assert "EURange" not in result.out  # a property, not a tag
    assert "i=2253" not in result.out  # the Server object
    assert "Deep" not in result.out  # 5 levels down
    assert lines[-1] == "7 variables, 6 readable"


def test_yaml_loads_and_its_tags_read_the_variables(plant: OpcUaServer, browse, tmp_path: Path) -> None:
    result = browse(plant.url, "--yaml")
    assert result.code == 0, result.err
    assert "ns=" not in result.out.replace("nsu=", "")
    assert "EURange" not in result.out
    assert "          # Double, Objects/Plant/Line1/Temp\n          - name: plant.line1.temp\n" in result.out
    assert "#   Int32, Objects/Plant/Line1/Secret  nsu=urn:edgeseal-test:plant;s=Plant/Line1/Secret" in result.out
    config = load(tmp_path, result.out)
    [source] = config.sources
    assert (source.name, source.url) == ("127.0.0.1", plant.url)
    found = tags(config)
    assert set(found) == set(READS)  # the unreadable Secret left out
    assert found["plant.line1.name"] == NodeRef(OTHER_NS, "i", 1001)
    assert asyncio.run(read_values(plant.url, found)) == READS


def test_depth_limits_the_walk(plant: OpcUaServer, browse) -> None:
    shallow = browse(plant.url, "--depth", "1")
    assert shallow.code == 0, shallow.err
    assert "  Plant  nsu=urn:edgeseal-test:plant;s=Plant" in shallow.out.splitlines()
    assert "Line1" not in shallow.out
    assert shallow.out.endswith("\n0 variables, 0 readable\n")

    deep = browse(plant.url, "--depth", "5")
    assert deep.code == 0, deep.err
    assert "          Deep  nsu=urn:edgeseal-test:plant;s=Plant/Area/Cell/Line3/Deep  UInt16  readable" in deep.out


def test_each_node_is_listed_once_in_an_address_space_with_cycles() -> None:
    """Line1 is a notifier of Plant (a cycle) and Line2 organizes Line1 (a second parent):
    a server of this test's own, since a client may not add references to the test server."""

    async def walk() -> str:
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{free_port()}/cycles/")
        ns = await server.register_namespace(NS)
        plant = await server.nodes.objects.add_folder(ua.NodeId("Plant", ns), "Plant")
        line1 = await plant.add_object(ua.NodeId("Plant/Line1", ns), "Line1")
        line2 = await plant.add_object(ua.NodeId("Plant/Line2", ns), "Line2")
        await line1.add_variable(ua.NodeId("Plant/Line1/Temp", ns), "Temp", 21.5)
        await line1.add_reference(plant, ua.ObjectIds.HasNotifier, bidirectional=False)
        await line2.add_reference(line1, ua.ObjectIds.Organizes, bidirectional=False)
        async with server:
            settings = SecuritySettings("None", "None", "urn:edgeseal-test:client", Path("pki"))
            session = await Session.open(server.endpoint.geturl(), settings, 5.0, 60.0)
            try:
                return render_tree(await Walker(session).walk(OBJECTS, 8))
            finally:
                await session.close()

    lines = asyncio.run(walk()).splitlines()
    assert [line for line in lines if "Plant" in line] == [
        "  Plant  nsu=urn:edgeseal-test:plant;s=Plant",
        "    Line1  nsu=urn:edgeseal-test:plant;s=Plant/Line1",
        "      Temp  nsu=urn:edgeseal-test:plant;s=Plant/Line1/Temp  Double  readable",
        "    Line2  nsu=urn:edgeseal-test:plant;s=Plant/Line2",
    ]


def test_yaml_without_a_readable_variable_is_a_finding(plant: OpcUaServer, browse) -> None:
    result = browse(plant.url, "--depth", "1", "--yaml")
    assert result.code == 1
    assert "no readable variable within 1 levels below Objects" in result.error()
    assert result.out == ""


def test_node_sets_the_start_and_the_names_begin_there(plant: OpcUaServer, browse, tmp_path: Path) -> None:
    start = f"nsu={NS};s=Plant/Line1"
    tree = browse(plant.url, "--node", start, "--depth", "1")
    assert tree.code == 0, tree.err
    lines = tree.out.splitlines()
    assert lines[0] == "Line1  nsu=urn:edgeseal-test:plant;s=Plant/Line1"
    assert lines[1] == "  Temp  nsu=urn:edgeseal-test:plant;s=Plant/Line1/Temp  Double  readable"
    assert "Plant/Line2" not in tree.out

    yaml_result = browse(plant.url, "--node", start, "--yaml")
    assert yaml_result.code == 0, yaml_result.err
    assert set(tags(load(tmp_path, yaml_result.out))) == {
        "line1.temp",
        "line1.counter",
        "line1.running",
        "line1.recipe",
        "line1.name",
    }


def test_the_server_object_is_walked_when_it_is_the_start(plant: OpcUaServer, browse) -> None:
    result = browse(plant.url, "--node", "i=2253", "--depth", "1")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "Server  i=2253"
    assert "  ServerStatus  i=2256  ServerStatusDataType  readable" in lines
    assert "NamespaceArray" not in result.out  # a property of the Server object


@pytest.mark.parametrize(
    ("node", "words"),
    [
        (f"nsu={NS};s=Plant/Nowhere", f"no node nsu={NS};s=Plant/Nowhere on the server (BadNodeId"),
        ("nsu=urn:nobody;i=5", "the server has no namespace urn:nobody"),
    ],
)
def test_unknown_start_node_is_one_line(plant: OpcUaServer, browse, node: str, words: str) -> None:
    result = browse(plant.url, "--node", node)
    assert result.code == 1
    assert result.error().startswith(f"edgeseal: {plant.url}: ")
    assert words in result.error()


def test_unreachable_server_is_one_line(browse) -> None:
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    result = browse(url, "--timeout", "2s")
    assert result.code == 1
    assert result.error() == f"edgeseal: {url}: Connection refused"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--depth", "0"], "--depth: expected a whole number > 0, found '0'"),
        (["--depth", "two"], "--depth: expected a whole number > 0, found 'two'"),
        (["--node", "Plant.Line1"], "--node: expected a node id like"),
        (["--policy", "Basic128"], "--policy: invalid choice: 'Basic128'"),
        (["--policy", "Basic256Sha256"], "--policy Basic256Sha256 needs --state-dir"),
        (["--mode", "Sign"], "--mode: mode Sign does not go with policy None"),
        (["--username", "operator"], "--username and --password-env go together"),
        (["--username", "operator", "--password-env", "EDGESEAL_TEST_UNSET"], "the variable EDGESEAL_TEST_UNSET"),
        (["--state-dir", "/nonexistent/state"], "--state-dir /nonexistent/state: not a directory"),
    ],
)
def test_bad_usage_is_exit_2(browse, argv: list[str], words: str) -> None:
    result = browse("opc.tcp://127.0.0.1:1", *argv)  # usage is checked before any connection
    assert result.code == 2, result
    assert "Traceback" not in result.err
    assert words in result.err


@pytest.mark.parametrize("url", ["http://plc1:4840", "opc.tcp://", "opc.tcp://plc 1:4840"])
def test_a_url_the_configuration_would_refuse_is_exit_2(browse, url: str) -> None:
    result = browse(url)
    assert result.code == 2
    assert result.error() == f"edgeseal: expected an endpoint URL like opc.tcp://plc.local:4840 or " \
        f"opc.tcp://10.0.0.5:4840/path, found {url!r}"  # fmt: skip


def test_secure_server_with_users(
    opcua_servers: ServerFarm, browse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = make_certificate(tmp_path)
    server = opcua_servers.start(
        ServerSpec(
            variables=VARIABLES[:1],
            security=("Basic256Sha256_SignAndEncrypt",),
            certificate=str(files.certificate),
            private_key=str(files.private_key),
            users={"operator": "s3cret"},
        )
    )
    state = tmp_path / "state"
    state.mkdir()
    # the agent's certificate, with the URI its configuration gives: browse must keep it
    agent_certificate = Pki(state / "pki").client_certificate("urn:plant:gateway-7").certificate
    monkeypatch.setenv("PLC_PASSWORD", "s3cret")
    secure = ("--policy", "Basic256Sha256", "--state-dir", str(state), "--username", "operator")

    refused = browse(server.url, *secure, "--password-env", "PLC_PASSWORD")
    assert refused.code == 1
    server_certificate = x509.load_der_x509_certificate(files.certificate.read_bytes())
    assert "server certificate not trusted: CN=edgeseal test server (SHA-1 thumbprint " in refused.error()
    assert f"edgeseal opcua trust --state-dir {state} {thumbprint(server_certificate)}" in refused.error()

    Pki(state / "pki").trust(server_certificate)
    result = browse(server.url, *secure, "--password-env", "PLC_PASSWORD", "--yaml")
    assert result.code == 0, result.err
    config = load(tmp_path, result.out)
    [source] = config.sources
    assert isinstance(source, SourceConfig) and source.auth is not None
    assert (source.security.policy, source.security.message_mode()) == ("Basic256Sha256", "SignAndEncrypt")
    assert (source.auth.username, source.auth.password_env) == ("operator", "PLC_PASSWORD")
    assert tags(config) == {"plant.line1.temp": NodeRef(NS, "s", "Plant/Line1/Temp")}
    assert Pki(state / "pki").listing().own.thumbprint == thumbprint(agent_certificate)  # type: ignore[union-attr]

    monkeypatch.setenv("PLC_PASSWORD", "wrong")
    wrong = browse(server.url, *secure, "--password-env", "PLC_PASSWORD")
    assert wrong.code == 1
    assert "the server refused the user: BadUserAccessDenied" in wrong.error()


class Requests:
    """Counts the Browse, BrowseNext and Read requests this process sends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts = {"browse": 0, "browse_next": 0, "read": 0}
        for service in self.counts:
            monkeypatch.setattr(UaClient, service, self._counted(service, getattr(UaClient, service)))

    def _counted(self, service: str, send: Any) -> Any:
        async def counted(client: UaClient, parameters: Any) -> Any:
            self.counts[service] += 1
            return await send(client, parameters)

        return counted


def test_thousands_of_variables_take_a_handful_of_requests(
    opcua_servers: ServerFarm, browse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the server refuses a Read of more than 1000 items (BadTooManyOperations)
    server = opcua_servers.start(ServerSpec(bulk=Bulk(count=3000, parent="Plant/Bulk"), max_nodes_per_read=1000))
    requests = Requests(monkeypatch)
    began = time.monotonic()
    result = browse(server.url, "--depth", "4", "--yaml")
    elapsed = time.monotonic() - began
    assert result.code == 0, result.err
    assert len(tags(load(tmp_path, result.out))) == 3000
    # one Browse per level; Reads: the session's read limit, then its namespaces and other
    # limits, the browse limits, the start node, 4 attributes of 3000 variables 1000 at a
    # time, the data types' names
    assert requests.counts == {"browse": 4, "browse_next": 0, "read": 2 + 1 + 1 + 12 + 1}
    assert elapsed < 10, f"{elapsed:.1f} s"


def test_references_that_need_browse_next(
    node_opcua_server: NodeOpcuaServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """node-opcua hands out continuation points; asyncua's server has none. One reference
    per answer makes every node with children need BrowseNext, and the tree is the same."""

    async def trees() -> list[str]:
        settings = SecuritySettings("None", "None", "urn:edgeseal-test:client", Path("pki"))
        session = await Session.open(node_opcua_server.url, settings, 10.0, 60.0)
        try:
            return [render_tree(await Walker(session, limit).walk(OBJECTS, 3)) for limit in (0, 1)]
        finally:
            await session.close()

    requests = Requests(monkeypatch)
    whole, piecewise = asyncio.run(trees())
    assert whole == piecewise
    assert requests.counts["browse_next"] > 3
    assert f"    Pressure  nsu={node_opcua_server.namespace_uri};i=101  Double  readable\n" in whole
    assert "EURange" not in whole and "EngineeringUnits" not in whole
