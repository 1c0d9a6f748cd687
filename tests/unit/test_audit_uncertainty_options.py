"""An audit's uncertainty options (issue 11 §2, ``SubmitAuditRequest.fdr_q/ci_level``): kept in
the job's params unless they are the defaults (an audit without them keeps its content id), read
back checked, recorded in the summary of an audit that keeps maps, and carried by AuditSummary."""

from __future__ import annotations

import pytest

from explainer_service.api import convert
from explainer_service.api.pb import audit_pb2
from explainer_service.api.service import align_params
from explainer_service.errors import InputError
from explainer_service.uncertainty import UncertaintyOptions
from explainer_service.worker.audit import AuditPairSpec, AuditRequest, summarize

PAIRS = (AuditPairSpec("p0", True, ("input", "a0"), ("input", "b0")),)
ROW = {"index": 0, "name": "p0", "same": True, "score": 0.9, "decision": "match", "correct": True,
       "methods": [{"method": "corrrise", "explain_s": 1.0}], "error": None}


def _request(keep: bool = True, options: UncertaintyOptions | None = None) -> AuditRequest:
    return AuditRequest(PAIRS, (("corrrise", {"n_masks": 32}),), (), 11, "zeros", keep, align_params(), options)


def test_params_keep_only_options_that_are_not_the_defaults():
    plain = _request().to_params()
    assert "uncertainty" not in plain
    assert _request(options=UncertaintyOptions()).to_params() == plain  # the defaults: the same content id
    params = _request(options=UncertaintyOptions(q=0.2, level=0.9)).to_params()
    assert params["uncertainty"] == {"fdr_q": 0.2, "ci_level": 0.9}
    back = AuditRequest.from_params(params)
    assert back.uncertainty == UncertaintyOptions(q=0.2, level=0.9) and back.to_params() == params
    assert AuditRequest.from_params(plain).uncertainty is None


@pytest.mark.parametrize(("stored", "needle"), [
    ({"fdr_q": 1.5}, "fdr_q must be a number in (0, 1)"),
    ({"level": 0.9}, "unknown option(s) level"),
    ([0.1, 0.9], "expected an object"),
])
def test_malformed_stored_options_are_one_input_error(stored, needle):
    params = {**_request().to_params(), "uncertainty": stored}
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        AuditRequest.from_params(params, "job x")


def test_the_summary_records_the_kept_maps_options():
    assert summarize([ROW], _request(options=UncertaintyOptions(q=0.2, level=0.9)), 0.5)["uncertainty"] == {
        "fdr_q": 0.2, "ci_level": 0.9}
    assert summarize([ROW], _request(), 0.5)["uncertainty"] == {"fdr_q": 0.05, "ci_level": 0.95}  # the defaults
    assert "uncertainty" not in summarize([ROW], _request(keep=False), 0.5)  # no kept maps: nothing stated


def test_audit_summary_message_carries_the_options_both_ways():
    summary = summarize([ROW], _request(options=UncertaintyOptions(q=0.2, level=0.9)), 0.5)
    msg = convert.audit_summary_to_message(summary)
    assert msg.HasField("fdr_q") and (msg.fdr_q, msg.ci_level) == (0.2, 0.9)
    assert convert.audit_summary_from_message(msg)["uncertainty"] == {"fdr_q": 0.2, "ci_level": 0.9}
    plain = convert.audit_summary_to_message(summarize([ROW], _request(keep=False), 0.5))
    assert not plain.HasField("fdr_q") and "uncertainty" not in convert.audit_summary_from_message(plain)


def test_the_request_fields_read_as_options():
    assert convert.uncertainty_options(audit_pb2.SubmitAuditRequest()) is None
    assert convert.uncertainty_options(audit_pb2.SubmitAuditRequest(fdr_q=0.2)) == UncertaintyOptions(q=0.2)
    with pytest.raises(InputError, match=r"ci_level must be in \(0, 1\), got -0.5"):
        convert.uncertainty_options(audit_pb2.SubmitAuditRequest(ci_level=-0.5))
