"""The software TPM: manufactured like a real one, served by swtpm, stopped, killed, cloned."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tpm2_pytss import ESAPI, TPM2_ALG, TPM2_CAP, TPM2_HC, TPM2B_NV_PUBLIC, TPMA_NV, TPMS_NV_PUBLIC, TSS2_Exception

from agent.errors import KeyError_
from provisioning.swtpm import (
    ECC_EK_CERT_NV,
    ECC_EK_HANDLE,
    RSA_EK_CERT_NV,
    RSA_EK_HANDLE,
    SoftwareTpm,
    SwtpmFiles,
    clone,
    manufacture,
)

USER_NV = 0x01000000  # the first index of the owner's range
NV_CHUNK = 1024  # at most what one TPM2_NV_Read returns (TPM2_PT_NV_BUFFER_MAX)


def _persistent_handles(esapi: ESAPI) -> list[int]:
    _, data = esapi.get_capability(TPM2_CAP.HANDLES, TPM2_HC.HR_PERSISTENT, 64)
    return list(data.data.handles)


def _nv_read_all(esapi: ESAPI, index: int) -> bytes:
    handle = esapi.tr_from_tpmpublic(index)
    nv_public, _ = esapi.nv_read_public(handle)
    size = nv_public.nvPublic.dataSize
    return b"".join(
        bytes(esapi.nv_read(handle, min(NV_CHUNK, size - offset), offset)) for offset in range(0, size, NV_CHUNK)
    )


def _define_nv(esapi: ESAPI, data: bytes) -> None:
    attributes = TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD
    public = TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(nvIndex=USER_NV, nameAlg=TPM2_ALG.SHA256, attributes=attributes, dataSize=len(data))
    )
    esapi.nv_write(esapi.nv_define_space(None, public), data)


def _nv_indexes(esapi: ESAPI) -> list[int]:
    _, data = esapi.get_capability(TPM2_CAP.HANDLES, TPM2_HC.HR_NV_INDEX, 64)
    return list(data.data.handles)


def test_manufactured_tpm_has_both_eks_persisted(swtpm: SoftwareTpm) -> None:
    assert swtpm.tcti == f"swtpm:host=127.0.0.1,port={swtpm.port}"
    with ESAPI(swtpm.tcti) as esapi:
        assert {RSA_EK_HANDLE, ECC_EK_HANDLE} <= set(_persistent_handles(esapi))


@pytest.mark.parametrize(
    ("cert_nv", "ek_handle"), [(RSA_EK_CERT_NV, RSA_EK_HANDLE), (ECC_EK_CERT_NV, ECC_EK_HANDLE)], ids=["rsa", "ecc"]
)
def test_ek_certificate_certifies_the_ek_and_chains_to_the_vendor_root(
    swtpm: SoftwareTpm, cert_nv: int, ek_handle: int
) -> None:
    with ESAPI(swtpm.tcti) as esapi:
        der = _nv_read_all(esapi, cert_nv)
        ek_public, _, _ = esapi.read_public(esapi.tr_from_tpmpublic(ek_handle))
    ek_cert = x509.load_der_x509_certificate(der)
    issuer = x509.load_pem_x509_certificate(swtpm.files.ek_issuer_cert.read_bytes())
    root = x509.load_pem_x509_certificate(swtpm.files.vendor_root_cert.read_bytes())

    ek_cert.verify_directly_issued_by(issuer)
    issuer.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    assert ek_cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == ek_public.to_der()


def test_state_survives_stop_and_restart_on_the_same_port(swtpm: SoftwareTpm) -> None:
    with ESAPI(swtpm.tcti) as esapi:
        _define_nv(esapi, b"survives")
    port = swtpm.port
    swtpm.stop()
    assert not swtpm.running
    swtpm.start()
    assert swtpm.port == port
    with ESAPI(swtpm.tcti) as esapi:
        assert _nv_read_all(esapi, USER_NV) == b"survives"


def test_a_killed_tpm_is_unreachable_until_started_again(swtpm: SoftwareTpm) -> None:
    with ESAPI(swtpm.tcti) as esapi:
        _define_nv(esapi, b"written!")
        swtpm.kill()
        with pytest.raises(TSS2_Exception, match="tcti"):
            _persistent_handles(esapi)
    with pytest.raises(TSS2_Exception, match="tcti"):
        ESAPI(swtpm.tcti)

    swtpm.start()
    with ESAPI(swtpm.tcti) as esapi:
        assert _nv_read_all(esapi, USER_NV) == b"written!", "a completed NV write outlives a crash"


def test_a_clone_is_the_same_tpm_with_its_own_state(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    other_files = clone(swtpm.files, tmp_path / "other")
    assert other_files.vendor_root_cert.read_bytes() == swtpm.files.vendor_root_cert.read_bytes()
    with SoftwareTpm(other_files) as other, ESAPI(swtpm.tcti) as first, ESAPI(other.tcti) as second:
        assert other.port not in (swtpm.port, swtpm.port + 1)
        _define_nv(first, b"only one")
        assert USER_NV in _nv_indexes(first)
        assert USER_NV not in _nv_indexes(second)
        assert _nv_read_all(first, RSA_EK_CERT_NV) == _nv_read_all(second, RSA_EK_CERT_NV)


def test_clone_refuses_to_replace_a_tpm(swtpm_template: SwtpmFiles, tmp_path: Path) -> None:
    clone(swtpm_template, tmp_path / "tpm")
    with pytest.raises(KeyError_, match="already holds a TPM state"):
        clone(swtpm_template, tmp_path / "tpm")


def test_manufacture_returns_an_existing_tpm_unchanged(swtpm_template: SwtpmFiles) -> None:
    state = swtpm_template.state_dir / "tpm2-00.permall"
    before = state.read_bytes()
    assert manufacture(swtpm_template.directory) == swtpm_template
    assert state.read_bytes() == before


def test_a_failed_manufacture_is_a_clear_error_and_leaves_no_state(tmp_path: Path) -> None:
    (tmp_path / "vendor-ca" / "signkey.pem").mkdir(parents=True)  # the local CA cannot write its key
    with pytest.raises(KeyError_, match=r"swtpm_setup failed \(status 1\):\n.*signkey.pem"):
        manufacture(tmp_path)
    assert not SwtpmFiles.at(tmp_path).manufactured()


def test_swtpm_exiting_at_start_is_a_clear_error_with_its_output(swtpm: SoftwareTpm) -> None:
    second = SoftwareTpm(swtpm.files)  # the state directory is locked by the running one
    with pytest.raises(KeyError_, match=r"swtpm exited with status 1 .*\n.*lock"):
        second.start()
    assert not second.running
