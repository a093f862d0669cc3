"""bench/bench_verification.py is the notebooks' verification path: same settings, same number."""
from __future__ import annotations

import importlib.util
import json

import pytest

from nnprak import config, embed, evaluate, faces, results


def _bench():
    spec = importlib.util.spec_from_file_location("bench_verification", config.ROOT / "bench" / "bench_verification.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_bench_and_notebook_path_give_the_same_numbers(tmp_path, lfw_dir):
    bench = _bench()
    out = tmp_path / "bench_verification.json"
    assert bench.main(["--profile", "smoke", "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    by_norm = {r["settings"]["norm"]: r for r in records.values()}
    assert set(by_norm) == {"none", "cohort"}

    # notebook 02 then notebook 05, as the notebooks call them (embeddings computed afresh, not the bench's cache)
    cfg = config.load("smoke")
    evaluate.verification_crops(cfg, progress=False)
    table = faces.load_crops(cfg.paths.processed / evaluate.VERIFICATION_CROPS)
    embedder = embed.get_embedder("dlib", dlib_align=cfg.embed["dlib_align"])
    for norm in ("none", cfg.verification_norm):
        res = evaluate.profile_verification(cfg, embedder, table, norm=norm, embeddings_dir=tmp_path / "emb",
                                            progress=False)
        rec = by_norm[norm]
        assert res.n_pairs == rec["n_pairs"] == len(evaluate.profile_pairs(cfg))
        assert len(res.fold_accuracies) == cfg.verification_folds >= 3
        assert res.fold_accuracies == pytest.approx(rec["fold_accuracies"], abs=1e-12)
        assert res.thresholds == pytest.approx(rec["thresholds"], abs=1e-5)
        assert int((res.predicted != res.same).sum()) == rec["n_errors"]
        assert res.norm == rec["norm"] == norm

    numbers = results.bench_verification_numbers(tmp_path)
    assert numbers["LfwFullPairs"] == by_norm["none"]["n_pairs"]
    assert numbers["LfwFullNormErrors"] == by_norm["cohort"]["n_errors"]
    assert results.bench_verification_numbers(tmp_path / "nothing")["LfwFullAcc"] == "--"


def test_bench_settings_other_than_the_profile_get_their_own_caches():
    bench = _bench()
    cfg = bench.bench_config("smoke", folds=3, pairs_per_fold=20)
    assert bench.cache_dirs(cfg) == dict(faces_dir=None, out=None, embeddings_dir=None)    # the notebooks' caches
    other = bench.bench_config("smoke", min_face_size=20)
    dirs = bench.cache_dirs(other)
    assert dirs["faces_dir"] == other.paths.interim / "bench" / "min_face_size20" / "faces"
    assert other.min_face_size == 20 and other.face_select == cfg.face_select
    assert bench.bench_config("full", pairs_per_fold=0).verification_pairs_per_fold is None
