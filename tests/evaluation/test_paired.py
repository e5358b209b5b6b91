"""Paired comparisons of test NLLs (issue 13): ``paired_difference``, the per-image NLLs of
``test_log_likelihood`` / ``energyvae evaluate`` and the "Paired NLL differences" section of
``energyvae report``."""
import html
import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
import yaml

from energyvae.cli import main as cli_main
from energyvae.config import build_config
from energyvae.commands.evaluate import evaluate_run
from energyvae.evaluation.paired import nats_to_bits_per_dim, paired_difference
from energyvae.evaluation.report import build_report, load_run, paired_nll_comparisons
from energyvae.runs import prepare
from energyvae.train import Trainer

from helpers import tiny_vae_cfg

K, EXAMPLES = 4, 40


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------- paired_difference
def test_paired_difference_matches_numpy_exactly():
    a = [1.5, 2.25, 3.0, 4.75, 0.5, 7.125]
    b = [1.0, 2.0, 2.5, 4.0, 1.0, 6.0]
    d = np.array(a) - np.array(b)
    mean, stderr = d.mean(), d.std(ddof=1) / np.sqrt(len(d))
    for x, y in ((a, b), (np.array(a), np.array(b)), (torch.tensor(a), torch.tensor(b)),
                 (torch.tensor(a, dtype=torch.float64), b)):
        res = paired_difference(x, y)
        assert res == {"mean": mean, "stderr": stderr, "n": 6, "z": mean / stderr}
    # by hand: d = [.5, .25, .5, .75, -.5, 1.125], mean 2.625 / 6, sum of squares about it
    m = 2.625 / 6
    ss = sum((v - m) ** 2 for v in (0.5, 0.25, 0.5, 0.75, -0.5, 1.125))
    assert res["mean"] == pytest.approx(m, rel=1e-15)
    assert res["stderr"] == pytest.approx(math.sqrt(ss / 5 / 6), rel=1e-14)


def test_paired_difference_edge_cases():
    assert paired_difference([1.0, 2.0], [1.0, 2.0]) == {"mean": 0.0, "stderr": 0.0, "n": 2, "z": 0.0}
    assert paired_difference([2.0, 3.0], [1.0, 2.0])["z"] == math.inf
    assert paired_difference([1.0, 2.0], [2.0, 3.0])["z"] == -math.inf
    res = paired_difference([math.inf, 1.0, 2.0], [0.0, 0.0, 0.0])
    assert res["mean"] == math.inf and math.isnan(res["z"])
    assert math.isnan(paired_difference([math.nan, 1.0], [0.0, 0.0])["z"])
    with pytest.raises(ValueError, match="same length"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        paired_difference([1.0], [2.0])
    with pytest.raises(ValueError, match="1-D"):
        paired_difference(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="numbers"):
        paired_difference(["a", "b"], [1.0, 2.0])
    assert nats_to_bits_per_dim(64 * math.log(2), 64) == pytest.approx(1.0, rel=1e-15)
    assert nats_to_bits_per_dim(-3.0, 10) == -3.0 / (10 * math.log(2))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError):
            nats_to_bits_per_dim(1.0, bad)


def test_exact_likelihood_returns_per_image_values():
    """The exact-density path returns the per-example log-likelihoods and the dims of bits/dim."""
    from energyvae.evaluation.likelihood import test_log_likelihood

    class Density(torch.nn.Module):
        exact_likelihood = True

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def log_prob(self, x):
            return -x.flatten(1).pow(2).sum(1) + self.w

    data, _ = prepare(build_config({"data": {"name": "digits", "dequantize": "uniform"},
                                    "model": {"latent_dim": 2, "encoder": {"hidden": [8]},
                                              "decoder": {"hidden": [8]}}}))
    out = test_log_likelihood(Density(), data, max_examples=7, seed=1)
    ll = np.array(out["per_image_ll"])
    assert len(ll) == 7 and out["dims"] == 64 and all(isinstance(v, float) for v in out["per_image_ll"])
    assert -ll.mean() == pytest.approx(out["nll"], rel=1e-12)
    assert ll.std(ddof=1) / np.sqrt(7) == pytest.approx(out["nll_stderr"], rel=1e-9)


# ------------------------------------------------------------------------- two tiny runs
def _train(run_dir, prior):
    cfg = tiny_vae_cfg(run_dir, [], prior=prior, steps=2, eval_every=2, checkpoint_every=2)
    data, model = prepare(cfg)
    Trainer(cfg, model, data).fit()
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two 2-step runs of one config that differ only in ``model.prior``, both evaluated
    (nll only) on the same 40 test images; a third copy evaluated on 30 images; a fourth
    without per-image NLLs."""
    root = tmp_path_factory.mktemp("paired")
    torch.manual_seed(0)
    normal = _train(root / "normal", {"name": "normal"})
    torch.manual_seed(0)
    vamp = _train(root / "vamp", {"name": "vamp", "components": 4})
    for run in (normal, vamp):
        evaluate_run(run, metrics=("nll",), iw_samples=K, nll_examples=EXAMPLES, seed=0, progress=False)
    fewer = root / "fewer"
    shutil.copytree(vamp, fewer)
    evaluate_run(fewer, metrics=("nll",), iw_samples=K, nll_examples=30, seed=0, progress=False)
    bare = root / "bare"
    shutil.copytree(normal, bare)
    (bare / "evaluation" / "per_image_nll.json").unlink()
    return {"normal": normal, "vamp": vamp, "fewer": fewer, "bare": bare, "root": root}


def _per_image(run):
    return json.loads((run / "evaluation" / "per_image_nll.json").read_text())


def _paired_row(page, label):
    """(full-precision values by column) of the paired row ``label`` of the report page."""
    m = re.search(r'<tr class="paired"><th class="row">' + re.escape(html.escape(label)) + r"</th>(.*?)</tr>",
                  page)
    assert m, label
    cells = re.findall(r'<td class="num" title="([^"]*)">|<td class="missing">', m.group(1))
    cols = ["mean", "stderr", "z", "n", "bpd", "bpd_stderr", "unpaired_stderr", "k"]
    return {c: (float(html.unescape(v)) if v else None) for c, v in zip(cols, cells)}


def test_evaluate_writes_per_image_nll(runs):
    for name in ("normal", "vamp"):
        ev = runs[name] / "evaluation"
        f = _per_image(runs[name])
        assert set(f) == {"split", "examples", "k", "seed", "per_image_nll", "dims"}
        assert (f["split"], f["examples"], f["k"], f["seed"], f["dims"]) == ("test", EXAMPLES, K, 0, 64)
        assert len(f["per_image_nll"]) == EXAMPLES
        metrics = json.loads((ev / "metrics.json").read_text())
        assert "per_image" not in (ev / "metrics.json").read_text()        # kept out of metrics.json
        assert metrics["likelihood"]["dims"] == 64
        assert np.mean(f["per_image_nll"]) == pytest.approx(metrics["metrics"]["nll"], rel=1e-12)
        assert not list(ev.glob("*.tmp"))
    # a re-evaluation of another metric keeps the NLL and its per-image file (merged); one of
    # another seed starts afresh and drops the now stale per-image file with the NLL
    tmp = runs["root"] / "stale"
    shutil.copytree(runs["normal"], tmp)
    evaluate_run(tmp, metrics=("mse",), n=10, seed=0, progress=False)
    kept = json.loads((tmp / "evaluation" / "metrics.json").read_text())["metrics"]
    assert "nll" in kept and "mse" in kept and (tmp / "evaluation" / "per_image_nll.json").exists()
    evaluate_run(tmp, metrics=("mse",), n=10, seed=1, progress=False)
    assert not (tmp / "evaluation" / "per_image_nll.json").exists()


def test_report_pairs_two_priors(runs, tmp_path):
    """The issue's test: the reported stderr is the sample std of the per-image differences /
    sqrt(n), computed here from the two per_image_nll.json files, and the mean is the
    difference of the two runs' NLLs."""
    a, b = runs["vamp"], runs["normal"]
    page = build_report([b, a], tmp_path / "r").read_text(encoding="utf-8")
    assert "<h2>Paired NLL differences</h2>" in page
    assert "Baseline: <b>normal</b>" in page
    row = _paired_row(page, "vamp − normal")
    d = np.array(_per_image(a)["per_image_nll"]) - np.array(_per_image(b)["per_image_nll"])
    stderr = d.std(ddof=1) / np.sqrt(len(d))
    nll = lambda run: json.loads((run / "evaluation" / "metrics.json").read_text())["metrics"]["nll"]  # noqa: E731
    assert row["stderr"] == pytest.approx(stderr, rel=1e-9)
    assert row["mean"] == pytest.approx(nll(a) - nll(b), rel=1e-9, abs=1e-12)
    assert row["n"] == EXAMPLES and row["k"] == K
    assert row["bpd"] == pytest.approx(row["mean"] / (64 * math.log(2)), rel=1e-12)
    assert row["bpd_stderr"] == pytest.approx(stderr / (64 * math.log(2)), rel=1e-9)
    assert row["z"] == pytest.approx(row["mean"] / row["stderr"], rel=1e-12)
    # the shared per-image difficulty cancels: far below the two NLLs' own error bars
    assert 0 < row["stderr"] < row["unpaired_stderr"] / 3
    # the structured result agrees; --baseline picks the other run (the sign flips)
    res = paired_nll_comparisons([load_run(b), load_run(a)])
    assert res["pairs"][0]["stderr"] == row["stderr"] and res["unpaired"] == []
    out = tmp_path / "cli"
    assert cli_main(["report", str(b), str(a), "--out", str(out), "--baseline", "vamp"]) == 0
    flipped = _paired_row((out / "index.html").read_text(encoding="utf-8"), "normal − vamp")
    assert flipped["mean"] == pytest.approx(-row["mean"], rel=1e-12)
    assert flipped["stderr"] == pytest.approx(row["stderr"], rel=1e-12)
    assert cli_main(["report", str(b), str(a), "--out", str(out), "--baseline", "nope"]) == 2
    # without per-image files anywhere, the report has no such section
    page = build_report([runs["bare"], runs["bare"]], tmp_path / "none").read_text(encoding="utf-8")
    assert "Paired NLL differences" not in page


def test_report_does_not_pair_different_examples(runs, tmp_path):
    page = build_report([runs["normal"], runs["fewer"], runs["bare"], runs["vamp"]],
                        tmp_path / "r").read_text(encoding="utf-8")
    assert "<li>fewer: not paired: 30 examples, the baseline has 40</li>" in page
    assert ("<li>bare: not paired: no evaluation/per_image_nll.json (evaluate the run with the "
            "nll metric)</li>") in page
    assert "fewer −" not in page and "bare −" not in page
    _paired_row(page, "vamp − normal")                   # the matching run is still paired
    # a different seed, and a baseline without per-image NLLs
    other = tmp_path / "seed1"
    shutil.copytree(runs["vamp"], other)
    f = _per_image(other)
    f["seed"] = 1
    (other / "evaluation" / "per_image_nll.json").write_text(json.dumps(f))
    page = build_report([runs["normal"], other], tmp_path / "s").read_text(encoding="utf-8")
    assert "<li>seed1: not paired: seed 1, the baseline&#x27;s 0</li>" in page
    # the same examples of different data (binarized vs dequantized): not paired either
    dequant = tmp_path / "dequant"
    shutil.copytree(runs["vamp"], dequant)
    cfg = yaml.safe_load((dequant / "config.yaml").read_text())
    cfg["data"].update(binarize=False, dequantize="uniform")
    (dequant / "config.yaml").write_text(yaml.safe_dump(cfg))
    page = build_report([runs["normal"], dequant], tmp_path / "d").read_text(encoding="utf-8")
    assert "<li>dequant: not paired: data.binarize false, the baseline&#x27;s true</li>" in page
    page = build_report([runs["bare"], runs["normal"]], tmp_path / "b",
                        baseline="bare").read_text(encoding="utf-8")
    assert "baseline bare: no evaluation/per_image_nll.json" in page and "nothing paired" in page


def test_report_notes_a_corrupt_per_image_file(runs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(runs["vamp"], broken)
    path = broken / "evaluation" / "per_image_nll.json"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])      # truncated mid-write
    short = tmp_path / "short"
    shutil.copytree(runs["vamp"], short)
    f = _per_image(short)
    f["per_image_nll"] = f["per_image_nll"][:10]
    (short / "evaluation" / "per_image_nll.json").write_text(json.dumps(f))
    page = build_report([runs["normal"], broken, short], tmp_path / "r").read_text(encoding="utf-8")
    assert "<li>broken: not paired: unreadable evaluation/per_image_nll.json (JSONDecodeError)</li>" in page
    assert "<li>short: not paired: evaluation/per_image_nll.json: 10 values for 40 examples</li>" in page
    files_row = re.search(r'<th class="row">files</th>.*?</tr>', page).group(0)
    assert "unreadable evaluation/per_image_nll.json" in files_row
    # the rest of the report is still there
    assert "<h2>Metrics</h2>" in page and "nll" in page
