"""dcxsec.contexts: each association's copy of a server's contexts is its own."""
from __future__ import annotations

import copy

from conftest import free_port, requestor
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.sop_class import Verification

import dcxsec
from dcxsec.contexts import SupportedContexts


def storage_contexts() -> list:
    ae = AE()
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    return ae.supported_contexts


def test_the_copy_equals_deepcopy_and_shares_nothing_mutable():
    originals = storage_contexts()
    copies = copy.deepcopy(SupportedContexts(originals))
    expected = copy.deepcopy(originals)
    assert [vars(c) for c in copies] == [vars(e) for e in expected]
    for cx, original in zip(copies, originals):
        assert cx is not original
        assert cx._transfer_syntax is not original._transfer_syntax
        cx.context_id = 7
        cx.result = 0
        cx.scp_role = True
        cx.transfer_syntax = [ALL_TRANSFER_SYNTAXES[0]]
    assert [vars(c) for c in originals] == [vars(e) for e in expected]


def test_a_server_copies_its_contexts_per_association(server_ctx, client_ctx):
    """The dcxsec server holds SupportedContexts, and associations negotiate from them."""
    ae = AE("DCXSEC-SCP")
    for cx in storage_contexts():
        ae.add_supported_context(cx.abstract_syntax, cx.transfer_syntax)
    ae.add_supported_context(Verification)
    port = free_port()
    server = dcxsec.start_server(ae, ("127.0.0.1", port), server_ctx, block=False)
    try:
        assert isinstance(server.contexts, SupportedContexts)
        for _ in range(2):
            assoc = requestor().associate("127.0.0.1", port, ae_title="DCXSEC-SCP",
                                          tls_args=(client_ctx, None))
            assert assoc.is_established
            assert {cx.abstract_syntax for cx in assoc.accepted_contexts} >= {
                "1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.1.2"}
            assert assoc.send_c_echo().Status == 0
            assoc.release()
        assert isinstance(server.contexts, SupportedContexts) and len(server.contexts) > 100
    finally:
        server.shutdown()
