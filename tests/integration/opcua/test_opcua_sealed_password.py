"""The OPC UA password as a TPM-sealed secret: sealed at the factory (or by the operator)
on the gateway's TPM, unsealed by the running agent through its TPM thread, sent only to
the server. The agent signs with its TPM key; the user must be accepted for data to flow."""

from __future__ import annotations

from pathlib import Path

from agent_harness import export_and_verify, run_for
from opcua_harness import NS
from opcua_servers import ServerFarm, ServerSpec, Variable
from tpm_identity import tpm_agent_config, tpm_identity

from agent.config import load_config
from agent.keys.secrets import seal_secret
from agent.keys.tpm import esys
from agent.keys.tpm.tcti import parse_tcti
from agent.trust.bundle import decode_bundle
from agent.trust.leaf import decode_leaf
from provisioning.swtpm import SoftwareTpm

DEVICE = "press-gw-7"
PASSWORD = "pr3ss-l1ne 7"


def test_the_agent_logs_in_with_a_password_sealed_to_its_tpm(
    swtpm: SoftwareTpm, tmp_path: Path, opcua_servers: ServerFarm
) -> None:
    server = opcua_servers.start(ServerSpec(variables=(Variable("Force", value=12.5),), users={"edgeseal": PASSWORD}))
    tpm_identity(swtpm, tmp_path, DEVICE)
    with esys.connected(parse_tcti(swtpm.tcti)) as esapi:
        seal_secret(esapi, tmp_path / "secrets", "press-password", PASSWORD.encode(), force=False)
    sources = f"""  - name: press
    type: opcua
    url: {server.url}
    auth: {{username: edgeseal, password_secret: press-password}}
    groups:
      - mode: poll
        interval: 100ms
        tags: [{{name: force, node: "nsu={NS};s=Plant/Line1/Force"}}]"""
    config_path = tpm_agent_config(tmp_path, swtpm, DEVICE, sources)
    assert PASSWORD not in config_path.read_text()

    run_for(load_config(config_path), 2.0)

    report, data = export_and_verify(config_path)
    assert report.valid, report.findings
    leaves = [decode_leaf(r) for b in decode_bundle(data).batches for r in b.readings]
    assert [leaf.value for leaf in leaves if leaf.tag == "force" and leaf.quality == 0][:3] == [12.5] * 3
