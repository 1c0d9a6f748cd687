"""The model record store: records round-trip in a repository, names are checked, bad records are
format errors, and the registry reads it (unknown names vs slots without weights)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from explainer_service.errors import (
    InputError,
    ModelFormatError,
    ModelNotReadyError,
    UnknownModelError,
    exit_code,
    grpc_status,
)
from explainer_service.models import store
from explainer_service.models.registry import DEFAULT_MODEL, DLIB_RESNET_V1, get_spec, known_models
from explainer_service.models.store import (
    RECORD_FILE,
    SLOTS,
    ModelRecord,
    is_valid_name,
    list_records,
    model_dir,
    onnx_path,
    read_record,
    triton_name,
    write_record,
)
from explainer_service.spec import ARCFACE_CHIP, DLIB_CHIP, ChipSpec


def _record(name: str = "my-face-model", **kw) -> ModelRecord:
    base = dict(
        name=name,
        family="onnx",
        chip=ARCFACE_CHIP,
        embedding_dim=512,
        threshold=0.31,
        description="a test model",
        source={"sha256": "ab" * 32, "path": "/x/model.onnx", "convention": {"channels": "rgb"}},
    )
    base.update(kw)
    return ModelRecord(**base)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    path = tmp_path / "repository"
    monkeypatch.setenv("FACEXPLAIN_MODEL_REPOSITORY", str(path))
    return path


def test_a_record_round_trips(repo):
    rec = _record()
    folder = write_record(rec)
    assert folder == repo / "my_face_model" == model_dir("my-face-model")
    assert read_record("my-face-model") == rec
    # the same folder is reached by the Triton spelling of the name
    assert read_record("my_face_model") == rec
    on_disk = json.loads((folder / RECORD_FILE).read_text())
    assert on_disk["chip"] == {"kind": "arcface", "size": 112}
    assert on_disk["threshold"] == 0.31 and on_disk["source"]["sha256"] == "ab" * 32
    assert ModelRecord.from_json(on_disk) == rec
    assert sorted(os.listdir(folder)) == [RECORD_FILE]  # no config.pbtxt, no temporary left


def test_record_file_mode_follows_the_umask(repo):
    old = os.umask(0o022)
    try:
        folder = write_record(_record())
    finally:
        os.umask(old)
    assert stat.S_IMODE((folder / RECORD_FILE).stat().st_mode) == 0o644


def test_an_uncalibrated_record_keeps_none(repo):
    write_record(_record(threshold=None, chip=DLIB_CHIP, embedding_dim=128))
    rec = read_record("my-face-model")
    assert rec is not None and rec.threshold is None and rec.chip == DLIB_CHIP


def test_rewriting_a_record_replaces_it(repo):
    write_record(_record(threshold=0.3))
    write_record(_record(threshold=0.4))
    assert read_record("my-face-model").threshold == 0.4
    assert len(list_records()) == 1


def test_an_explicit_repository_wins_over_the_environment(repo, tmp_path):
    other = tmp_path / "other"
    write_record(_record(), other)
    assert read_record("my-face-model", other) == _record()
    assert read_record("my-face-model") is None
    assert list_records() == [] and list_records(other) == [_record()]


def test_list_records_sorted_and_only_folders_with_records(repo):
    for name in ("zeta", "alpha-1", "mid_model"):
        write_record(_record(name))
    (repo / "arcface_r50").mkdir()  # a slot: config only, no record
    (repo / "arcface_r50" / "config.pbtxt").write_text("name: x\n")
    (repo / "README.md").write_text("not a model\n")
    assert [r.name for r in list_records()] == ["alpha-1", "mid_model", "zeta"]


def test_an_empty_or_missing_repository_lists_nothing(tmp_path):
    assert list_records(tmp_path / "nope") == []
    assert list_records(tmp_path) == []


def test_a_missing_record_is_none(repo):
    assert read_record("never-imported") is None


def test_paths(repo):
    assert onnx_path("a-b") == repo / "a_b" / "1" / "model.onnx"
    assert model_dir("a-b", repo / "x") == repo / "x" / "a_b"


@pytest.mark.parametrize(
    "name", ["", "Upper", "-leading", "_leading", "has space", "a/b", "../up", "a.b", "x" * 65, "é", "a\nb"]
)
def test_invalid_names_are_input_errors(repo, name):
    assert not is_valid_name(name)
    with pytest.raises(InputError, match="model name"):
        triton_name(name)
    with pytest.raises(InputError, match="model name"):
        read_record(name)
    with pytest.raises(InputError, match="model name"):
        model_dir(name)
    with pytest.raises(InputError, match="model name"):
        write_record(_record(name))
    assert not repo.exists()  # nothing written for a bad name


@pytest.mark.parametrize("name", ["a", "0", "dlib-resnet-v1", "arcface_r50", "x" * 64])
def test_valid_names(name):
    assert is_valid_name(name)
    assert triton_name(name) == name.replace("-", "_")


def test_a_non_string_name_is_an_input_error():
    assert not is_valid_name(None)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        triton_name(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[1, 2, 3]",
        b'"a string"',
        b'{"name": "m"}',
        b'{"name": "m", "family": "onnx", "chip": {"kind": "arcface", "size": 112}, "embedding_dim": "many"}',
        b'{"name": "m", "family": "onnx", "chip": {"kind": "square", "size": 112}, "embedding_dim": 512}',
        b'{"name": "m", "family": "onnx", "chip": null, "embedding_dim": 512}',
        b"\xff\xfe\x00garbage",
        b"",
    ],
)
def test_an_unreadable_record_is_a_format_error_naming_the_file(repo, content):
    folder = repo / "broken"
    folder.mkdir(parents=True)
    (folder / RECORD_FILE).write_bytes(content)
    with pytest.raises(ModelFormatError, match="broken/facexplain.json: unreadable model record") as info:
        read_record("broken")
    assert "\n" not in str(info.value)
    with pytest.raises(ModelFormatError, match="broken/facexplain.json"):
        list_records()


def test_slots_are_the_papers_three_families():
    assert [(s.name, s.family) for s in SLOTS] == [
        ("arcface_r50", "arcface"), ("magface_r50", "magface"), ("adaface_ir50", "adaface"),
    ]
    assert all(is_valid_name(s.name) for s in SLOTS)


def test_record_spec():
    spec = _record().spec()
    assert (spec.name, spec.chip, spec.embedding_dim, spec.threshold) == ("my-face-model", ARCFACE_CHIP, 512, 0.31)


# ---- the registry over the store --------------------------------------------------------------


def test_registry_reads_records_and_the_builtin_default(repo):
    assert get_spec(DEFAULT_MODEL) == DLIB_RESNET_V1  # no record: the built-in spec
    write_record(_record("dlib-resnet-v1", family="dlib", chip=DLIB_CHIP, embedding_dim=128, threshold=0.9))
    assert get_spec(DEFAULT_MODEL).threshold == 0.9  # its record wins
    write_record(_record())
    assert get_spec("my-face-model") == _record().spec()
    assert [s.name for s in known_models()] == ["dlib-resnet-v1", "my-face-model"]


def test_an_unknown_model_is_not_found_naming_the_known_ones(repo):
    write_record(_record())
    with pytest.raises(UnknownModelError, match=r"unknown model 'nope' \(known: dlib-resnet-v1, my-face-model\)") as info:
        get_spec("nope")
    assert grpc_status(info.value) == "NOT_FOUND" and exit_code(info.value) == 2


def test_a_malformed_name_is_an_unknown_model(repo):
    with pytest.raises(UnknownModelError, match="unknown model"):
        get_spec("../../etc")


def test_a_slot_without_weights_is_not_ready(repo):
    with pytest.raises(ModelNotReadyError, match="has no weights yet.*--family magface") as info:
        get_spec("magface_r50")
    assert not isinstance(info.value, UnknownModelError)
    assert grpc_status(info.value) == "FAILED_PRECONDITION"


def test_a_slot_with_a_record_is_ready(repo):
    write_record(_record("magface_r50", family="magface"))
    assert get_spec("magface_r50").name == "magface_r50"


def test_package_model_file_names_a_missing_file():
    with pytest.raises(ModelNotReadyError, match="no_such_file.dat"):
        store.package_model_file("no_such_file.dat")


def test_chip_spec_in_a_record_is_validated():
    with pytest.raises(InputError):
        ModelRecord.from_json({"name": "m", "family": "onnx", "chip": {"kind": "arcface", "size": 4}, "embedding_dim": 1})
    assert ModelRecord.from_json(
        {"name": "m", "family": "onnx", "chip": {"kind": "arcface", "size": "112"}, "embedding_dim": "8"}
    ).chip == ChipSpec("arcface", 112)
