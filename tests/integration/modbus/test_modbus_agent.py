"""The real agent with a Modbus source: a pymodbus server -> driver -> sequencer ->
buffer -> sealer -> export -> verify, with the values as the server holds them."""

from __future__ import annotations

from pathlib import Path

from agent_harness import export_and_verify, run_for, write_config
from modbus_servers import ServerFarm, registers

from agent.config import load_config
from agent.trust.bundle import decode_bundle
from agent.trust.leaf import decode_leaf
from drivers.modbus.points import Table


def test_agent_seals_modbus_readings_that_verify_with_the_servers_values(
    tmp_path: Path, modbus_servers: ServerFarm
) -> None:
    server = modbus_servers.tcp(1)
    server.set(1, Table.HOLDING_REGISTERS, 100, registers("float32", 2824.0625, "CDAB"))
    server.set(1, Table.INPUT_REGISTERS, 10, [21, 0xFFFB])
    server.set(1, Table.COILS, 0, [True])
    sources = f"""  - name: meter
    type: modbus
    url: {server.url}
    interval: 50ms
    timeout: 500ms
    devices:
      - unit: 1
        order: CDAB
        tags:
          - {{name: power, address: 400101, type: float32}}
          - {{name: temps, address: 300011, type: int16, count: 2}}
          - {{name: running, address: '000001'}}"""
    config_path = write_config(tmp_path, sources=sources)

    run_for(load_config(config_path), 1.5)

    report, data = export_and_verify(config_path)
    assert report.valid, report.findings
    leaves = [decode_leaf(r) for b in decode_bundle(data).batches for r in b.readings]
    assert report.readings == len(leaves) >= 3 * 15
    assert {leaf.tag for leaf in leaves} == {"power", "temps", "running"}
    assert all(leaf.quality == 0 for leaf in leaves)
    values = {(leaf.tag, repr(leaf.value)) for leaf in leaves}
    assert values == {("power", "2824.0625"), ("temps", "[21, -5]"), ("running", "True")}
