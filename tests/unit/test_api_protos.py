"""The API contract (protos/facexplain/v1): stubs generated at setup, importable next to tritonclient's,
deterministic, regenerated when a .proto changes, and every call of issue 9 present and documented."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from explainer_service.api import generate, pb

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "explainer_service" / "api" / "_gen"

#: Every call issue 9 §1 asks for (plus GetJob for polling clients and ListMethods).
CALLS = {
    "Verify": ("VerifyRequest", "VerifyResponse", False),
    "Explain": ("ExplainRequest", "SubmitResponse", False),
    "WatchJob": ("WatchJobRequest", "JobUpdate", True),
    "GetJob": ("JobRef", "Job", False),
    "GetResult": ("GetResultRequest", "GetResultResponse", False),
    "SubmitAudit": ("SubmitAuditRequest", "SubmitResponse", False),
    "CancelJob": ("JobRef", "Job", False),
    "DeleteJob": ("JobRef", "DeleteJobResponse", False),
    "ListJobs": ("ListJobsRequest", "ListJobsResponse", False),
    "ListModels": ("ListModelsRequest", "ListModelsResponse", False),
    "ListMethods": ("ListMethodsRequest", "ListMethodsResponse", False),
    "ListDatasetPairs": ("ListDatasetPairsRequest", "ListDatasetPairsResponse", False),
    "GetDatasetPair": ("GetDatasetPairRequest", "GetDatasetPairResponse", False),
}


def _import_both(first: str) -> str:
    """Import every generated module and tritonclient.grpc in a fresh interpreter, ``first`` first."""
    ours = "import importlib; from explainer_service.api import pb; " \
        "[importlib.import_module('explainer_service.api._gen.' + m) for m in pb.MODULES]"
    triton = "import tritonclient.grpc, tritonclient.grpc.service_pb2 as t"
    code = "; ".join([ours, triton] if first == "ours" else [triton, ours]) + (
        "; import google.protobuf, grpc; from explainer_service.api._gen import service_pb2_grpc as g;"
        "print(google.protobuf.__version__, grpc.__version__, g.GRPC_GENERATED_VERSION, pb.SERVICE_NAME,"
        " t.DESCRIPTOR.name)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


@pytest.mark.parametrize("first", ["ours", "tritonclient"])
def test_every_generated_module_imports_next_to_tritonclient(first):
    protobuf, grpc_version, generated, service, triton_proto = _import_both(first).split()
    assert protobuf.startswith("6.")  # tritonclient's stubs are protobuf 6 gencode, ours too
    assert generated == importlib.metadata.version("grpcio-tools") == "1.81.1"
    assert tuple(int(p) for p in grpc_version.split(".")[:2]) >= (1, 81)
    assert service == "facexplain.v1.Facexplain"
    assert triton_proto == "grpc_service.proto"


def test_generated_code_is_what_the_protos_and_pinned_tools_give():
    """Regenerating from the .proto files gives the files on disk byte for byte (protoc is
    deterministic), and the stamp says so."""
    generate.ensure()
    first = generate.render()
    assert first == generate.render()
    on_disk = {p.name: p.read_text() for p in GEN.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert on_disk == first
    stems = sorted(p.stem for p in (ROOT / "protos" / "facexplain" / "v1").glob("*.proto"))
    assert stems == ["audit", "service", "types"]
    for stem in stems:
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"):
            assert stem + suffix in first
    assert generate.is_current()


def test_generated_imports_are_relative_and_modules_named_for_this_package():
    for name, text in generate.render().items():
        assert "from facexplain" not in text and "import facexplain" not in text, name
        if name.endswith("_pb2.py"):
            assert f"'explainer_service.api._gen.{name[:-3]}'" in text
            assert text.startswith("# mypy: ignore-errors\n# ruff: noqa\n")
    assert pb.types_pb2.TypedArray.__module__ == "explainer_service.api._gen.types_pb2"
    # descriptors keep the proto names: reflection shows the API as written
    assert pb.PROTO_FILES == ("facexplain/v1/types.proto", "facexplain/v1/audit.proto", "facexplain/v1/service.proto")


def test_stale_stubs_are_regenerated(tmp_path):
    protos = tmp_path / "protos"
    shutil.copytree(ROOT / "protos" / "facexplain", protos / "facexplain")
    out = tmp_path / "gen"
    assert not generate.is_current(out, protos)
    assert generate.main(["--protos", str(protos), "--out", str(out), "--check"]) == 1
    generate.ensure(out, protos)
    assert generate.is_current(out, protos)
    assert generate.main(["--protos", str(protos), "--out", str(out), "--check"]) == 0
    before = (out / "types_pb2.py").read_text()
    proto = protos / "facexplain" / "v1" / "types.proto"
    proto.write_text(proto.read_text() + "\n// a new message\nmessage Extra {\n  int32 n = 1;\n}\n")
    assert not generate.is_current(out, protos)
    assert generate.main(["--protos", str(protos), "--out", str(out), "--if-stale"]) == 0
    assert generate.is_current(out, protos)
    assert (out / "types_pb2.py").read_text() != before and "Extra" in (out / "types_pb2.pyi").read_text()
    # a .proto that goes away takes its stubs with it
    (protos / "facexplain" / "v1" / "audit.proto").unlink()
    (protos / "facexplain" / "v1" / "service.proto").unlink()
    generate.generate(out, protos)
    assert sorted(p.name for p in out.glob("*_pb2*")) == [
        "types_pb2.py", "types_pb2.pyi", "types_pb2_grpc.py", "types_pb2_grpc.pyi",
    ]


def test_a_broken_proto_is_reported_not_half_written(tmp_path, capsys):
    protos = tmp_path / "protos"
    shutil.copytree(ROOT / "protos" / "facexplain", protos / "facexplain")
    (protos / "facexplain" / "v1" / "types.proto").write_text('syntax = "proto3";\nmessage {\n')
    out = tmp_path / "gen"
    assert generate.main(["--protos", str(protos), "--out", str(out)]) == 2
    assert "protoc failed" in capsys.readouterr().err
    assert not out.exists()


def test_without_protos_or_stubs_the_import_error_says_what_to_do(tmp_path):
    with pytest.raises(ImportError, match="make setup"):
        generate.ensure(tmp_path / "gen", tmp_path / "no-protos")


def test_every_call_of_the_issue_is_served_with_its_shape():
    service = pb.service_pb2.DESCRIPTOR.services_by_name["Facexplain"]
    assert {m.name for m in service.methods} == set(CALLS)
    for m in service.methods:
        request, response, streams = CALLS[m.name]
        assert m.input_type.name == request and m.output_type.name == response, m.name
        assert m.server_streaming is streams and not m.client_streaming, m.name
    stub = pb.service_pb2_grpc.FacexplainStub
    servicer = pb.service_pb2_grpc.FacexplainServicer
    assert all(hasattr(servicer, name) for name in CALLS) and callable(stub)
    assert callable(pb.service_pb2_grpc.add_FacexplainServicer_to_server)


def test_maps_are_typed_arrays_and_results_carry_what_the_issue_lists():
    t = pb.types_pb2
    assert set(t.TypedArray.DESCRIPTOR.fields_by_name) == {"dtype", "shape", "data"}
    result = t.PairResult.DESCRIPTOR.fields_by_name
    for name in ("score", "threshold", "decision", "model", "params", "timing", "face_a", "face_b", "s_a", "s_b"):
        assert name in result, name
    for name in ("s_a", "s_b", "scores_a", "scores_b"):
        assert result[name].message_type.full_name == "facexplain.v1.TypedArray"
    assert t.FaceAlignment.DESCRIPTOR.fields_by_name["chip"].message_type.full_name == "facexplain.v1.TypedArray"
    audit = pb.audit_pb2.SubmitAuditRequest.DESCRIPTOR
    assert {f.name for f in audit.oneofs_by_name["source"].fields} == {"pairs", "dataset"}
    for name in ("model", "methods", "metrics", "limit", "keep_maps", "force"):
        assert name in audit.fields_by_name, name
    explain = pb.service_pb2.ExplainRequest.DESCRIPTOR.fields_by_name
    assert {"pair", "model", "method", "params", "force"} <= set(explain)
    watch = pb.service_pb2.JobUpdate.DESCRIPTOR.fields_by_name
    assert watch["partial"].message_type.full_name == "facexplain.v1.PartialMaps"
    page = pb.audit_pb2.AuditResult.DESCRIPTOR.fields_by_name
    assert {"summary", "rows", "next_page_token"} <= set(page)


def _source_info(tmp_path: Path):
    """The .proto files compiled with their comments (protoc's source info)."""
    import importlib as _il

    from google.protobuf import descriptor_pb2

    protoc = _il.import_module("grpc_tools.protoc")
    include = Path(_il.import_module("grpc_tools").__file__).parent / "_proto"
    out = tmp_path / "api.desc"
    files = [f"facexplain/v1/{p.name}" for p in sorted((ROOT / "protos" / "facexplain" / "v1").glob("*.proto"))]
    code = protoc.main(["protoc", f"-I{ROOT / 'protos'}", f"-I{include}", "--include_source_info",
                        f"--descriptor_set_out={out}", *files])
    assert code == 0
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def test_the_protos_are_documented(tmp_path):
    """The comments are the reference: every file, RPC, enum and message carries one (requests and
    responses are described by their RPC)."""
    undocumented = []
    for f in _source_info(tmp_path).file:
        comments = {}
        for loc in f.source_code_info.location:
            text = (loc.leading_comments + loc.trailing_comments).strip()
            comments[tuple(loc.path)] = text or comments.get(tuple(loc.path), "")
        # FileDescriptorProto: 4 message_type, 5 enum_type, 6 service; DescriptorProto: 2 field;
        # ServiceDescriptorProto: 2 method; EnumDescriptorProto: 2 value; 12 syntax (the file header)
        header = [loc for loc in f.source_code_info.location if list(loc.path) == [12]]
        if not any(loc.leading_comments.strip() or loc.leading_detached_comments for loc in header):
            undocumented.append(f"{f.name}: no header comment")
        for i, svc in enumerate(f.service):
            for j, m in enumerate(svc.method):
                if not comments.get((6, i, 2, j)):
                    undocumented.append(f"rpc {m.name}")
        for i, msg in enumerate(f.message_type):
            if not comments.get((4, i)) and not msg.name.endswith(("Request", "Response")):
                undocumented.append(f"message {msg.name}")
        for i, enum in enumerate(f.enum_type):
            if not comments.get((5, i)):
                undocumented.append(f"enum {enum.name}")
    assert undocumented == [], undocumented
