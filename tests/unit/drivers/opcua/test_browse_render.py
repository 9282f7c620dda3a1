"""What `edgeseal browse` prints, from a walk's result built by hand (drivers/opcua/browse.py,
the pure half): tag names from browse paths, unique; node ids in the nsu= form (bare in
namespace 0) whatever characters they hold; a comment with data type and browse path on
each tag; and YAML that the real configuration loader reads back as it was meant."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from agent.config import Config, load_config
from drivers.opcua.browse_render import (
    OBJECTS_REF,
    Access,
    Found,
    render_tree,
    render_yaml,
    source_name,
    tag_name,
    unique_names,
)
from drivers.opcua.config import SourceConfig
from drivers.opcua.nodeid import NodeRef

URI = "urn:acme:press"
URL = "opc.tcp://PLC-7.plant.local:4840/ua"
HEADER = """\
device:
  id: press-line-7
identity:
  key: keys/device.pem
  cert_chain: chain.pem
"""
# a string identifier with everything YAML or the loader could take for syntax
ODD_ID = "Line1/Odd: #1 ${HOME} 'q' \"d\" - [x] {y} & *z ! % @ `\ttab\nnewline"
LINE_BREAKS_ID = "Line1/next line\x85line\nbreak"  # what YAML folds or drops unless escaped


def variable(*path: str, ident: str | None = None, data_type: str = "Double", readable: bool = True) -> Found:
    return Found(("Objects", *path), NodeRef(URI, "s", ident or "/".join(path)), True, data_type, readable)


def folder(*path: str, children: list[Found]) -> Found:
    return Found(("Objects", *path), NodeRef(URI, "s", "/".join(path)), False, children=children)


def plant() -> Found:
    line1 = folder(
        "Plant",
        "Line 1",
        children=[
            variable("Plant", "Line 1", "Temp"),
            variable("Plant", "Line 1", "TEMP", data_type="Float"),
            variable("Plant", "Line 1", "Secret", data_type="Int32", readable=False),
            variable("Plant", "Line 1", "Odd: #1 ${HOME}\nx", ident=ODD_ID, data_type="String"),
            variable("Plant", "Line 1", "Profile", data_type="Double[]"),
            variable("Plant", "Line 1", "Breaks", ident=LINE_BREAKS_ID, data_type="String"),
        ],
    )
    extras = [
        Found(("Objects", "Plant", "Now"), NodeRef(0, "i", 2258), True, "UtcTime", True),
        Found(("Objects", "Plant", "Id"), NodeRef(URI, "g", uuid.UUID(int=7)), True, "Guid", True),
        Found(("Objects", "Plant", "Raw"), NodeRef(URI, "b", b"\x00\xff="), True, "ByteString", True),
    ]
    return Found(("Objects",), OBJECTS_REF, False, children=[folder("Plant", children=[line1, *extras])])


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "edgeseal.yaml"
    path.write_text(HEADER + text, encoding="utf-8")
    return load_config(path, env={"HOME": "/root"} if env is None else env)


def opcua_source(config: Config) -> SourceConfig:
    [source] = config.sources
    assert isinstance(source, SourceConfig)
    return source


def tags(config: Config) -> dict[str, NodeRef]:
    [group] = opcua_source(config).groups
    return {tag.name: tag.ref() for tag in group.tags}


def test_tag_names_are_browse_paths_lower_cased_with_dots() -> None:
    assert tag_name(["Plant", "Line1", "Temp"]) == "plant.line1.temp"
    assert tag_name(["Plant", "Line 1", "Temp°C", "a/b:c"]) == "plant.line_1.temp_c.a_b_c"
    assert tag_name(["Press.Force", "x-y_z"]) == "press.force.x-y_z"
    assert tag_name(["Plant", "", "Temp"]) == "plant._.temp"


def test_a_long_path_is_cut_to_the_longest_tag_name() -> None:
    name = tag_name(["Segment"] * 40)
    assert len(name) == 128 and name.startswith("segment.segment.")


def test_clashing_names_get_suffixes_that_clash_with_nothing() -> None:
    assert unique_names(["a", "b", "a", "a_2", "a"]) == ["a", "b", "a_2", "a_2_2", "a_3"]
    long = "x" * 128
    names = unique_names([long] * 12)
    assert len(set(names)) == 12
    assert all(len(name) == 128 for name in names)
    assert names[:3] == [long, "x" * 126 + "_2", "x" * 126 + "_3"]
    assert names[-1] == "x" * 125 + "_12"


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("opc.tcp://PLC-7.plant.local:4840/ua", "plc-7.plant.local"),
        ("opc.tcp://10.0.0.5:4840", "10.0.0.5"),
        ("opc.tcp://[fe80::1]:4840", "fe80__1"),
    ],
)
def test_the_source_is_named_after_the_host(url: str, name: str) -> None:
    assert source_name(url) == name


def test_yaml_loads_through_the_configuration_loader(tmp_path: Path) -> None:
    config = load(tmp_path, render_yaml(plant(), URL, Access()))
    source = opcua_source(config)
    assert (source.name, source.url, source.auth) == ("plc-7.plant.local", URL, None)
    assert source.security.policy == "None"
    [group] = source.groups
    assert (group.mode, group.publishing_interval) == ("subscribe", 1.0)
    assert tags(config) == {
        "plant.line_1.temp": NodeRef(URI, "s", "Plant/Line 1/Temp"),
        "plant.line_1.temp_2": NodeRef(URI, "s", "Plant/Line 1/TEMP"),
        "plant.line_1.odd___1___home__x": NodeRef(URI, "s", ODD_ID),
        "plant.line_1.profile": NodeRef(URI, "s", "Plant/Line 1/Profile"),
        "plant.line_1.breaks": NodeRef(URI, "s", LINE_BREAKS_ID),
        "plant.now": NodeRef(0, "i", 2258),
        "plant.id": NodeRef(URI, "g", uuid.UUID(int=7)),
        "plant.raw": NodeRef(URI, "b", b"\x00\xff="),
    }


def test_node_ids_are_written_with_the_namespace_uri_and_namespace_0_bare() -> None:
    text = render_yaml(plant(), URL, Access())
    nodes = [line.strip() for line in text.splitlines() if line.strip().startswith("node:")]
    assert "node: nsu=urn:acme:press;s=Plant/Line 1/Temp" in nodes
    assert "node: i=2258" in nodes
    assert not [node for node in nodes if "ns=" in node.replace("nsu=", "")]


def test_every_value_is_on_the_line_of_its_key() -> None:
    for line in render_yaml(plant(), URL, Access()).splitlines():
        assert re.fullmatch(r" *(#.*|(- )?[a-z_]+:( .+)?)", line), line


def test_a_reference_to_the_environment_in_a_node_id_stays_text(tmp_path: Path) -> None:
    """The loader replaces ${NAME} in every string; the printed YAML escapes it."""
    config = load(tmp_path, render_yaml(plant(), URL, Access()), env={"HOME": "/home/operator"})
    assert tags(config)["plant.line_1.odd___1___home__x"].identifier == ODD_ID


def test_each_tag_has_a_comment_with_its_data_type_and_browse_path() -> None:
    lines = render_yaml(plant(), URL, Access()).splitlines()
    at = lines.index("          - name: plant.line_1.temp")
    assert lines[at - 1] == "          # Double, Objects/Plant/Line 1/Temp"
    at = lines.index("          - name: plant.line_1.profile")
    assert lines[at - 1] == "          # Double[], Objects/Plant/Line 1/Profile"
    odd = next(line for line in lines if "# String," in line)
    assert odd == "          # String, Objects/Plant/Line 1/Odd: #1 ${HOME}\\nx"


def test_unreadable_variables_are_left_out_and_listed_in_comments(tmp_path: Path) -> None:
    text = render_yaml(plant(), URL, Access())
    assert "secret" not in tags(load(tmp_path, text))
    lines = text.splitlines()
    at = lines.index("          # not readable, left out:")
    assert lines[at + 1:] == [
        "          #   Int32, Objects/Plant/Line 1/Secret  nsu=urn:acme:press;s=Plant/Line 1/Secret"
    ]  # fmt: skip


def test_names_below_another_start_node_begin_with_its_name(tmp_path: Path) -> None:
    line = Found(("Line1",), NodeRef(URI, "s", "Line1"), False, children=[])
    line.children.append(Found(("Line1", "Temp"), NodeRef(URI, "s", "Line1/Temp"), True, "Double", True))
    text = render_yaml(line, URL, Access())
    assert list(tags(load(tmp_path, text))) == ["line1.temp"]
    assert text.startswith("# edgeseal browse: 1 readable variables below Line1\n")


def test_the_security_and_user_the_browse_needed_are_configured(tmp_path: Path) -> None:
    access = Access("Basic256Sha256", "Sign", "op: erator", "PLC_PASSWORD", tmp_path)
    source = opcua_source(load(tmp_path, render_yaml(plant(), URL, access)))
    assert (source.security.policy, source.security.mode) == ("Basic256Sha256", "Sign")
    assert source.auth is not None
    assert (source.auth.username, source.auth.password_env) == ("op: erator", "PLC_PASSWORD")


def test_the_tree_shows_names_ids_types_and_readability_indented() -> None:
    root = plant()
    root.children[0].children[0].problem = "not browsed: BadTooManyOperations"
    lines = render_tree(root).splitlines()
    assert lines[:4] == [
        "Objects  i=85",
        "  Plant  nsu=urn:acme:press;s=Plant",
        "    Line 1  nsu=urn:acme:press;s=Plant/Line 1  (not browsed: BadTooManyOperations)",
        "      Temp  nsu=urn:acme:press;s=Plant/Line 1/Temp  Double  readable",
    ]
    assert "      Secret  nsu=urn:acme:press;s=Plant/Line 1/Secret  Int32  not readable" in lines
    assert "    Now  i=2258  UtcTime  readable" in lines
    assert lines[-1] == "9 variables, 8 readable"


def test_the_tree_keeps_one_node_on_one_line() -> None:
    lines = render_tree(plant()).splitlines()
    odd = next(line for line in lines if "Odd" in line)
    assert odd == (
        "      Odd: #1 ${HOME}\\nx  nsu=urn:acme:press;s=Line1/Odd: #1 ${HOME} 'q' \"d\" - [x] {y} & *z ! % @ "
        "`\\ttab\\nnewline  String  readable"
    )
