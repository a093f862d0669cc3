"""LFW verification protocol: pairs.txt parsing, hand-checked 10-fold logic, and a real run on a few pairs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from nnprak import evaluate as E


def test_read_lfw_pairs_official_file(lfw_dir):
    df = E.read_lfw_pairs(lfw_dir / "pairs.txt")
    assert len(df) == 6000
    assert df["same"].sum() == 3000
    assert list(df.columns[:4]) == ["fold", "path1", "path2", "same"]
    assert (df.groupby("fold").size() == 600).all() and df["fold"].nunique() == 10
    assert (df.groupby("fold")["same"].sum() == 300).all()
    assert (df.loc[df["same"], "name1"] == df.loc[df["same"], "name2"]).all()
    assert (df.loc[~df["same"], "name1"] != df.loc[~df["same"], "name2"]).all()
    # the first line after the header: Abel_Pacheco 1 4
    first = df.iloc[0]
    assert Path(first["path1"]).name == "Abel_Pacheco_0001.jpg"
    assert Path(first["path2"]).name == "Abel_Pacheco_0004.jpg"
    assert all(Path(p).is_file() for p in df[["path1", "path2"]].to_numpy()[::500].ravel())


def test_read_lfw_pairs_rejects_malformed(tmp_path):
    bad = tmp_path / "pairs.txt"
    bad.write_text("2\t1\nA\t1\t2\nB\t1\tC\t2\nD\t1\t2\n")
    with pytest.raises(ValueError, match="header says"):
        E.read_lfw_pairs(bad)
    bad.write_text("1\t1\nA\t1\t2\nB\t1\t2\n")
    with pytest.raises(ValueError, match=r"pairs.txt:3: expected a mismatched"):
        E.read_lfw_pairs(bad)


def test_best_threshold():
    thr, acc = E.best_threshold([0.1, 0.2, 0.5, 0.9], [True, True, False, False])
    assert thr == pytest.approx(0.35) and acc == 1.0
    thr, acc = E.best_threshold([0.1, 0.2, 0.5, 0.9], [False, False, True, True])
    assert acc == 0.5


# Three folds of 2 matched + 2 mismatched pairs; a pair (a_i, b_i) has 1-D embeddings 0 and d_i, so its
# Euclidean distance is d_i.
SYNTH = {  # fold: (matched distances, mismatched distances)
    0: ([0.1, 0.2], [0.9, 1.0]),
    1: ([0.3, 1.1], [0.52, 1.2]),
    2: ([0.2, 0.4], [0.6, 0.8]),
}
# By hand (threshold = midpoint with the best training accuracy; "same" iff distance < threshold):
#   test fold 0, train 1+2: sorted 0.2s 0.3s 0.4s | 0.52d 0.6d 0.8d 1.1s 1.2d -> 7/8 at 0.46; fold 0: 4/4
#   test fold 1, train 0+2: 0.1s 0.2s 0.2s 0.4s | 0.6d 0.8d 0.9d 1.0d -> 8/8 at 0.50; fold 1: 0.3 ok,
#       1.1 wrong, 0.52 ok, 1.2 ok = 3/4
#   test fold 2, train 0+1: 0.1s 0.2s 0.3s | 0.52d 0.9d 1.0d 1.1s 1.2d -> 7/8 at 0.41; fold 2: 4/4
EXPECTED_ACCS = [1.0, 0.75, 1.0]
EXPECTED_THRS = [0.46, 0.50, 0.41]


def _synthetic(nan_paths=()):
    rows, vectors = [], {}
    for fold, (same_d, diff_d) in SYNTH.items():
        for same, ds in ((True, same_d), (False, diff_d)):
            for d in ds:
                a, b = f"img/{len(rows)}_a.jpg", f"img/{len(rows)}_b.jpg"
                vectors[a] = [0.0]
                vectors[b] = [np.nan] if b in nan_paths else [d]
                rows.append((fold, a, b, same))
    df = pd.DataFrame(rows, columns=["fold", "path1", "path2", "same"])
    calls = []

    def embed(paths):
        calls.append(list(paths))
        return np.array([vectors[p] for p in paths])

    return df, embed, calls


def test_verification_protocol_synthetic_by_hand():
    df, embed, calls = _synthetic()
    res = E.lfw_verification(embed, pairs=df, folds=3)
    assert len(calls) == 1 and len(calls[0]) == len(set(calls[0])) == 24
    assert res.fold_accuracies == pytest.approx(EXPECTED_ACCS)
    assert res.thresholds == pytest.approx(EXPECTED_THRS)
    assert res.accuracy == pytest.approx(11 / 12)
    assert res.std == pytest.approx(np.sqrt(1 / 72))           # population std of (1, 0.75, 1)
    assert res.n_pairs == 12 and res.n_failed == 0
    dist = np.array([d for same_d, diff_d in SYNTH.values() for d in same_d + diff_d])
    same = np.array([s for same_d, diff_d in SYNTH.values() for s in [True] * 2 + [False] * 2])
    assert res.auc == pytest.approx(roc_auc_score(same, -dist))
    assert res.fpr[0] == 0 and res.tpr[-1] == 1
    # only the first two folds: thresholds from the other one
    res2 = E.lfw_verification(embed, pairs=df, folds=2)
    assert res2.n_pairs == 8 and len(res2.fold_accuracies) == 2


def test_verification_counts_pairs_without_face():
    # the mismatched pair at distance 0.9 in fold 0 (row 2) loses its second embedding
    df, embed, _ = _synthetic(nan_paths={"img/2_b.jpg"})
    res = E.lfw_verification(embed, pairs=df, folds=3)
    assert res.n_failed == 1 and res.n_failed_images == 1
    assert res.fold_accuracies == pytest.approx([0.75, 0.75, 1.0])     # counted as wrong
    assert res.thresholds == pytest.approx(EXPECTED_THRS)               # training ignores it
    res = E.lfw_verification(embed, pairs=df, folds=3, failed="different")
    assert res.fold_accuracies == pytest.approx(EXPECTED_ACCS)          # "different" happens to be right
    assert np.isfinite(res.auc)


@pytest.mark.slow
def test_lfw_verification_with_dlib_port_on_a_few_pairs(lfw_dir):
    from nnprak.models.dlib_resnet import DlibEmbedder

    df = E.read_lfw_pairs(lfw_dir / "pairs.txt")
    small = df[df["fold"] < 2].groupby(["fold", "same"]).head(10)     # 2 folds × (10 + 10) pairs
    res = E.lfw_verification(DlibEmbedder(upsample=0), pairs=small, folds=2)
    assert res.n_pairs == 40
    assert res.accuracy >= 0.9
    assert res.auc >= 0.95
    assert all(0.3 < t < 0.9 for t in res.thresholds)                  # near dlib's 0.6


def test_errors_lists_the_misclassified_pairs_most_confident_first():
    df, embed, _ = _synthetic()
    err = E.lfw_verification(embed, pairs=df, folds=3).errors()
    # by hand (above): the only error is fold 1's matched pair at distance 1.1 (threshold 0.50)
    assert len(err) == 1
    row = err.iloc[0]
    assert (row["fold"], bool(row["same"])) == (1, True)
    assert row["distance"] == pytest.approx(1.1) and row["threshold"] == pytest.approx(0.50)
    assert row["margin"] == pytest.approx(0.6)
    assert "mislabelled" not in err                       # only with errata

    df, embed, _ = _synthetic(nan_paths={"img/2_b.jpg"})
    err = E.lfw_verification(embed, pairs=df, folds=3).errors()
    assert list(err["path2"]) == ["img/2_b.jpg", "img/5_b.jpg"]   # the failed pair first (margin inf)
    assert np.isinf(err["margin"].iloc[0]) and np.isnan(err["distance"].iloc[0])
    # predicted "different" for a failed pair: that mismatched pair is right, so no longer an error
    err = E.lfw_verification(embed, pairs=df, folds=3, failed="different").errors()
    assert list(err["path2"]) == ["img/5_b.jpg"]


def test_read_lfw_errata_official_file(lfw_dir):
    errata = E.read_lfw_errata(lfw_dir / E.LFW_ERRATA_FILE)
    # the errata page lists seven wrongly matched pairs in View 2 (folds 1, 5 and 7 of the page: 0, 4, 6 here)
    assert len(errata) == 7
    assert sorted(errata["fold"].unique()) == [0, 4, 6]
    assert {"Janica_Kostelic", "Jim_OBrien", "Debra_Messing"} <= set(errata["name"])
    assert ((errata["name"] == "Jim_OBrien") & (errata["number2"] == 3)).sum() == 1
    # each one is a matched pair of that fold in pairs.txt
    pairs = E.read_lfw_pairs(lfw_dir / "pairs.txt")
    matched = {(f, n, Path(a).name, Path(b).name) for f, n, a, b, s in
               pairs[["fold", "name1", "path1", "path2", "same"]].itertuples(index=False) if s}
    for r in errata.itertuples():
        assert (r.fold, r.name, f"{r.name}_{r.number1:04d}.jpg", f"{r.name}_{r.number2:04d}.jpg") in matched


def test_read_lfw_errata_bad_or_missing_file(tmp_path):
    bad = tmp_path / "errata.txt"
    bad.write_text("Errata:\nnothing listed here\n")
    with pytest.raises(ValueError, match="errata.txt"):
        E.read_lfw_errata(bad)
    assert E.read_lfw_errata(tmp_path / "absent.txt", missing_ok=True) is None
    with pytest.raises(FileNotFoundError):
        E.read_lfw_errata(tmp_path / "absent.txt")


def test_errors_mark_the_errata_pairs(lfw_dir):
    pairs = E.read_lfw_pairs(lfw_dir / "pairs.txt")
    pairs = pairs[pairs["fold"] < 2].reset_index(drop=True)
    errata = E.read_lfw_errata(lfw_dir / E.LFW_ERRATA_FILE)
    # embeddings made here: one point per person, so every pair is right, except that Janica_Kostelic_0001
    # (an image of Anja Paerson, says the errata) and Don_Carcieri_0001 share a point of their own: the matched
    # pair Janica 1-2 (in the errata) and the mismatched pair Don_Carcieri 1 - Janica 1 (not) become errors
    rng = np.random.default_rng(0)
    people = sorted(set(pairs["name1"]) | set(pairs["name2"]))
    point = dict(zip(people, rng.normal(size=(len(people), 16))))
    anja = rng.normal(size=16)

    def embed(paths):
        return np.array([anja if Path(p).stem in ("Janica_Kostelic_0001", "Don_Carcieri_0001")
                         else point[Path(p).parent.name] for p in paths])

    res = E.lfw_verification(embed, pairs=pairs, folds=2)
    err = res.errors(errata)
    by_pair = {(r.name1, Path(r.path1).stem, r.name2, Path(r.path2).stem): r.mislabelled for r in err.itertuples()}
    assert by_pair[("Janica_Kostelic", "Janica_Kostelic_0001", "Janica_Kostelic", "Janica_Kostelic_0002")] is True
    assert by_pair[("Don_Carcieri", "Don_Carcieri_0001", "Janica_Kostelic", "Janica_Kostelic_0001")] is False
    assert err["mislabelled"].sum() == 1
    assert ((err["distance"] < err["threshold"]) != err["same"]).all()
    assert len(err) == round((1 - np.mean(res.fold_accuracies)) * res.n_pairs)
    # pairs without name columns: the names come from the image folders, the errata still match
    bare = E.lfw_verification(embed, pairs=pairs.drop(columns=["name1", "name2"]), folds=2).errors(errata)
    pd.testing.assert_frame_equal(bare, err)


def test_read_lfw_people_official_files(lfw_dir):
    people = E.read_lfw_people(lfw_dir / "people.txt")
    assert len(people) == people["name"].nunique() == 5749 and people["images"].sum() == 13233
    assert sorted(people["fold"].unique()) == list(range(10))
    # the people of pairs.txt's fold k are those of people.txt's set k
    pairs = E.read_lfw_pairs(lfw_dir / "pairs.txt")
    fold_of = dict(zip(people["name"], people["fold"]))
    assert (pairs["name1"].map(fold_of) == pairs["fold"]).all() and (pairs["name2"].map(fold_of) == pairs["fold"]).all()
    dev = E.read_lfw_people(lfw_dir / "peopleDevTrain.txt")
    assert len(dev) == 4038 and set(dev["fold"]) == {0}


def test_read_lfw_people_rejects_malformed(tmp_path):
    bad = tmp_path / "people.txt"
    bad.write_text("2\n1\nAnna_A\t3\n2\nBob_B\t1\n")           # fold 2 announces 2 people, lists 1
    with pytest.raises(ValueError, match=r"people.txt:6: expected a line 'name images'"):
        E.read_lfw_people(bad)
    bad.write_text("2\n1\nAnna_A\t3\n1\nBob_B\tmany\n")
    with pytest.raises(ValueError, match=r"people.txt:5"):
        E.read_lfw_people(bad)
    bad.write_text("1\n1\nAnna_A\t3\n")
    assert E.read_lfw_people(bad).to_dict("records") == [{"fold": 0, "name": "Anna_A", "images": 3}]
    bad.write_text("1\n\n2\nAnna_A\t3\n\nBob_B\n")                      # blank lines do not shift the line number
    with pytest.raises(ValueError, match=r"people.txt:6: expected a line 'name images', got 'Bob_B'"):
        E.read_lfw_people(bad)


def test_without_people_drops_every_pair_showing_them(lfw_dir):
    pairs = E.read_lfw_pairs(lfw_dir / "pairs.txt")
    kept = E.without_people(pairs, ["George_W_Bush", "Colin_Powell"])
    shown = pairs["name1"].isin(["George_W_Bush", "Colin_Powell"]) | pairs["name2"].isin(["George_W_Bush", "Colin_Powell"])
    assert shown.sum() == 10 and len(kept) == len(pairs) - shown.sum()
    assert not kept[["name1", "name2"]].isin(["George_W_Bush", "Colin_Powell"]).any().any()
    assert sorted(kept["fold"].unique()) == list(range(10))
    assert len(E.without_people(pairs, [])) == len(pairs)
