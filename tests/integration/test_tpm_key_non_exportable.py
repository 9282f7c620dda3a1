"""The device private key cannot be read out of the TPM (DESIGN 5: "the device private key
never exists outside the TPM").

A TPM has exactly one command that lets a private key leave it: TPM2_Duplicate, which
wraps it for another parent. It needs the DUP role, which only a policy session can
authorize, and it refuses any object with fixedParent (or fixedTPM). The device key has
both attributes, sensitiveDataOrigin (the TPM generated it: no copy exists outside), no
encryptedDuplication, and an empty authPolicy, so no policy can ever authorize it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_CC,
    TPM2_RC,
    TPM2_SE,
    TPMA_OBJECT,
    TPMT_SYM_DEF,
    TPMT_SYM_DEF_OBJECT,
    TSS2_Exception,
)

from agent.config.model import DEFAULT_HANDLE
from agent.keys.tpm import esys, templates
from agent.keys.tpm.esys import connected
from agent.keys.tpm.tcti import parse_tcti
from provisioning.swtpm import SoftwareTpm
from provisioning.tpm_identity import NON_EXPORTABLE, keygen


@pytest.fixture
def esapi(swtpm: SoftwareTpm) -> Iterator[ESAPI]:
    with connected(parse_tcti(swtpm.tcti)) as context:
        keygen(context, DEFAULT_HANDLE, "GW-0001", force=False)
        yield context


def _duplicate_with_policy(esapi: ESAPI, key: ESYS_TR, *, password: bool) -> None:
    """TPM2_Duplicate under the policy it needs: PolicyCommandCode(Duplicate) [+ PolicyPassword]."""
    session = esapi.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
    )
    try:
        esapi.policy_command_code(session, TPM2_CC.Duplicate)
        if password:
            esapi.policy_password(session)
        esapi.duplicate(key, ESYS_TR.NONE, None, TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL), session1=session)
    finally:
        esapi.flush_context(session)


def test_the_device_key_attributes_keep_it_in_the_tpm(esapi: ESAPI) -> None:
    key, public = esys.open_persistent(esapi, DEFAULT_HANDLE)
    esapi.tr_close(key)
    attributes = public.objectAttributes
    assert attributes & NON_EXPORTABLE == NON_EXPORTABLE  # fixedTPM, fixedParent, sensitiveDataOrigin
    assert not attributes & TPMA_OBJECT.ENCRYPTEDDUPLICATION
    assert bytes(public.authPolicy) == b"", "no policy: the DUP role can never be authorized"


def test_the_tpm_refuses_to_duplicate_the_device_key(esapi: ESAPI) -> None:
    key, _ = esys.open_persistent(esapi, DEFAULT_HANDLE)
    with pytest.raises(TSS2_Exception) as caught:
        _duplicate_with_policy(esapi, key, password=False)
    assert caught.value.error == TPM2_RC.POLICY_FAIL


def test_fixed_parent_refuses_duplication_even_when_a_policy_allows_it(esapi: ESAPI) -> None:
    """The same key made with a policy that does authorize Duplicate: fixedParent still says no."""
    trial = esapi.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256
    )
    esapi.policy_command_code(trial, TPM2_CC.Duplicate)
    esapi.policy_password(trial)
    template = templates.identity_template("GW-0002")
    template.publicArea.authPolicy = esapi.policy_get_digest(trial)
    esapi.flush_context(trial)
    key, *_ = esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)
    try:
        with pytest.raises(TSS2_Exception) as caught:
            _duplicate_with_policy(esapi, key, password=True)
    finally:
        esapi.flush_context(key)
    assert caught.value.error == TPM2_RC.ATTRIBUTES  # TPM_RC_ATTRIBUTES: fixedParent is set
