"""Dataset readers: every format on its fixture (counts, labels, folds, resolved paths), the real
LFW and CFP samples of ../shared, the safe .bin unpickler, CSV errors naming the line, and the
skipped-with-a-count loading of unreadable images."""

from __future__ import annotations

import inspect
import io
import logging
import os
import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explainer_service.datasets import (
    ArrayImage,
    Dataset,
    EncodedImage,
    Pair,
    consecutive_folds,
    load_pair_image,
    load_pairs_checked,
    read_bin_pairs,
    read_calfw_pairs,
    read_cfp_pairs,
    read_cplfw_pairs,
    read_csv_pairs,
    read_dataset,
    read_lfw_pairs,
    write_verification_bin,
)
from explainer_service.errors import InputError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "datasets"


def _png(seed: int, size: int = 40) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


# --- LFW ---------------------------------------------------------------------------------------


def test_read_lfw_pairs_keeps_its_signature():
    sig = inspect.signature(read_lfw_pairs)
    assert list(sig.parameters) == ["root", "images", "pairs"]
    assert sig.parameters["images"].default == "images"
    assert sig.parameters["pairs"].default == "pairs.txt"


def test_lfw_fixture_pairs_labels_folds_paths():
    pairs = read_lfw_pairs(FIX / "lfw", images="aligned112")
    assert len(pairs) == 8
    assert [p.same for p in pairs] == [True, True, False, False] * 2
    assert [p.fold for p in pairs] == [0] * 4 + [1] * 4
    img = FIX / "lfw" / "aligned112"
    assert pairs[2] == Pair(img / "Ann_Lee/Ann_Lee_0001.jpg", img / "Cy_Dane/Cy_Dane_0001.jpg", False, 0)
    assert pairs[4].b == img / "Ann_Lee/Ann_Lee_0003.jpg"
    assert all(x.is_file() for p in pairs for x in (p.a, p.b))


def test_lfw_spec_detects_the_aligned_folder_and_accepts_the_list_itself(tmp_path):
    ds = read_dataset(f"lfw:{FIX / 'lfw'}")  # the fixture has aligned112/ only
    assert (ds.name, ds.aligned, len(ds), ds.folds) == ("lfw", True, 8, [0, 1])
    assert ds.pairs[0].a.parent.parent.name == "aligned112"
    assert read_dataset(f"lfw:{FIX / 'lfw' / 'pairs.txt'}").pairs == ds.pairs
    (tmp_path / "pairs.txt").write_text("1\t1\nA\t1\t2\nA\t1\tB\t1\n")
    with pytest.raises(InputError, match="neither images/ nor aligned112/ found"):
        read_dataset(f"lfw:{tmp_path}")
    (tmp_path / "images").mkdir()
    raw = read_dataset(f"lfw:{tmp_path}")
    assert raw.aligned is False and raw.pairs[0].a == tmp_path / "images/A/A_0001.jpg"
    with pytest.raises(InputError, match="aligned112: no such folder"):
        read_dataset(f"lfw-aligned:{tmp_path}")


def test_lfw_malformed_line_is_named(tmp_path):
    text = (FIX / "lfw" / "pairs.txt").read_text().splitlines()
    text[3] = "Ann_Lee\tone\t2"
    (tmp_path / "pairs.txt").write_text("\n".join(text) + "\n")
    with pytest.raises(InputError, match=r"pairs\.txt:4: image number 'one'"):
        read_lfw_pairs(tmp_path)
    (tmp_path / "pairs.txt").write_text("2\t2\nAnn_Lee\t1\t2\n")
    with pytest.raises(InputError, match="header promises 8"):
        read_lfw_pairs(tmp_path)


@pytest.mark.shared
def test_real_lfw_dev(lfw_dir):
    for spec, aligned in ((f"lfw:{lfw_dir}", False), (f"lfw-aligned:{lfw_dir}", True)):
        ds = read_dataset(spec)
        assert len(ds) == 3000 and ds.aligned is aligned
        assert sum(p.same for p in ds.pairs) == 1500
        assert Counter(p.fold for p in ds.pairs) == {k: 600 for k in range(5)}
        for k in range(5):
            fold = [p.same for p in ds.pairs if p.fold == k]
            assert fold == [True] * 300 + [False] * 300
    images = {x for p in ds.pairs for x in (p.a, p.b)}
    assert len(images) == 3811 and all(x.is_file() for x in images)


# --- CFP ---------------------------------------------------------------------------------------


def test_cfp_ff_fixture():
    pairs = read_cfp_pairs(FIX / "cfp", "FF")
    root = FIX / "cfp" / "Data" / "Images"
    assert len(pairs) == 8
    assert [p.fold for p in pairs] == [0] * 4 + [1] * 4
    assert [p.same for p in pairs] == [True, True, False, False] * 2
    assert pairs[0] == Pair(root / "001/frontal/01.jpg", root / "001/frontal/02.jpg", True, 0)
    assert pairs[3] == Pair(root / "002/frontal/02.jpg", root / "003/frontal/01.jpg", False, 0)
    assert all(".." not in x.parts and x.is_file() for p in pairs for x in (p.a, p.b))


def test_cfp_fp_fixture_indexes_frontal_then_profile():
    pairs = read_cfp_pairs(FIX / "cfp", "FP")
    root = FIX / "cfp" / "Data" / "Images"
    assert len(pairs) == 8
    assert pairs[0] == Pair(root / "001/frontal/01.jpg", root / "001/profile/01.jpg", True, 0)
    assert pairs[1].b == root / "002/profile/01.jpg"  # P index 5
    assert pairs[3] == Pair(root / "003/frontal/01.jpg", root / "001/profile/01.jpg", False, 0)
    assert all(p.a.parent.name == "frontal" and p.b.parent.name == "profile" for p in pairs)


def test_cfp_aligned_mirror_and_protocol_folder_as_root():
    ds = read_dataset(f"cfp-fp-aligned:{FIX / 'cfp'}")
    assert (ds.name, ds.aligned, len(ds)) == ("cfp-fp", True, 8)
    assert ds.pairs[0].a == FIX / "cfp" / "aligned112" / "001/frontal/01.jpg"
    assert all(x.is_file() for p in ds.pairs for x in (p.a, p.b))
    assert read_cfp_pairs(FIX / "cfp" / "Protocol", "ff") == read_cfp_pairs(FIX / "cfp", "FF")
    assert read_dataset(f"cfp-ff:{FIX / 'cfp'}").aligned is False


def _cfp_copy(tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(FIX / "cfp" / "Protocol", tmp_path / "Protocol")
    return tmp_path


def test_cfp_errors_name_file_and_line(tmp_path):
    root = _cfp_copy(tmp_path)
    same = root / "Protocol/Split/FP/02/same.txt"
    same.write_text("22,9\n2,7\n")  # P has no index 7
    with pytest.raises(InputError, match=r"FP/02/same\.txt:2: index 7 is not in Pair_list_P\.txt"):
        read_cfp_pairs(root, "FP")
    same.write_text("22;9\n")
    with pytest.raises(InputError, match=r"same\.txt:1: expected 'i,j'"):
        read_cfp_pairs(root, "FP")
    flist = root / "Protocol/Pair_list_F.txt"
    flist.write_text(flist.read_text() + "2 ../Data/Images/009/frontal/01.jpg\n")
    with pytest.raises(InputError, match=r"Pair_list_F\.txt:7: index 2 already listed on line 2"):
        read_cfp_pairs(root, "FF")
    flist.unlink()
    with pytest.raises(InputError, match=r"Pair_list_F\.txt: no such file"):
        read_cfp_pairs(root, "FF")
    with pytest.raises(InputError, match="FF' or 'FP"):
        read_cfp_pairs(root, "PP")


@pytest.mark.shared
def test_real_cfp_split_01(shared_dir):
    root = shared_dir / "data" / "cfp-dev"
    for proto in ("ff", "fp"):
        for aligned in (False, True):
            ds = read_dataset(f"cfp-{proto}{'-aligned' if aligned else ''}:{root}")
            assert len(ds) == 700 and ds.folds == [0]
            assert Counter(p.same for p in ds.pairs) == {True: 350, False: 350}
            assert all(x.is_file() for p in ds.pairs for x in (p.a, p.b))
            if proto == "fp":
                assert all(p.b.parent.name == "profile" for p in ds.pairs)


# --- CPLFW / CALFW -----------------------------------------------------------------------------


def test_cplfw_fixture_blocks_become_folds():
    pairs = read_cplfw_pairs(FIX / "cplfw")
    assert len(pairs) == 20
    assert [p.fold for p in pairs] == [k for k in range(10) for _ in range(2)]
    assert [p.same for p in pairs] == [True, False] * 10
    img = FIX / "cplfw" / "images"
    # the file's first matched pair (lines 1-2) and first mismatched pair (lines 21-22) make fold 0
    assert pairs[0] == Pair(img / "Ann_Lee_1.jpg", img / "Ann_Lee_2.jpg", True, 0)
    assert pairs[1] == Pair(img / "Ann_Lee_1.jpg", img / "Bo_Chen_2.jpg", False, 0)
    assert pairs[2].a == img / "Bo_Chen_2.jpg"  # the second matched pair (lines 3-4) -> fold 1
    assert all(x.is_file() for p in pairs for x in (p.a, p.b))
    ds = read_dataset(f"cplfw:{FIX / 'cplfw' / 'pairs_CPLFW.txt'}")
    assert (ds.name, ds.aligned, ds.pairs) == ("cplfw", False, tuple(pairs))


def test_calfw_fixture_nonzero_token_is_matched():
    pairs = read_calfw_pairs(FIX / "calfw")  # CRLF file, images in "aligned images"
    assert len(pairs) == 20 and sum(p.same for p in pairs) == 10
    assert [p.fold for p in pairs] == [k for k in range(10) for _ in range(2)]
    img = FIX / "calfw" / "aligned images"
    assert pairs[0] == Pair(img / "Ann_Lee_0001.jpg", img / "Ann_Lee_0002.jpg", True, 0)
    assert all(x.is_file() for p in pairs for x in (p.a, p.b))
    five = read_calfw_pairs(FIX / "calfw", folds=5)
    assert Counter(p.fold for p in five) == {k: 4 for k in range(5)}
    assert read_dataset(f"calfw:{FIX / 'calfw'}").name == "calfw"


def test_fold_assignment_does_not_depend_on_block_or_interleaved_order(tmp_path):
    lines = (FIX / "cplfw" / "pairs_CPLFW.txt").read_text().splitlines()
    pos = [lines[i : i + 2] for i in range(0, 20, 2)]
    neg = [lines[i : i + 2] for i in range(20, 40, 2)]
    interleaved = [ln for k in range(10) for ln in pos[k] + neg[k]]
    (tmp_path / "images").mkdir()
    (tmp_path / "pairs_CPLFW.txt").write_text("\n".join(interleaved) + "\n")
    got = read_cplfw_pairs(tmp_path)
    want = read_cplfw_pairs(FIX / "cplfw")
    assert [(p.a.name, p.b.name, p.same, p.fold) for p in got] == [
        (p.a.name, p.b.name, p.same, p.fold) for p in want
    ]


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("A_1.jpg 1\nA_2.jpg 1\nB_1.jpg 0\n", r"pairs_CPLFW\.txt:3: odd number"),
        ("A_1.jpg 1\nA_2.jpg 0\n", r"pairs_CPLFW\.txt:2: label 0 differs from 1 on line 1"),
        ("A_1.jpg 2\nA_2.jpg 2\n", r"pairs_CPLFW\.txt:1: label must be 0 or 1"),
        ("A_1.jpg yes\nA_2.jpg 1\n", r"pairs_CPLFW\.txt:1: label 'yes' is not an integer"),
        ("A_1.jpg 1\n\nA_2.jpg\n", r"pairs_CPLFW\.txt:3: expected 'image.jpg label'"),
    ],
)
def test_cplfw_errors_name_the_line(tmp_path, text, pattern):
    (tmp_path / "images").mkdir()
    (tmp_path / "pairs_CPLFW.txt").write_text(text)
    with pytest.raises(InputError, match=pattern):
        read_cplfw_pairs(tmp_path)


def test_cplfw_without_images_folder(tmp_path):
    (tmp_path / "pairs_CPLFW.txt").write_text("A_1.jpg 1\nA_2.jpg 1\n")
    with pytest.raises(InputError, match="no image folder found for cplfw"):
        read_cplfw_pairs(tmp_path)


# --- insightface .bin --------------------------------------------------------------------------


def test_consecutive_folds_match_sklearn_kfold():
    assert consecutive_folds(12) == [0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert Counter(consecutive_folds(6000)) == {k: 600 for k in range(10)}
    assert Counter(consecutive_folds(7001)) == {0: 701, **{k: 700 for k in range(1, 10)}}
    assert consecutive_folds(3) == [0, 1, 2] and consecutive_folds(0) == []


def test_bin_fixture():
    ds = read_dataset(f"bin:{FIX / 'bin' / 'tiny.bin'}")
    assert (ds.name, ds.aligned, len(ds)) == ("tiny", True, 12)
    assert [p.same for p in ds.pairs] == [True, False] * 6
    assert [p.fold for p in ds.pairs] == consecutive_folds(12)
    a = ds.pairs[3].a
    assert isinstance(a, EncodedImage) and a.name.endswith("tiny.bin#6")
    img = load_pair_image(a)
    assert img.shape == (40, 40, 3) and img.dtype == np.uint8
    assert (load_pair_image(ds.pairs[0].a) == load_pair_image(ds.pairs[0].b)).all()  # same encoded image


def test_bin_round_trip_is_pixel_exact(tmp_path):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (36, 40, 3), dtype=np.uint8) for _ in range(6)]
    write_verification_bin(tmp_path / "rt.bin", arrays, [True, False, True])
    pairs = read_bin_pairs(tmp_path / "rt.bin")
    assert [p.same for p in pairs] == [True, False, True] and [p.fold for p in pairs] == [0, 1, 2]
    got = [load_pair_image(x) for p in pairs for x in (p.a, p.b)]
    assert all((g == a).all() for g, a in zip(got, arrays, strict=True))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_bin_with_cv2_style_arrays_and_numpy_labels(tmp_path, protocol):
    encoded = [np.frombuffer(_png(k), np.uint8).reshape(-1, 1) for k in range(4)]  # like cv2.imencode
    with open(tmp_path / "cv2.bin", "wb") as f:
        pickle.dump((encoded, np.array([True, False])), f, protocol=protocol)
    pairs = read_bin_pairs(tmp_path / "cv2.bin")
    assert [p.same for p in pairs] == [True, False]
    assert load_pair_image(pairs[1].b).shape == (40, 40, 3)


def test_bin_written_by_python2(tmp_path):
    # Python 2's pickle.dump((bins, issame), f, 2): str entries as BINSTRING, read with encoding='bytes'
    blobs = [_png(k) for k in range(2)]
    body = b"\x80\x02(]q\x00(" + b"".join(b"T" + struct.pack("<I", len(x)) + x for x in blobs)
    body += b"e]q\x01(\x88et."
    (tmp_path / "py2.bin").write_bytes(body)
    pairs = read_bin_pairs(tmp_path / "py2.bin")
    assert len(pairs) == 1 and pairs[0].same is True
    assert load_pair_image(pairs[0].b).shape == (40, 40, 3)


class _Payload:
    """A class instance: never part of a verification .bin."""

    def __init__(self) -> None:
        self.x = 1


class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_bin_refuses_code_and_objects(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.bin", "wb") as f:
        pickle.dump(([_RunsCommand(marker), b"x"], [True]), f)
    with pytest.raises(InputError, match=r"evil\.bin: refused: the pickle asks for (posix|nt|os)\.system"):
        read_bin_pairs(tmp_path / "evil.bin")
    assert not marker.exists()
    with open(tmp_path / "obj.bin", "wb") as f:
        pickle.dump(([_Payload(), b"x"], [True]), f, protocol=2)
    with pytest.raises(
        InputError, match=r"refused: the pickle asks for tests\.unit\.test_datasets\._Payload"
    ):
        read_bin_pairs(tmp_path / "obj.bin")


@pytest.mark.parametrize(
    "payload, pattern",
    [
        ({"bins": []}, "expected a pickled \\(bins, issame_list\\), got dict"),
        (([b"a", b"b", b"c"], [True]), "3 images for 1 pairs"),
        (([b"a", b"b"], [2]), r"issame_list\[0\] is 2, not a bool"),
        (([b"a", "b"], [True]), r"bins\[1\] is str, not encoded image bytes"),
        (([], []), "no pairs"),
    ],
)
def test_bin_malformed_payloads(tmp_path, payload, pattern):
    with open(tmp_path / "bad.bin", "wb") as f:
        pickle.dump(payload, f)
    with pytest.raises(InputError, match=pattern):
        read_bin_pairs(tmp_path / "bad.bin")


def test_bin_not_a_pickle_and_bad_image(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"\x80\x05junk")
    with pytest.raises(InputError, match=r"junk\.bin: not a verification \.bin pickle"):
        read_bin_pairs(tmp_path / "junk.bin")
    with pytest.raises(InputError, match="no such file"):
        read_bin_pairs(tmp_path / "absent.bin")
    write_verification_bin(tmp_path / "b.bin", [_png(0), b"not an image"], [True])
    with pytest.raises(InputError, match=r"b\.bin#1: not an image"):
        load_pair_image(read_bin_pairs(tmp_path / "b.bin")[0].b)


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_fixture_with_fold_column():
    pairs = read_csv_pairs(FIX / "csv" / "pairs.csv")
    assert [p.same for p in pairs] == [True, False, True, False]
    assert [p.fold for p in pairs] == [0, 0, 1, 1]
    assert pairs[0].a == FIX / "csv" / "../lfw/aligned112/Ann_Lee/Ann_Lee_0001.jpg"
    assert all(x.is_file() for p in pairs for x in (p.a, p.b))
    assert read_dataset(f"csv:{FIX / 'csv' / 'pairs.csv'}").aligned is False
    assert read_dataset(f"csv-aligned:{FIX / 'csv' / 'pairs.csv'}").aligned is True


def test_csv_without_fold_column_gets_consecutive_folds():
    pairs = read_csv_pairs(FIX / "csv" / "nofold.csv")  # header "IMG1, Img2 ,same"
    assert len(pairs) == 12 and [p.same for p in pairs] == [True, False] * 6
    assert [p.fold for p in pairs] == consecutive_folds(12)


def test_csv_absolute_paths_are_kept(tmp_path):
    a = (FIX / "lfw/aligned112/Di_Eve/Di_Eve_0001.jpg").resolve()
    (tmp_path / "abs.csv").write_text(f'img1,img2,same\n"{a}",rel/b.jpg,1\n')
    (p,) = read_csv_pairs(tmp_path / "abs.csv")
    assert p.a == a and p.b == tmp_path / "rel/b.jpg"


@pytest.mark.parametrize(
    "text, pattern",
    [
        (
            "img1,img2,same\na.jpg,b.jpg,1\na.jpg,b.jpg,maybe\n",
            r"x\.csv:3: same must be 1/0/true/false/yes/no, got 'maybe'",
        ),
        ("img1,img2\na.jpg,b.jpg\n", r"x\.csv:1: header lacks same"),
        ("img1,img2,same\na.jpg,b.jpg\n", r"x\.csv:2: 2 fields, the header has 3"),
        ("img1,img2,same,fold\na.jpg,b.jpg,1,first\n", r"x\.csv:2: fold 'first' is not an integer"),
        ("img1,img2,same\n\na.jpg,,1\n", r"x\.csv:3: empty image path"),
        ("img1,img2,same\n", r"x\.csv: no pairs after the header"),
        ("", r"x\.csv: empty file"),
        ("img1,img2,same,same\na,b,1,1\n", r"x\.csv:1: column 'same' appears twice"),
    ],
)
def test_csv_errors_name_the_line(tmp_path, text, pattern):
    (tmp_path / "x.csv").write_text(text)
    with pytest.raises(InputError, match=pattern):
        read_csv_pairs(tmp_path / "x.csv")


# --- read_dataset ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("lfw", "must be KIND:PATH"),
        ("foo:/tmp", "unknown dataset kind 'foo'"),
        ("bin-aligned:/tmp/x.bin", "unknown dataset kind 'bin-aligned'"),
        ("cplfw:/no/such/folder", r"/no/such/folder: no such file or folder"),
    ],
)
def test_read_dataset_errors(spec, pattern):
    with pytest.raises(InputError, match=pattern):
        read_dataset(spec)


# --- loading -----------------------------------------------------------------------------------


def test_load_pairs_checked_skips_unreadable_images_with_a_count(tmp_path, caplog):
    good = FIX / "lfw/aligned112/Ann_Lee/Ann_Lee_0001.jpg"
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "p.csv").write_text(
        f"img1,img2,same\n{good},{good},1\n{good},broken.jpg,0\nbroken.jpg,{good},0\n{good},missing.jpg,1\n"
    )
    ds = Dataset("t", read_csv_pairs(tmp_path / "p.csv"), True)
    calls = Counter()

    def loader(ref):
        calls[str(ref)] += 1
        return load_pair_image(ref)

    with caplog.at_level(logging.WARNING, logger="explainer_service.datasets"):
        loaded, report = load_pairs_checked(ds, loader=loader)
    assert (report.total, report.loaded, report.skipped) == (4, 1, 3)
    assert set(report.failures) == {str(tmp_path / "broken.jpg"), str(tmp_path / "missing.jpg")}
    assert "not an image" in report.failures[str(tmp_path / "broken.jpg")]
    assert "no such file" in report.failures[str(tmp_path / "missing.jpg")]
    assert max(calls.values()) == 1  # each distinct image loaded once
    assert report.summary() == "kept 1 of 4 pairs; skipped 3 (2 unreadable images)"
    assert "skipped 3" in caplog.text
    assert loaded[0].pair is ds.pairs[0] and loaded[0].a is loaded[0].b
    assert loaded[0].a.shape == (40, 40, 3) and not loaded[0].a.flags.writeable


def test_load_pairs_checked_on_a_clean_fixture():
    loaded, report = load_pairs_checked(read_dataset(f"bin:{FIX / 'bin' / 'tiny.bin'}"))
    assert len(loaded) == 12 and report.skipped == 0 and report.summary() == "kept all 12 pairs"


def test_array_image_and_bad_refs():
    arr = np.full((40, 40, 3), 7, np.uint8)
    ref = ArrayImage("mem#0", arr)
    arr[:] = 0  # the reference keeps its own copy
    got = load_pair_image(ref)
    assert (got == 7).all() and not got.flags.writeable
    assert ref == ArrayImage("mem#0", np.zeros((40, 40, 3), np.uint8))  # equal by name
    with pytest.raises(InputError, match="not an image reference"):
        load_pair_image(12)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="mem#1: image too small"):
        ArrayImage("mem#1", np.zeros((8, 8, 3), np.uint8))


# --- the package front and prepare_pairs ---------------------------------------------------------


def test_package_front_exports_every_reader_and_not_prepare():
    import explainer_service.datasets as datasets

    assert sorted(datasets.__all__) == sorted(
        [
            "ImageSource", "ImageRef", "EncodedImage", "ArrayImage", "Pair", "Dataset", "DATASET_KINDS",
            "ALIGNED_DIR", "DEFAULT_FOLDS", "read_dataset", "read_lfw_pairs", "read_cfp_pairs",
            "read_cplfw_pairs", "read_calfw_pairs", "read_bin_pairs", "write_verification_bin",
            "read_csv_pairs", "consecutive_folds", "load_pair_image", "ref_name", "LoadedPair",
            "LoadReport", "load_pairs_checked",
        ]
    )
    assert all(hasattr(datasets, n) for n in datasets.__all__)
    assert not hasattr(datasets, "prepare_pairs")  # it lives in datasets.prepare (aligner, occluder)


def test_ref_name_of_paths_strings_and_sources():
    from explainer_service.datasets import ref_name

    arr = np.zeros((40, 40, 3), np.uint8)
    assert ref_name(Path("a/b.jpg")) == str(Path("a/b.jpg"))
    assert ref_name("x.png") == "x.png"
    assert ref_name(ArrayImage("mem#3", arr)) == "mem#3"
    assert ref_name(EncodedImage("f.bin#0", _png(0))) == "f.bin#0"


def _square_and_odd_csv(tmp_path: Path) -> Path:
    """An aligned CSV set: pair 1's B and pair 2's A are not square (cannot be taken as ArcFace
    crops), pair 3's B does not exist, pair 4 is good."""
    rng = np.random.default_rng(0)
    for name, shape in [("a1", (112, 112)), ("b1", (100, 120)), ("a2", (90, 112)), ("b2", (112, 112)),
                        ("a3", (112, 112)), ("a4", (112, 112)), ("b4", (112, 112))]:
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    rows = ["img1,img2,same", "a1.png,b1.png,1", "a2.png,b2.png,1", "a3.png,missing.png,1", "a4.png,b4.png,1"]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "pairs.csv"


def test_prepare_pairs_keys_each_skipped_pair_by_the_image_that_failed(tmp_path):
    from types import SimpleNamespace

    from explainer_service.datasets.prepare import prepare_pairs
    from explainer_service.spec import ARCFACE_CHIP

    ds = read_dataset(f"csv-aligned:{_square_and_odd_csv(tmp_path)}")
    model = SimpleNamespace(spec=SimpleNamespace(chip=ARCFACE_CHIP))
    prepared = prepare_pairs(ds, model, pairs=4)

    a, b = str(tmp_path / "a4.png"), str(tmp_path / "b4.png")
    assert prepared.names == [(a, b)] and prepared.chips_a.shape == (1, 112, 112, 3)
    assert prepared.matched_available == 4
    assert set(prepared.skipped) == {str(tmp_path / n) for n in ("b1.png", "a2.png", "missing.png")}
    b1 = prepared.skipped[str(tmp_path / "b1.png")]
    assert "image B" in b1 and str(tmp_path / "a1.png") in b1 and "square" in b1 and "120x100" in b1
    a2 = prepared.skipped[str(tmp_path / "a2.png")]
    assert "image A" in a2 and str(tmp_path / "b2.png") in a2 and "square" in a2
    assert "no such file" in prepared.skipped[str(tmp_path / "missing.png")]
    assert prepared.dropped == {"unreadable": 1, "no_face": 0, "several_faces": 0, "not_aligned": 2}
    assert (prepared.requested, prepared.shortfall, prepared.replaced) == (4, 3, 0)
    assert prepared.summary() == (
        "1 matched pairs of 4; 3 dropped (1 unreadable image, 2 not aligned); only 1 of the 4 pairs asked: "
        "the dataset has no more matched pairs with two usable images"
    )


def test_prepare_pairs_refusals(tmp_path):
    from types import SimpleNamespace

    from explainer_service.datasets.prepare import prepare_pairs
    from explainer_service.spec import ARCFACE_CHIP

    model = SimpleNamespace(spec=SimpleNamespace(chip=ARCFACE_CHIP))
    ds = read_dataset(f"csv-aligned:{_square_and_odd_csv(tmp_path)}")
    with pytest.raises(InputError, match="--pairs must be >= 1"):
        prepare_pairs(ds, model, pairs=0)
    with pytest.raises(InputError, match="aligned variant"):
        prepare_pairs(read_dataset(f"csv:{tmp_path / 'pairs.csv'}"), model, pairs=1, occlude=True)
    only_bad = Dataset("bad", [p for p in ds.pairs if "a4" not in str(p.a)], True)
    with pytest.raises(InputError, match="none of the chosen pairs could be loaded and aligned"):
        prepare_pairs(only_bad, model, pairs=3)
    no_matched = Dataset("diff", [Pair(p.a, p.b, False, 0) for p in ds.pairs], True)
    with pytest.raises(InputError, match="no matched pairs"):
        prepare_pairs(no_matched, model, pairs=1)


@pytest.mark.parametrize("kind, name", [("lfw", "pairs.txt"), ("csv", "pairs.csv")])
def test_a_pair_list_that_is_a_fifo_is_refused_without_blocking(tmp_path, kind, name):
    from explainer_service.datasets import read_dataset

    (tmp_path / "images").mkdir()
    fifo = tmp_path / name
    os.mkfifo(fifo)  # nothing writes to it: a read would block forever
    spec = f"{kind}:{tmp_path if kind == 'lfw' else fifo}"
    with pytest.raises(InputError, match=r"is a FIFO \(named pipe\), not a regular file"):
        read_dataset(spec)
