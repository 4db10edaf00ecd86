"""Submission writers against the real server files, and the evaluate command's checks."""
import json

import numpy as np
import pytest

from mvft_helpers import data, evaluate as E
from conftest import FIXTURES


def oracle(split, depth=60, seed=0):
    """Rankings that put every ground truth first, the rest in a random order."""
    rng = np.random.default_rng(seed)
    idx = E.gallery_index(split)
    rows = []
    for q in split.queries:
        first = [idx[t] for t in q.targets]
        rest = [i for i in rng.permutation(len(split.gallery)) if i not in first]
        rows.append((first + rest)[:depth])
    return np.array(rows)


def random_ranking(split, depth=60, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(len(split.gallery))[:depth] for _ in split.queries])


def test_oracle_scores_100_on_every_toy_benchmark(tiny_world):
    for bench in ("toy-cirr", "toy-circo", "toy-fashioniq"):
        splits = data.load_benchmark(bench, tiny_world.root, "val")
        subsets = [E.subset_indices(s)[:, :3] if s.remove_reference else None for s in splits]
        if splits[0].remove_reference:
            idx = E.gallery_index(splits[0])
            subsets = [np.array([[idx[q.targets[0]]] + [idx[m] for m in q.subset if m != q.targets[0]][:2]
                                 for q in splits[0].queries])]
        out = E.benchmark_metrics(splits, [oracle(s) for s in splits], subsets)
        assert all(v == 100.0 for m in out.values() for v in m.values()), out


def test_cirr_writer_matches_the_server_example_and_round_trips(tiny_world, tmp_path):
    val = data.load_benchmark("toy-cirr", tiny_world.root, "val")[0]
    ranked = random_ranking(val)
    sub = E.subset_indices(val)[:, [2, 0, 4]]
    a, b = E.write_cirr_submission(val, ranked, sub, tmp_path)
    example = json.loads((FIXTURES / "cirr/submission_examples/test1_pred_ranks_recall.json").read_text())
    example_sub = json.loads((FIXTURES / "cirr/submission_examples/test1_pred_ranks_recall_subset.json").read_text())
    mine, mine_sub = json.loads(a.read_text()), json.loads(b.read_text())
    for ours, theirs, n in ((mine, example, 50), (mine_sub, example_sub, 3)):
        assert ours["version"] == theirs["version"] == "rc2" and ours["metric"] == theirs["metric"]
        lists = [v for k, v in ours.items() if k not in ("version", "metric")]
        assert all(len(v) == n and all(isinstance(x, str) for x in v) for v in lists)
        assert len(next(v for k, v in theirs.items() if k not in ("version", "metric"))) == n
    assert all(q.reference not in mine[q.qid] for q in val.queries)
    scored = E.evaluate_files("toy-cirr", "val", tiny_world.root, [a, b])["toy-cirr"]
    assert scored == pytest.approx(E.split_metrics(val, ranked, sub))


def test_circo_writer_matches_the_server_example_and_round_trips(tiny_world, tmp_path):
    test = data.load_benchmark("toy-circo", tiny_world.root, "test")[0]
    path = E.write_circo_submission(test, random_ranking(test), tmp_path / "circo_test.json")
    mine = json.loads(path.read_text())
    example = json.loads((FIXTURES / "circo/submission_examples/submission_test.json").read_text())
    assert set(mine) == {q.qid for q in test.queries}
    for ours, theirs in ((mine, example),):
        assert all(len(v) == 50 and all(isinstance(x, int) for x in v) for v in ours.values())
        assert all(len(v) == 50 and all(isinstance(x, int) for x in v) for v in theirs.values())
    val = data.load_benchmark("toy-circo", tiny_world.root, "val")[0]
    ranked = random_ranking(val)
    p = E.write_circo_submission(val, ranked, tmp_path / "circo_val.json")
    assert E.evaluate_files("toy-circo", "val", tiny_world.root, [p])["toy-circo"] == \
        pytest.approx(E.split_metrics(val, ranked))


def test_fashioniq_predictions_round_trip(tiny_world, tmp_path):
    splits = data.load_benchmark("toy-fashioniq", tiny_world.root, "val")
    ranked = [random_ranking(s, seed=i) for i, s in enumerate(splits)]
    p = E.write_fashioniq_predictions(splits, ranked, tmp_path / "fiq.json")
    out = E.evaluate_files("toy-fashioniq", "val", tiny_world.root, [p])
    assert set(out) == {"toy-fashioniq/dress", "toy-fashioniq/shirt", "toy-fashioniq/toptee", "toy-fashioniq"}
    assert out["toy-fashioniq"]["R@10"] == pytest.approx(np.mean([out[f"toy-fashioniq/{c}"]["R@10"]
                                                                 for c in ("dress", "shirt", "toptee")]))


@pytest.mark.parametrize("fault,message", [
    ("duplicate", "more than once"), ("missing", "have no prediction"), ("unknown", "unknown image ids"),
    ("unknown_query", "unknown query ids")])
def test_bad_prediction_files_exit_nonzero_with_a_clear_error(tiny_world, tmp_path, capsys, fault, message):
    val = data.load_benchmark("toy-circo", tiny_world.root, "val")[0]
    path = E.write_circo_submission(val, random_ranking(val), tmp_path / "p.json")
    sub = json.loads(path.read_text())
    first = val.queries[0].qid
    if fault == "duplicate":
        sub[first][1] = sub[first][0]
    elif fault == "missing":
        del sub[first]
    elif fault == "unknown":
        sub[first][3] = 123456789
    else:
        sub["99999"] = sub[first]
    path.write_text(json.dumps(sub))
    rc = E.main(["--benchmark", "toy-circo", "--split", "val", "--root", str(tiny_world.root),
                 "--predictions", str(path)])
    assert rc == 1 and message in capsys.readouterr().err


def test_evaluate_cli_prints_metrics_json(tiny_world, tmp_path, capsys):
    val = data.load_benchmark("toy-circo", tiny_world.root, "val")[0]
    path = E.write_circo_submission(val, oracle(val), tmp_path / "p.json")
    assert E.main(["--benchmark", "toy-circo", "--root", str(tiny_world.root), "--predictions", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["toy-circo"]["mAP@5"] == 100.0
