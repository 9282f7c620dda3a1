"""The real agent with an OPC UA source: an asyncua server -> driver -> sequencer ->
buffer -> sealer -> export -> verify, with the values and source timestamps as the server
set them."""

from __future__ import annotations

from pathlib import Path

from agent_harness import export_and_verify, run_for, write_config
from opcua_harness import NS
from opcua_servers import ServerFarm, ServerSpec, Variable

from agent.config import load_config
from agent.trust.bundle import decode_bundle
from agent.trust.leaf import decode_leaf


def test_agent_seals_opcua_readings_that_verify(tmp_path: Path, opcua_servers: ServerFarm) -> None:
    server = opcua_servers.start(
        ServerSpec(
            variables=(
                Variable("Counter", type="UInt32", value=0, id="i=1001", period=0.1),
                Variable("Recipe", type="String", value="PVC-7"),
                Variable("Profile", value=[0.5, -2.25], array=True),
            )
        )
    )
    sources = f"""  - name: press
    type: opcua
    url: {server.url}
    groups:
      - mode: subscribe
        publishing_interval: 100ms
        tags:
          - {{name: counter, node: "nsu={NS};i=1001"}}
          - {{name: profile, node: "nsu={NS};s=Plant/Line1/Profile"}}
      - mode: poll
        interval: 200ms
        tags:
          - {{name: recipe, node: "nsu={NS};s=Plant/Line1/Recipe"}}"""
    config_path = write_config(tmp_path, sources=sources)

    run_for(load_config(config_path), 3.0)

    report, data = export_and_verify(config_path)
    assert report.valid, report.findings
    leaves = [decode_leaf(r) for b in decode_bundle(data).batches for r in b.readings]
    assert report.readings == len(leaves)
    good = [leaf for leaf in leaves if leaf.quality == 0]
    assert {leaf.tag for leaf in good} == {"counter", "profile", "recipe"}
    counts = [leaf.value for leaf in good if leaf.tag == "counter"]
    assert len(counts) >= 10 and counts == sorted(counts), "every change of the counter, in order"
    assert {repr(leaf.value) for leaf in good if leaf.tag != "counter"} == {"[0.5, -2.25]", "'PVC-7'"}
    timestamps = [leaf.ts for leaf in good if leaf.tag == "counter"]
    assert len(set(timestamps)) == len(timestamps), "each change keeps its own SourceTimestamp"
