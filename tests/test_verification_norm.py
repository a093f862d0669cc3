"""Cohort score normalisation of LFW verification: by hand, never using the test fold, deterministic."""
from __future__ import annotations

import numpy as np
import pytest

from nnprak import evaluate as E

from test_verification import EXPECTED_ACCS, _synthetic


def test_cohort_closeness_by_hand():
    emb = np.array([[0.0], [1.0], [3.0], [4.0], [10.0], [12.0]])
    groups = np.array([0, 0, 1, 1, 2, 2])
    close = E.cohort_closeness(emb, groups, k=2)
    # image 0 (group 0): others 3, 4, 10, 12 -> nearest 3, 4; image 2 (value 3): 0, 1, 10, 12 -> 2, 3
    assert close[0] == pytest.approx(3.5) and close[2] == pytest.approx(2.5)
    assert close[4] == pytest.approx((6 + 7) / 2)
    # leaving out group 2 (a test fold): image 0 keeps 3, 4; image 4 of group 2 still has groups 0 and 1
    left_out = E.cohort_closeness(emb, groups, k=2, exclude=[2])
    assert left_out[0] == pytest.approx(3.5) and left_out[2] == pytest.approx((3 + 2) / 2)
    assert left_out[1] == pytest.approx((2 + 3) / 2)
    # fewer cohort images than k: all of them; no embedding: NaN and never in a cohort
    assert E.cohort_closeness(emb, groups, k=50, exclude=[2])[0] == pytest.approx(3.5)
    emb[2] = np.nan
    close = E.cohort_closeness(emb, groups, k=2)
    assert np.isnan(close[2]) and close[0] == pytest.approx((4 + 10) / 2)


def _random_folds(seed=0, folds=4, per_fold=12, dim=8):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(folds * per_fold, dim))
    groups = np.repeat(np.arange(folds), per_fold)
    i1 = np.arange(0, len(emb), 2)
    i2 = i1 + 1                                          # pairs within a fold
    return emb, groups, i1, i2


def test_normalisation_never_uses_the_test_fold():
    emb, groups, i1, i2 = _random_folds()
    test = 2
    before = E.normalised_distances(emb, i1, i2, groups, test, k=5)
    changed = emb.copy()
    changed[groups == test] = np.random.default_rng(1).normal(size=((groups == test).sum(), emb.shape[1]))
    after = E.normalised_distances(changed, i1, i2, groups, test, k=5)
    other = groups[i1] != test
    np.testing.assert_array_equal(before[other], after[other])        # the threshold's pairs: untouched
    # a test pair depends on its own two faces and the other folds only, not on the test fold's other images
    pair = np.flatnonzero(groups[i1] == test)[0]
    keep = emb.copy()
    rest = (groups == test) & ~np.isin(np.arange(len(emb)), [i1[pair], i2[pair]])
    keep[rest] += 5.0
    np.testing.assert_array_equal(E.normalised_distances(keep, i1, i2, groups, test, k=5)[pair], before[pair])


def test_normalisation_is_deterministic_and_changes_the_scores():
    emb, groups, i1, i2 = _random_folds()
    a = E.normalised_distances(emb, i1, i2, groups, 0, k=5)
    b = E.normalised_distances(emb.copy(), i1, i2, groups, 0, k=5)
    np.testing.assert_array_equal(a, b)
    plain = E.pair_distances(emb[i1], emb[i2])
    assert not np.allclose(a, plain)
    close = E.cohort_closeness(emb, groups, 5, exclude=[0])
    np.testing.assert_allclose(a, plain - (close[i1] + close[i2]) / 2)


def test_lfw_verification_with_cohort_normalisation():
    df, embed, _ = _synthetic()
    plain = E.lfw_verification(embed, pairs=df, folds=3)
    normed = E.lfw_verification(embed, pairs=df, folds=3, norm="cohort", cohort_k=2)
    again = E.lfw_verification(embed, pairs=df, folds=3, norm="cohort", cohort_k=2)
    assert plain.fold_accuracies == pytest.approx(EXPECTED_ACCS) and plain.norm == "none"
    assert normed.norm == "cohort" and normed.cohort_k == 2 and "cohort k=2" in normed.summary()
    np.testing.assert_array_equal(normed.distances, again.distances)
    assert normed.fold_accuracies == again.fold_accuracies and normed.thresholds == again.thresholds
    assert not np.allclose(normed.distances, plain.distances)
    assert normed.to_dict()["norm"] == "cohort"
    with pytest.raises(ValueError, match="at least 3 folds"):
        E.lfw_verification(embed, pairs=df, folds=2, norm="cohort")
    with pytest.raises(ValueError, match="norm must be"):
        E.lfw_verification(embed, pairs=df, folds=3, norm="znorm")


def test_lfw_folds_have_disjoint_people(lfw_dir):
    """Leaving out the test fold's images leaves out its people: pairs.txt's folds share nobody."""
    pairs = E.read_lfw_pairs(lfw_dir / "pairs.txt")
    people = [set(f["name1"]) | set(f["name2"]) for _, f in pairs.groupby("fold")]
    assert all(not (a & b) for i, a in enumerate(people) for b in people[i + 1:])
