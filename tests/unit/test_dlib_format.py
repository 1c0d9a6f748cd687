"""Our reader of dlib's network files: structure, and clear errors for damaged files."""

from __future__ import annotations

import numpy as np
import pytest

from explainer_service.errors import ModelFormatError
from explainer_service.models.convert import convert_dlib, dlib_source_path
from explainer_service.models.dlib_format import OFFICIAL_SHA256, parse_dlib_resnet, read_dlib_resnet
from explainer_service.models.dlib_resnet import block_output_shapes


@pytest.fixture(scope="module")
def dat_bytes() -> bytes:
    return dlib_source_path().read_bytes()


def test_reads_the_whole_official_file(dat_bytes):
    net = parse_dlib_resnet(dat_bytes)
    assert net.sha256 == OFFICIAL_SHA256
    assert net.parameter_count() == 5_614_592
    assert len(net.layer_tags) == 108
    assert net.chip_size == 150 and net.embedding_dim == 128
    assert net.mean_rgb == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert net.dist_thresh == pytest.approx(0.6, abs=1e-6)
    assert sum(b.down for b in net.blocks) == 4 and len(net.blocks) == 14
    # the stem conv is 32 x 3 x 7 x 7 stride 2, unpadded (dlib pads only stride-1 convs)
    assert net.stem_conv.weight.shape == (32, 3, 7, 7) and net.stem_conv.stride == 2
    assert net.stem_conv.padding == 0
    assert block_output_shapes(net)[-1] == (256, 2)
    assert net.fc.shape == (256, 128) and np.isfinite(net.fc).all()


@pytest.mark.parametrize("cut", [10, 300, 5_000_000, -1])
def test_truncated_file_is_a_clear_error(dat_bytes, cut):
    with pytest.raises(ModelFormatError, match="truncated|only 10 bytes"):
        parse_dlib_resnet(dat_bytes[:cut], "damaged.dat")


def test_corrupted_bytes_are_a_clear_error(dat_bytes):
    bad = bytearray(dat_bytes)
    bad[340:348] = b"\x7f" * 8  # inside the first layer record
    with pytest.raises(ModelFormatError, match="damaged.dat"):
        parse_dlib_resnet(bytes(bad), "damaged.dat")


def test_other_files_are_refused(tmp_path):
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x00" * 10)
    with pytest.raises(ModelFormatError, match="junk.dat"):
        read_dlib_resnet(junk)
    text = tmp_path / "notes.dat"
    text.write_text("this is not a network " * 10)
    with pytest.raises(ModelFormatError, match="notes.dat"):
        read_dlib_resnet(text)
    with pytest.raises(ModelFormatError, match="cannot read"):
        read_dlib_resnet(tmp_path / "missing.dat")


def test_trailing_garbage_is_refused(dat_bytes):
    with pytest.raises(ModelFormatError):
        parse_dlib_resnet(dat_bytes + b"\x01\x02extra", "padded.dat")


def test_conversion_refuses_a_truncated_file_and_writes_nothing(dat_bytes, tmp_path):
    src = tmp_path / "short.dat"
    src.write_bytes(dat_bytes[: len(dat_bytes) // 2])
    with pytest.raises(ModelFormatError, match="short.dat"):
        convert_dlib(src, tmp_path / "out")
    assert not (tmp_path / "out" / "1" / "model.onnx").exists()
