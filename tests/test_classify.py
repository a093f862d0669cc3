"""SVM / KNN on real dlib embeddings of LFW faces, and the open-set "unknown" decision."""
import numpy as np
import pytest

from nnprak import classify, data


@pytest.fixture(scope="module")
def gallery(lfw_dir, lfw_images):
    """Real 128-D dlib embeddings: 5 gallery people (12 images each) and 6 impostors (2 images each)."""
    from nnprak.models.dlib_resnet import DlibEmbedder

    emb = DlibEmbedder()
    people = sorted(lfw_images)
    paths = [f for p in people for f in lfw_images[p][:12]]
    labels = np.array([p for p in people for _ in lfw_images[p][:12]], dtype=object)
    imp = data.lfw_impostors(lfw_dir, exclude=people, n_people=6, images_per_person=2)
    X = emb.embed_images(paths)
    X_imp = emb.embed_images([data.abs_path(p) for p in imp["path"]])
    keep, keep_imp = ~np.isnan(X).any(1), ~np.isnan(X_imp).any(1)
    assert keep.mean() > 0.9 and keep_imp.mean() > 0.8  # dlib's HOG detector finds almost all LFW faces
    train = np.array([i % 12 < 8 for i in range(len(paths))])
    return dict(X_train=X[train & keep], y_train=labels[train & keep], X_test=X[~train & keep],
                y_test=labels[~train & keep], X_imp=X_imp[keep_imp], imp=imp[keep_imp].reset_index(drop=True))


@pytest.mark.parametrize("kind", ["svm_linear", "svm_rbf", "knn"])
def test_classifiers_identify_gallery_faces(gallery, kind):
    search = classify.fit_classifier(kind, gallery["X_train"], gallery["y_train"])
    assert set(search.best_params_) == set(classify.PARAM_GRIDS[kind])
    pred, score = classify.confidence(search, gallery["X_test"])
    assert np.mean(pred == gallery["y_test"]) >= 0.9
    assert ((score >= 0) & (score <= 1)).all()


def test_impostor_outside_gallery_is_rejected(gallery):
    model = classify.fit_classifier("knn", gallery["X_train"], gallery["y_train"])
    imp = gallery["imp"]
    val, test = (imp["split"] == "val").to_numpy(), (imp["split"] == "test").to_numpy()
    assert set(imp.loc[val, "person"]).isdisjoint(imp.loc[test, "person"])  # whole people per split
    _, imp_scores = classify.confidence(model, gallery["X_imp"][val])
    threshold = classify.choose_threshold(imp_scores, far=0.0)
    fc = classify.FaceClassifier(model, threshold, backend="dlib", kind="knn")
    names, _ = fc.predict(gallery["X_imp"][test])
    assert (names == classify.UNKNOWN).all(), "faces of people never seen must come out as unknown"
    known, _ = fc.predict(gallery["X_test"])
    assert np.mean(known == gallery["y_test"]) >= 0.8  # and gallery faces are still named


def test_choose_threshold_meets_the_false_accept_target():
    rng = np.random.default_rng(0)
    imp = rng.uniform(size=1000)
    for far in (0.0, 0.01, 0.05, 0.2):
        t = classify.choose_threshold(imp, far)
        assert np.mean(imp > t) <= far
        assert np.mean(imp >= t) > far or far == 0  # the lowest such threshold
    with pytest.raises(ValueError):
        classify.choose_threshold([], 0.01)


def test_open_set_rates_by_hand():
    rates = classify.open_set_rates(known_true=["a", "a", "b", "b"], known_pred=["a", "b", "b", "b"],
                                    known_scores=[0.9, 0.8, 0.3, 0.7], impostor_scores=[0.1, 0.6, 0.95],
                                    threshold=0.5)
    # accepted known: 0.9 (a ok), 0.8 (wrong), 0.7 (b ok) -> DIR 2/4; rejected 0.3 -> FRR 1/4; impostors 2/3
    assert rates["dir"] == 0.5 and rates["frr"] == 0.25 and rates["far"] == pytest.approx(2 / 3)
    curve = classify.dir_far_curve(["a", "a"], ["a", "b"], [0.9, 0.8], [0.1, 0.85])
    assert curve["far"][0] == 1.0 and curve["dir"][0] == 0.5 and curve["far"][-1] == 0.0


def test_classifier_round_trip_and_missing_model(tmp_path, gallery):
    model = classify.fit_classifier("svm_linear", gallery["X_train"], gallery["y_train"])
    fc = classify.FaceClassifier(model, 0.2, backend="dlib")
    path = fc.save(tmp_path / "m.joblib")
    again = classify.FaceClassifier.load(path)
    assert (again.predict(gallery["X_test"])[0] == fc.predict(gallery["X_test"])[0]).all()
    with pytest.raises(FileNotFoundError, match="run notebooks/05"):
        classify.FaceClassifier.load(tmp_path / "none.joblib")
    with pytest.raises(ValueError, match="unknown classifier kind"):
        classify.make_pipeline("tree")
