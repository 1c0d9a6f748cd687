"""Paired comparison of evaluations (explainer_service.paired): t intervals against SciPy, verdicts,
pairs matched by name across folders, refusals, and evaluate's per-pair output and --paired-against."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from explainer_service.cli import main
from explainer_service.errors import InputError
from explainer_service.evaluation import evaluate_methods
from explainer_service.methods import forward_passes
from explainer_service.paired import (
    BETTER,
    NOT_SIGNIFICANT,
    WORSE,
    Interval,
    load_runs,
    mean_interval,
    paired_difference,
    paired_report,
    verdict,
)
from explainer_service.report import write_evaluation
from tests.toy import ToyModel, toy_pair


@pytest.mark.parametrize("n", [2, 5, 40, 193])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_the_intervals_are_scipys_t_intervals(n, confidence):
    rng = np.random.default_rng(n)
    a = rng.normal(10, 4, n)
    b = a + rng.normal(0.7, 1.5, n)
    iv = mean_interval(a, confidence)
    lo, hi = stats.t.interval(confidence, n - 1, loc=a.mean(), scale=stats.sem(a))
    assert iv.n == n
    np.testing.assert_allclose([iv.mean, iv.low, iv.high], [a.mean(), lo, hi], rtol=1e-12)
    diff = paired_difference(a, b, confidence)
    ci = stats.ttest_rel(a, b).confidence_interval(confidence)
    np.testing.assert_allclose([diff.mean, diff.low, diff.high], [(a - b).mean(), ci.low, ci.high], rtol=1e-12)
    assert diff.half_width == pytest.approx((ci.high - ci.low) / 2)


def test_the_paired_interval_is_narrower_than_the_methods_when_pairs_vary_more_than_methods():
    rng = np.random.default_rng(0)
    pair_effect = rng.normal(50, 20, 40)
    a, b = pair_effect + rng.normal(0, 1, 40), pair_effect + 2 + rng.normal(0, 1, 40)
    d = paired_difference(a, b)
    assert d.high < 0  # -2 found although both methods' own intervals overlap
    assert mean_interval(a).high > mean_interval(b).low
    assert d.half_width < mean_interval(a).half_width / 5


def test_verdicts_follow_each_metrics_favourable_direction():
    below, around, above = Interval(-3, -4, -2, 9), Interval(0.5, -1, 2, 9), Interval(3, 2, 4, 9)
    assert [verdict(x, "deletion") for x in (below, around, above)] == [BETTER, NOT_SIGNIFICANT, WORSE]
    assert [verdict(x, "insertion") for x in (below, around, above)] == [WORSE, NOT_SIGNIFICANT, BETTER]
    assert verdict(Interval(0, 0, 0, 9), "deletion") == NOT_SIGNIFICANT  # identical maps: no difference
    with pytest.raises(InputError, match="deletion or insertion"):
        verdict(below, "accuracy")


def test_bad_values_are_refused():
    with pytest.raises(InputError, match="at least 2 pairs, got 1"):
        mean_interval([3.0])
    with pytest.raises(InputError, match="finite"):
        mean_interval([1.0, float("nan")])
    with pytest.raises(InputError, match="same pairs, got 3 and 2"):
        paired_difference([1, 2, 3], [1, 2])


def _write(folder, method, pairs, deletion, insertion, *, passes=1002, dataset="lfw:x", steps=11, model="m",
           chips=None):
    folder.mkdir(parents=True)
    rows = [{"method": method, "deletion": float(np.mean(deletion)), "insertion": float(np.mean(insertion)),
             "forward_passes": passes, "deletion_per_pair": list(deletion), "insertion_per_pair": list(insertion)}]
    meta = {"dataset": dataset, "model": model, "steps": steps, "substrate": "zeros", "perturb": "probe",
            "threshold": 0.9, "pair_names": [list(p) for p in pairs]}
    if chips is not None:
        meta["pair_chips_sha256"] = chips
    (folder / "evaluation.json").write_text(json.dumps({"meta": meta, "rows": rows}))


PAIRS = [(f"p{i}_1", f"p{i}_2") for i in range(6)]


def test_runs_of_different_times_are_paired_by_pair_name(tmp_path):
    rng = np.random.default_rng(1)
    ref_d, ref_i = rng.uniform(0, 30, 6), rng.uniform(60, 90, 6)
    oth_d, oth_i = ref_d + rng.uniform(3, 6, 6), ref_i - rng.uniform(3, 6, 6)
    order = [3, 0, 5, 1, 4, 2]  # the other run lists the same pairs in another order
    chips = [f"c{k}" for k in range(6)]
    _write(tmp_path / "a", "plus", PAIRS, ref_d, ref_i, chips=chips)
    _write(tmp_path / "b", "lime", [PAIRS[k] for k in order], oth_d[order], oth_i[order], passes=1002,
           chips=[chips[k] for k in order])
    _write(tmp_path / "c", "xface", PAIRS, ref_d, ref_i + 1, passes=2118)
    runs = load_runs([tmp_path])
    text = paired_report(runs, "plus")
    d = paired_difference(ref_d, oth_d)
    i = paired_difference(ref_i, oth_i)
    assert f"| lime | 1,002 | {d.mean:+.2f} +- {d.half_width:.2f} {BETTER} | {i.mean:+.2f} +- {i.half_width:.2f} {BETTER} |" in text
    assert f"| xface | 2,118 | +0.00 +- 0.00 {NOT_SIGNIFICANT} | -1.00 +- 0.00 {WORSE} |" in text
    assert "plus, of 4 cells: 2 better, 1 worse, 1 n.s." in text
    iv = mean_interval(ref_d)
    assert f"| plus | 1,002 | {iv.mean:.2f} [{iv.low:.2f}, {iv.high:.2f}]" in text


def test_runs_on_other_pairs_or_settings_are_refused(tmp_path):
    x = np.arange(6.0)
    _write(tmp_path / "a", "plus", PAIRS, x, x)
    _write(tmp_path / "b", "lime", PAIRS[:5] + [("q_1", "q_2")], x, x)
    with pytest.raises(InputError, match=r"lime .* other pairs than plus .*: 1 pairs only in the first, 1 only"):
        paired_report(load_runs([tmp_path]), "plus")
    _write(tmp_path / "c", "xface", PAIRS, x, x, steps=51)
    with pytest.raises(InputError, match="evaluated with"):
        paired_report(load_runs([tmp_path / "a", tmp_path / "c"]), "plus")
    _write(tmp_path / "f", "xface", PAIRS, x, x, chips=["c0", "c1", "c2", "c3", "c4", "other"])
    _write(tmp_path / "g", "lime", PAIRS, x, x, chips=[f"c{k}" for k in range(6)])
    with pytest.raises(InputError, match=r"xface .* other chips than lime .* for 1 of the same-named pairs"):
        paired_report(load_runs([tmp_path / "g", tmp_path / "f"]), "lime")
    _write(tmp_path / "d", "plus", PAIRS, x, x)
    with pytest.raises(InputError, match="method plus is given twice"):
        paired_report(load_runs([tmp_path / "a", tmp_path / "d"]), "plus")
    with pytest.raises(InputError, match="no run of the reference method corrrise"):
        paired_report(load_runs([tmp_path / "a"]), "corrrise")
    # other scenarios and models are separate groups, never paired with each other
    _write(tmp_path / "e", "plus", PAIRS[:3], x[:3], x[:3], dataset="cfp:y")
    assert "cfp:y Deletion" in paired_report(load_runs([tmp_path / "a", tmp_path / "e"]), "plus")


def test_folders_without_per_pair_results_are_refused(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        load_runs([tmp_path / "missing"])
    with pytest.raises(InputError, match="no evaluation.json"):
        load_runs([tmp_path])
    (tmp_path / "evaluation.json").write_text(json.dumps({"meta": {"dataset": "d", "model": "m"}, "rows": []}))
    with pytest.raises(InputError, match="no pair names"):
        load_runs([tmp_path])
    (tmp_path / "evaluation.json").write_text("{not json")
    with pytest.raises(InputError, match="not an evaluation.json"):
        load_runs([tmp_path])


def test_evaluate_writes_per_pair_aucs_and_the_budget(tmp_path):
    pairs = [toy_pair(s) for s in range(3)]
    ca, cb = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    model = ToyModel()
    results = evaluate_methods(ca, cb, model, ["corrrise", "lime"], budget=16)
    names = [[f"a{k}", f"b{k}"] for k in range(3)]
    paths = write_evaluation(tmp_path, results, {"dataset": "toy", "model": "toy", "pair_names": names})
    rows = json.loads(paths["json"].read_text())["rows"]
    for res, row in zip(results, rows, strict=True):
        np.testing.assert_allclose(row["deletion_per_pair"], res.deletion.per_pair_auc(), atol=1e-4)
        assert np.mean(row["insertion_per_pair"]) == pytest.approx(res.insertion.auc, abs=1e-3)
        assert row["forward_passes"] == forward_passes(res.method, model.spec.chip.size, budget=16)
    assert "| lime |" in paired_report(load_runs([tmp_path]), "corrrise")


def test_paired_against_must_be_an_evaluated_method(tmp_path, capsys):
    code = main(["evaluate", "--dataset", "csv:nowhere.csv", "--methods", "lime,xface", "--paired-against",
                 "corrrise", "--out", str(tmp_path / "o"), "--engine", "local"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--paired-against needs one of --methods (lime, xface)" in err[0] and "'corrrise'" in err[0]
