"""Every path and every tunable of nnprak, chosen by one profile.

Profiles (from the argument of :func:`load`, else ``$NNPRAK_PROFILE``, else ``default``):

* ``smoke``   – 5 LFW people, tiny epochs; tests, CI and nbval. Writes everything under ``build/smoke/``.
* ``default`` – the 62 LFW people with >= 20 images; the numbers, figures and tables of the report.
  The only profile that writes into the tracked ``results/``, ``report/`` and ``data/processed/`` folders.
* ``full``    – more epochs and larger inputs for a GPU or a patient user. Writes under ``build/full/``.

Usage in a notebook::

    from nnprak import config
    cfg = config.load(PROFILE)      # PROFILE comes from the papermill parameters cell
    config.seed_everything(cfg.seed)
"""
from __future__ import annotations

import math
import os
import random
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The checkout: the folder that holds ``nnprak/``, ``notebooks/`` and ``data/``."""

SEED = 42
PROFILES = ("smoke", "default", "full")
PHOTOS_ENV = "NNPRAK_PHOTOS"
DEVICE_ENV = "NNPRAK_DEVICE"
"""Environment variable that overrides the profile's ``device`` setting (e.g. ``NNPRAK_DEVICE=cpu make run``)."""
DEVICES = ("auto", "cpu", "cuda", "cuda:<n>")
"""Values of the ``device`` setting: ``auto`` = CUDA when PyTorch sees a GPU, else the CPU."""
"""Environment variable naming a folder of own photos (``make run PHOTOS=...`` / ``nnprak run --photos`` set it)."""

RAW_DIR = ROOT / "data" / "raw"
"""Students' own photos, ``data/raw/<person>/*.jpg``. Input only: nnprak never writes here."""
EXTERNAL_DIR = ROOT / "data" / "external"
"""Third-party data sets (LFW is looked for in ``data/external/lfw``)."""
SHARED_LFW_DIR = ROOT.parent / "shared" / "datasets" / "lfw"
"""Where this team's machines and CI keep LFW: a ``shared/`` folder next to the checkout."""

LFW_IMAGES_SUBDIR = "lfw-deepfunneled"
LFW_URL = "http://vis-www.cs.umass.edu/lfw/"
LFW_FILES = ("lfw-deepfunneled.tgz", "pairs.txt", "pairsDevTrain.txt", "pairsDevTest.txt", "people.txt")


MANIFEST_FILE, CROPS_FILE = "manifest.csv", "crops.csv"
"""File names of notebook 01's manifest and notebook 02's crops table in a profile's ``data/processed``."""
SEED_BENCH = "bench_scratch_seeds"
"""Results file (stem) of ``bench/bench_scratch_seeds.py`` on a profile's data (notebook 03, the README table)."""
SEED_BENCH_30_EPOCHS = "bench_scratch_seeds_30epochs"
"""Results file (stem) of the seed bench of LFW-62 with all 30 epochs (1,590 steps), the default schedule before the
:data:`MAX_STEPS` cap: the pairs at one and two blocks per stage, and the runs the changed crop's
(:data:`OTHER_CROP_BENCH`) are compared with."""
OTHER_CROP_BENCH = "bench_scratch_seeds_other_crop"
"""Results file (stem) of the same seed bench of LFW-62's pair (``--out``, 30 epochs) on the crops of an earlier run, in
which one background photo (Pierce_Brosnan_0011) was cropped differently (MTCNN's boxes depend slightly on which
images share its batch; a fresh ``make run`` detects in a fixed order): how far one changed crop moves single runs and
the pair's comparison."""
SMALL_DATA_BENCHES = ("bench_small_data", "bench_small_data_alone")
"""Results files (stems) of ``bench/bench_small_data.py``: with background people, and the set alone."""
MID_DATA_BENCHES = ("bench_mid_data", "bench_mid_data_original")
"""Results files (stems) of ``bench/bench_small_data.py --people 40 --images 25``: 40 people x 25 grey photos (17
training photos a person: not a small set for :func:`scratch_for_data`), and the same with ``--set preact=False``."""


@dataclass(frozen=True)
class Paths:
    """Folders one profile reads and writes (cookiecutter-data-science layout)."""

    root: Path
    interim: Path
    processed: Path
    models: Path
    results: Path
    figures: Path
    tables: Path
    notebooks_out: Path

    @classmethod
    def under(cls, folder: str | os.PathLike) -> "Paths":
        """Return the paths of outputs kept together in ``folder`` (``<folder>/interim``, ``/processed``, ``/models``,
        ...; not created): a benchmark's or a test's throw-away run."""
        f = Path(folder)
        return cls(root=ROOT, interim=f / "interim", processed=f / "processed", models=f / "models",
                   results=f / "results", figures=f / "figures", tables=f / "tables", notebooks_out=f / "notebooks")

    @property
    def manifest(self) -> Path:
        """Return the manifest CSV written by notebook 01 and extended by notebook 02."""
        return self.processed / MANIFEST_FILE

    @property
    def crops(self) -> Path:
        """Return the manifest with face-crop columns written by notebook 02."""
        return self.processed / CROPS_FILE

    @property
    def faces(self) -> Path:
        """Return the folder of face crops, ``<faces>/<variant>/<person>/<stem>.png``."""
        return self.interim / "faces"

    @property
    def embeddings(self) -> Path:
        """Return the folder of cached embeddings."""
        return self.processed / "embeddings"

    @property
    def features(self) -> Path:
        """Return the folder of cached backbone features (notebook 04)."""
        return self.processed / "features"

    def feature_cache(self, arch: str, split: str) -> Path:
        """Return the cached features of backbone ``arch`` on one split (notebook 04)."""
        return self.features / f"{arch}_{split}.npz"

    @property
    def scratch_checkpoint(self) -> Path:
        """Return the checkpoint of notebook 03's scratch CNN (written every epoch; ``RESUME`` reads it)."""
        return self.models / "scratch_resnet.pt"

    @property
    def transfer_checkpoint(self) -> Path:
        """Return notebook 04's stage-2 (fine-tuning) checkpoint, which ``train.fit`` resumes from; when fine-tuning is
        not kept (:func:`nnprak.models.transfer.keep_better_stage`), the model scored is stage 1's, not this one."""
        return self.models / "resnet50_transfer.pt"

    def classifier(self, name: str) -> Path:
        """Return the saved face classifier ``name`` of notebook 05 (e.g. ``embed_svm``)."""
        return self.models / f"{name}.joblib"

    @property
    def predict_model(self) -> Path:
        """Return the default model of ``python -m nnprak predict`` / ``enroll`` (notebook 05's best open-set model)."""
        return self.classifier("predict")

    def bench(self, name: str) -> Path:
        """Return a benchmark's results file ``name`` (e.g. ``bench_scratch_seeds``) in this profile's results."""
        return self.results / f"{name}.json"

    @property
    def seed_bench(self) -> Path:
        """Return the scratch CNN's seed bench on this profile's data (``bench/bench_scratch_seeds.py``)."""
        return self.bench(SEED_BENCH)

    @property
    def seed_bench_30_epochs(self) -> Path:
        """Return the seed bench with all 30 epochs, before the step cap (``SEED_BENCH_30_EPOCHS``)."""
        return self.bench(SEED_BENCH_30_EPOCHS)

    @property
    def other_crop_bench(self) -> Path:
        """Return the seed bench of the same pair on crops with one background crop changed (``OTHER_CROP_BENCH``)."""
        return self.bench(OTHER_CROP_BENCH)

    @property
    def small_data_benches(self) -> tuple[Path, Path]:
        """Return the 40 x 10 grey benches with and without background people (``bench/bench_small_data.py``)."""
        return tuple(self.bench(name) for name in SMALL_DATA_BENCHES)

    @property
    def mid_data_benches(self) -> tuple[Path, Path]:
        """Return the 40 x 25 grey benches with the settings' blocks and with the original ones (``MID_DATA_BENCHES``)."""
        return tuple(self.bench(name) for name in MID_DATA_BENCHES)

    def make(self) -> "Paths":
        """Create every output folder (never the inputs) and return self."""
        for p in (self.interim, self.processed, self.models, self.results, self.figures, self.tables,
                  self.notebooks_out):
            p.mkdir(parents=True, exist_ok=True)
        return self


def _paths_for(profile: str) -> Paths:
    if profile == "default":
        base = ROOT
        return Paths(root=ROOT, interim=base / "data" / "interim", processed=base / "data" / "processed",
                     models=base / "models", results=base / "results", figures=base / "report" / "figures",
                     tables=base / "report" / "tables", notebooks_out=base / "notebooks")
    base = ROOT / "build" / profile
    return Paths(root=ROOT, interim=base / "data" / "interim", processed=base / "data" / "processed",
                 models=base / "models", results=base / "results", figures=base / "report" / "figures",
                 tables=base / "report" / "tables", notebooks_out=base / "notebooks")


@dataclass(frozen=True)
class Config:
    """One profile's settings. Every notebook reads its knobs from here, never from literals."""

    profile: str
    paths: Paths
    seed: int = SEED
    # --- 01 data -----------------------------------------------------------------------------------------
    source: str = "lfw"                      # "lfw", "raw" (data/raw/<person>/*) or a folder laid out the same
    min_images_per_person: int = 20          # LFW people with at least this many images
    max_people: int | None = None            # keep only the first N people (alphabetical); None = all
    split_fractions: tuple = (0.70, 0.15, 0.15)
    min_image_side: int = 64                 # smaller images are flagged "tiny" (kept, but reported)
    # --- 02 face crops -----------------------------------------------------------------------------------
    crop_size: int = 160
    crop_margin: int = 14                    # facenet-pytorch's LFW evaluation uses 14 px at 160 px
    face_select: str = "central"             # "central" | "largest" | "probable"
    min_face_prob: float = 0.90
    detect_batch_size: int = 32
    detect_workers: int | None = None        # batches detected at once (None: cfg.threads on the CPU, 1 on a GPU)
    min_face_size: int = 60                  # px; LFW subjects are >= 62 px wide (half the CPU time of 20 px)
    retry_min_face_size: int = 20            # px; an image without a face at min_face_size is detected again at
                                             # this size (MTCNN's own default) before it is called no_face
    detect_pad_retry: float | None = 0.15    # then once more with a grey border of this fraction of the longer
                                             # side: photos that are already face crops (faces.DEFAULT_PAD_RETRY)
    face_only_layout: bool = True            # in a set of face crops, a photo still without a face gets the set's
                                             # median face box and landmarks (faces.whole_photo_faces)
    # --- 03 scratch CNN ----------------------------------------------------------------------------------
    scratch: dict = field(default_factory=dict)
    # --- 04 transfer -------------------------------------------------------------------------------------
    transfer: dict = field(default_factory=dict)
    # --- 05 embeddings -----------------------------------------------------------------------------------
    embed: dict = field(default_factory=dict)
    # --- 06 evaluation -----------------------------------------------------------------------------------
    verification_folds: int = 10             # LFW View 2 folds used (10 = the official protocol)
    verification_pairs_per_fold: int | None = None  # None: all 600 pairs of a fold (the official protocol)
    # Score normalisation reported next to the plain distance (evaluate.lfw_verification's norm): "cohort" =
    # distance minus the mean distance of both faces to their cohort_k nearest faces of other people, the cohort
    # drawn from the pairs of the other folds only (LFW's folds have disjoint people); "none": plain only.
    # All 6,000 pairs: 99.20 % plain -> 99.37 % cohort (k=50; k=25..200: 99.28-99.38 %), see the README.
    verification_norm: str = "cohort"
    cohort_k: int = 50
    threads: int = 2
    device: str = "auto"                     # MTCNN, embedders, training: see DEVICES / resolve_device; $NNPRAK_DEVICE
    max_cv_folds: int = 5                    # grid-search folds: at most this, at most the smallest class (cv_folds)

    @property
    def lfw_dir(self) -> Path:
        """Return the LFW folder, resolved as documented in :func:`find_lfw`."""
        return find_lfw()

    @property
    def is_lfw(self) -> bool:
        """Return True when the images come from LFW (not from a folder of own photos)."""
        return self.source == "lfw"

    @property
    def photo_dir(self) -> Path | None:
        """Return the folder of own photos (``data/raw`` for ``source="raw"``), None for LFW."""
        if self.is_lfw:
            return None
        return RAW_DIR if self.source == "raw" else Path(os.path.abspath(os.path.expanduser(str(self.source))))

    @property
    def torch_device(self):
        """Return the ``torch.device`` of this profile's ``device`` setting (:func:`resolve_device`)."""
        return resolve_device(self.device)

    def describe_source(self) -> str:
        """Return one line naming the data set: LFW with its filter, or the own-photos folder."""
        if self.is_lfw:
            first = "" if self.max_people is None else f", the first {self.max_people}"
            return f"LFW, people with >= {self.min_images_per_person} images{first}"
        return f"own photos in {self.photo_dir}"


def cv_folds(class_counts, max_folds: int = 5) -> int:
    """Return the number of stratified CV folds the data supports: at most ``max_folds``, at most the smallest class.

    Every fold must hold at least one image of every person; 2 is the minimum (a person with a single
    training image cannot be cross-validated and raises).
    """
    if len(class_counts) < 2:
        raise ValueError(f"{len(class_counts)} person in the training data: telling faces apart needs at least two "
                         "people (notebook 02 leaves out people without training faces): add photos of another person "
                         "and run notebooks 01 and 02 again")
    smallest = int(min(class_counts))
    if smallest < 2:
        raise ValueError(f"a person has only {smallest} training image(s): cross-validation needs at least 2 each. "
                         "Add photos of that person or leave them out.")
    return max(2, min(int(max_folds), smallest))


SMALL_DATA_IMAGES_PER_PERSON = 15
"""Below this many training images per person :func:`scratch_for_data` switches to the small-data recipe."""
SMALL_DATA_AUGMENT = dict(scale=(0.6, 1.0), ratio=(0.85, 1.15), rotation=15.0, jitter=0.4)
"""Stronger augmentation for 5-15 training photos per person (a larger crop range, more rotation and jitter)."""
SMALL_DATA_BLOCKS = 1
"""Residual blocks per stage below :data:`SMALL_DATA_IMAGES_PER_PERSON` photos per person (the main model's depth since
it has one block per stage; it matters when ``blocks`` is set deeper). 40 people x 10 grey LFW photos without background
people, seeds 42/43/44, the best epoch and no mirror image (before ``keep``/``flip_tta``) (``bench/bench_small_data.py``): one block per stage 81.3/78.8/75.0 % (78.3 %) in 3.0 min a run,
two blocks (``--depths 2,2,2,2``) 73.8/72.5/73.8 % (73.3 %) in 5.8 min."""
SMALL_DATA_PREACT = False
"""Block form below :data:`SMALL_DATA_IMAGES_PER_PERSON` photos per person: the original blocks (``BasicBlock``,
``preact=False``), where larger sets get the pre-activation blocks of the settings (``preact`` in ``_SCRATCH_DEFAULT``).
40 people x 10 grey LFW photos with background people, 80 px, seeds 42/43/44, 30 epochs (``bench/bench_small_data.py``,
the same crops, ``results/bench_small_data_30epochs.json`` and ``bench_small_data_preact.json``): original blocks
88.8/90.0/95.0 % (91.25 %) test accuracy, pre-activation 85.0/83.8/90.0 % (86.25 %); face by face 17 against 5
(p = 0.017). With the :data:`MAX_STEPS` cap's 28 epochs the original blocks reach 90.0/91.25/92.5 % (91.25 %,
``results/bench_small_data.json``, crops made anew). Just above the line, 40 people x 25 grey photos (17 training photos a person, 118 background people, 64 px;
``bench_small_data.py --people 40 --images 25``, ``results/bench_mid_data.json`` and ``bench_mid_data_original.json``):
pre-activation 93.7/94.3/93.7 % (93.9 %), original blocks 91.2/92.5/91.8 % (91.8 %); face by face 17 against 7
(p = 0.06)."""
SMALL_DATA_HEAD = "linear"
"""Classifier head below :data:`SMALL_DATA_IMAGES_PER_PERSON` photos per person without background people (with them
the settings' head is kept). 40 people x 10 grey LFW photos,
aligned crops, seeds 42/43/44 (``bench/bench_small_data.py``): linear 81.3/78.8/75.0 % (78.3 % mean), cosine
78.8/80.0/71.3 % (76.7 %)."""


MAX_STEPS = 1300
"""Optimiser steps a schedule has at most unless the settings say otherwise (their ``max_steps``; None: no cap): the
5-minute budget per model on two CPU cores, where a step of 64 images of 64 px takes 0.2-0.23 s (1,300 steps: 4.3-5.0
min). LFW-62 with its background people (53 steps an epoch) trains 24 of the settings' 30 epochs; smaller sets keep
their epochs, and the ``min_steps`` floors still apply. LFW-62, one block per stage, seeds 42/43/44
(``bench/bench_scratch_seeds.py --depths 1,1,1,1 --verify --set epochs=24``, the same schedule): see ``epochs`` below."""

ALIGNED_MAX_FILL = 0.25
"""Largest median share of an aligned crop that may lie outside the photo (:func:`nnprak.faces.aligned_fill`) before
:func:`scratch_for_data` gives the network the box crops instead. Ordinary photos have 0 (the median of LFW-62, its
background people and the web, GIF and PGM sets of ``bench/make_photo_sets.py``; no face over 0.05); photos that are
already face crops 0.74 (its ``cropped`` set, 40 people x 10; every face over 0.46), whose aligned crops are a small
face in a black frame. On that set (seed 42, with the background people, ``bench/bench_small_data.py --work W --seeds
42 [--path-column crop_aligned]``): test accuracy 75.0 % on box crops against 53.9 % on aligned crops (57 against 41 of
76 test faces), validation 74.4 against 59.0 %; eigenfaces + SVM on the same crops 65.8 % against 21.1 %."""


def scratch_for_data(settings: dict, n_train: int, n_people: int, n_background: int = 0,
                     aligned_fill: float = 0.0) -> dict:
    """Return scratch-CNN settings fitted to a training set of ``n_train`` images of ``n_people`` people.

    ``n_background``: the background people's images the network also learns from (:mod:`nnprak.background`);
    they count for the batch size and the schedule, not for the photos per person.

    Rules (LFW-62, 2,121 images and 1,301 of background people, gets 24 of the settings' 30 epochs by the cap below):

    * **batch size**: the settings' batch size, smaller for small sets (a power of two near an eighth of the
      images, at least 16), so an epoch still has about 8 optimiser steps;
    * **schedule in optimiser steps**: at least ``min_steps`` steps (``epochs`` grows to
      ``ceil(min_steps / steps per epoch)``); a few hundred images otherwise get a few dozen steps;
      ``patience`` grows by the same factor (it counts epochs); and at most ``max_steps`` (default
      :data:`MAX_STEPS`, the time budget; None: no cap) where ``epochs`` would take more: a large set gets fewer
      epochs, never fewer steps than the floor;
    * **small data** (< :data:`SMALL_DATA_IMAGES_PER_PERSON` images per person): :data:`SMALL_DATA_BLOCKS` in the
      block form of the setting ``small_data_preact`` (default :data:`SMALL_DATA_PREACT`); with
      background people inputs of ``small_data_image_size`` pixels (at least the settings' size); the last epoch's
      weights (``keep="last"``: a validation split of 1-3 photos a person is too small to choose an epoch by); without
      background people the settings' size and the stronger
      :data:`SMALL_DATA_AUGMENT`, the :data:`SMALL_DATA_HEAD`, no class-balanced sampling (the classes are
      about equal anyway) and at least ``small_data_min_steps`` optimiser steps instead of ``min_steps``: with 6
      training photos per person the network needs many passes over the strongly augmented photos (40 people x 10
      grayscale LFW photos, seed 42, ``bench/bench_small_data.py``, linear head: test accuracy after 900 / 3,000 /
      6,000 steps 59 / 72.5 / 76 % on plain crops, 61 / 75 / 80 % on aligned crops; 6,000 steps take about
      3 minutes on 2 cores).

    * **crop**: box crops (``crop="plain"``) instead of aligned ones when ``aligned_fill``, the training faces' median
      :func:`nnprak.faces.aligned_fill`, is over :data:`ALIGNED_MAX_FILL` (photos that are already face crops).

    Adds ``steps_per_epoch``, ``steps``, ``images_per_person`` and ``aligned_fill``; ``small_data`` says which recipe
    was used.
    """
    s = dict(settings)
    n_own, n_people, n_background = int(n_train), max(1, int(n_people)), max(0, int(n_background))
    if n_own < 2:
        raise ValueError(f"a training set of {n_own} image(s) is too small to train a network")
    per_person = n_own / n_people
    n_train = n_own + n_background
    batch = int(s["batch_size"])
    if n_train < 8 * batch:
        batch = max(16, 2 ** int(math.floor(math.log2(max(1, n_train // 8)))))
        batch = min(batch, int(s["batch_size"]), n_train)
    steps_per_epoch = max(1, n_train // batch if n_train > batch else 1)
    small = per_person < SMALL_DATA_IMAGES_PER_PERSON
    recipe = small and not n_background   # the small-data recipe stands in for the background people
    min_steps = int(s.get("small_data_min_steps", s.get("min_steps", 0)) if recipe else s.get("min_steps", 0))
    planned, cap = int(s["epochs"]), s.get("max_steps", MAX_STEPS)
    if cap:   # the time budget in steps: a large set trains fewer epochs
        planned = max(1, min(planned, int(cap) // steps_per_epoch))
    epochs = max(planned, math.ceil(min_steps / steps_per_epoch))
    if s.get("patience") is not None:
        s["patience"] = int(math.ceil(int(s["patience"]) * epochs / max(1, planned)))
    if recipe:
        s["augment"] = dict(SMALL_DATA_AUGMENT, **s.get("augment", {}))
        s["balanced"] = 0.0
        s["head"] = SMALL_DATA_HEAD
    if small:   # keep="last": a validation split of 1-3 photos a person cannot choose an epoch
        s.update(blocks=(SMALL_DATA_BLOCKS,) * len(s["widths"]), keep="last",
                 preact=bool(s.get("small_data_preact", SMALL_DATA_PREACT)))
    if small and n_background:   # more pixels a face once the background people teach the features
        s["image_size"] = max(int(s["image_size"]), int(s.get("small_data_image_size", s["image_size"])))
    if s.get("crop") == "aligned" and aligned_fill > ALIGNED_MAX_FILL:   # a small face in a black frame: the box
        s["crop"] = "plain"
    s.update(batch_size=batch, epochs=epochs, steps_per_epoch=steps_per_epoch, steps=epochs * steps_per_epoch,
             images_per_person=round(per_person, 2), small_data=small, background_images=n_background,
             aligned_fill=round(float(aligned_fill), 3))
    return s


# ablation_epochs (notebook 03): None = every variant gets the main model's full schedule (the main model is reused
# as the first ResNet); a number = all variants are trained that many epochs (quicker, screening only).
# ablation_depths: blocks per stage of the shortcut ablation's pairs (ResNet and its plain twin for each) that
# notebook 03 trains; the default profile trains none (the time budget of `make run`, about 20 minutes) and
# shows the mean ± std over three seeds of bench/bench_scratch_seeds.py instead (results/bench_scratch_seeds.json, read only when it was
# measured on the same data); smoke trains the 1-1-1-1 pair (its main model has one block per stage, for speed),
# the full profile 1-1-1-1 and 2-2-2-2 (a profile without its own: the main model's pair).
# blocks: residual blocks per stage of the main model. One, with the background people (below), pre-activation
# blocks (preact, below) and the MAX_STEPS cap's 24 epochs: bench/bench_scratch_seeds.py --depths 1,1,1,1 --verify
# --set epochs=24, seeds 42/43/44, 2 threads, both networks on one machine (3 Dec 2026, results/
# bench_scratch_seeds.json): ResNet 95.5 % +- 0.6 % test accuracy, features 88.9 % +- 0.2 % verification on unseen
# people, 4.3-4.7 min a run; its plain twin 93.4 % +- 1.1 % and 88.2 % +- 0.4 %, 4.0-4.3 min; 1,289 against 1,261 of
# 3 x 450 test faces, face by face (ablation.paired_test, exact McNemar, seeds pooled) 39 against 11, p = 0.0001.
# With all 30 epochs (results/bench_scratch_seeds_30epochs.json, 5.1-5.9 min a run on a slow day): ResNet 95.6 % +-
# 0.4 % against 94.1 % +- 0.8 %, 32 against 13, p = 0.007. Two blocks per stage with the cap (--depths 2,2,2,2
# --verify --eigenfaces --merge, the same day, 7.1-8.5 min a run): ResNet 93.5 % +- 0.5 % against 89.8 % +- 2.0 %,
# face by face 78 against 28 (p < 0.0001), features 87.8 % and 86.1 %; with all 30 epochs two blocks (--depths
# 2,2,2,2 --residual-only --merge, then --plain-only --merge, the same slow machine): ResNet 93.0 % +- 0.8 % (its 30
# epochs re-planned to 25-27 by the 10-minute budget, 9.4-9.8 min a run) against 90.3 % +- 0.6 % (26-28 epochs,
# 7.8-8.8 min), face by face 64 against 28 (p = 0.0002), features 88.0 % and 86.8 %: the shortcuts matter at that
# depth, which is over the 5-minute budget of a model and no better than one block. With the original blocks
# (preact=False, the default before 12/2026; results/bench_scratch_seeds_8seeds.json, earlier machines) one block
# per stage was a tie: 94.5 % +- 0.6 % against 94.6 % +- 0.8 % over seeds 42-49, 3,401 against 3,406 of 8 x 450
# faces, 61 against 66 (p = 0.72), features 88.5 % and 88.4 %; two blocks 94.1 % +- 0.3 % against 91.3 % +- 0.4 %
# (66 against 28, p = 0.0001). The trials below that quote 451 test faces or compare with 94.8 % for the plain twin
# were measured before the same_photo rule, with the original blocks. Before the background people
# (2,121 images) two blocks were the main model (ResNet 93.9 % +- 0.5 % against 91.4 % +- 0.8 % plain, 86.2 %
# verification; one block 93.6 % +- 0.6 % both, 86.8 % verification). Small sets get SMALL_DATA_BLOCKS.
# background / background_min_images / background_per_person / background_people: the background people the scratch
# CNN also learns to tell apart (nnprak.background; notebook 02 crops them): LFW people outside the data set with at
# least background_min_images photos, at most background_per_person each (background_people: the first that many by
# name; smoke: a few). LFW-62 gets the 96 people with 10-19 photos (1,301 images), an own set also LFW-62's people.
# They lifted the features on unseen people past 88 % (seed 42, one block per stage, background crops detected in
# another order (4 of 1,301 differ; the README): 93.3 % test accuracy / 87.1 % verification without, 93.8 % / 88.3 %
# with them) and 40 x 10 grey photos from 78.3 % +- 3.1 % (the small-data
# recipe) to 88.3 % +- 3.1 % (bench/bench_small_data.py, seeds 42/43/44: 85.0/91.3/88.8 %, 118 background people, 2,683
# images, 2.3 min a run; 91.25 % +- 3.3 % with 80 px inputs and the last epoch, see keep below). background_per_person 40 against 20 there (2,007 images): 88.3 % against 84.2 % +- 2.6 %
# (85.0/81.3/86.3 %). Also people with 5-9 photos (383 background people, 3,668 images, at most 20 each, seeds 42/43):
# 82.5 / 90.0 % against 85.0 / 81.3 % (noisy: 80 test photos). On LFW-62 the cap does not bind (at most 19 photos).
# epochs: 30, of which the MAX_STEPS cap (1,300 optimiser steps, the 5-minute budget) leaves LFW-62 with its
# background people 24 (1,272 steps; smaller sets keep all 30 or get more by the min_steps floors). LFW-62, one block
# per stage, seeds 42/43/44 (bench_scratch_seeds.py --depths 1,1,1,1 --verify --set epochs=24, 3 Dec 2026: the cap's
# schedule, the same settings; results/bench_scratch_seeds.json): ResNet 95.1/95.1/96.2 % test accuracy (95.5 % +-
# 0.6 %), features 88.9 % +- 0.2 %, 4.3-4.7 min a run; plain twin 92.9/92.7/94.7 % (93.4 % +- 1.1 %), features 88.2 %
# +- 0.4 %, 4.0-4.3 min; face by face 39 against 11 (p = 0.0001). All 30 epochs (1,590 steps, the default before the
# cap; results/bench_scratch_seeds_30epochs.json): ResNet 95.6 % +- 0.4 %, plain twin 94.1 % +- 0.8 %, features
# 88.9 % and 88.2 %, but 4.6, 6.1, 5.3 and 3.9 min for the default run on four days' 2-core machines. With the
# original blocks (preact=False, before pre-activation) 24 epochs had cost accuracy (--set epochs=24, seeds
# 42/43/44): ResNet 91.8/94.2/94.2 % (93.4 % +- 1.4 %); its plain twin, the same network in both block forms, named
# the same faces then as now (92.9/92.7/94.7 %).
# Nor did cheaper steps (seed 42, bench_scratch_seeds.py --depths 1,1,1,1 --residual-only --verify, 12/2026, against
# the default's 95.1 % test accuracy / 89.3 % features, whose epochs took 11.3 s that hour, 5.7 min for 30): 56 px
# inputs (--set image_size=56) 94.7 % / 86.5 % in 4.2 min, a first stage of 24 channels (--set
# "widths=(24,64,128,256)") 93.6 % / 88.9 % in 5.0 min. A training step of 64 images takes about 170 ms on our 2
# cores in the channels_last layout (train.fit_from_settings' default) against 220-300 ms in PyTorch's default one;
# bfloat16 autocast (220 ms) and torch.compile (180 ms) were no quicker on this CPU, nor larger batches an image.
# max_minutes: the training's time budget (train.fit). On a machine too slow for the whole schedule the median pace of
# the epochs so far shortens it after each epoch (train.replan_epochs, train.shorten_schedule), so that the rate still
# anneals to its end, and gives epochs back when a slow first epoch was only other work on the machine; on ours the
# default run and the one-block benches fit (4-6 min), so the budget changes none of their numbers; the two-block
# pair's runs were re-planned to 25-28 epochs on a slow day (8-10 min, see blocks above). LFW-62's main model, seed
# 42, under a 3-minute budget (a machine 2-3 times slower, in effect): the schedule shortened to 15 epochs 89.3 % (402
# of 450 test faces; on a day with a slower first epoch 14 epochs, 87.6 %, 394, re-planned every epoch and kept at
# 14), the 30-epoch schedule cut after 14 epochs (the behaviour before) 82.9 % (373), the full schedule 94.0 %.
# min_steps: optimiser steps a schedule has at least (see scratch_for_data; LFW-62 alone: 30 epochs of 33 steps, 990;
# with its background people the cap's 24 epochs of 53, 1,272);
# small_data_min_steps: the same for sets under 15 training photos per person (40 x 10 photos: 6,000 steps, about 3 min).
# shortcut / zero_init_residual / stem_stride / dropout: the ScratchResNet design (models.scratch.from_settings).
# crop: notebook 02's crop variant the network learns from (faces.crop_column). "aligned" (eyes and mouth on fixed
# points) against "plain" (the MTCNN box), linear head, bench/bench_scratch_seeds.py and bench/bench_small_data.py,
# seeds 42/43/44: LFW-62 93.7 % against 93.4 % (mean), 40 x 10 grey photos 78.3 % against 75.8 %. Photos that are
# already face crops get "plain" whatever the setting (scratch_for_data, ALIGNED_MAX_FILL).
# head / head_scale / head_margin: the classifier layer. "cosine" (scale x cosine of the feature and each person's
# weight, NormFace) against "linear", aligned crops, seed 42: LFW-62 93.4 % against 92.9 %, its features' verification
# on unseen people 87.1 % against 86.3 % (cohort-normalised). A smaller scale, a CosFace margin or a longer schedule
# trade features for classification (seed 42: scale 8 96.0 % test accuracy / 85.3 % verification, 16 93.4 / 87.1 %,
# 32 91.4 / 86.6 %; 40 epochs instead of 30 95.3 / 86.3 %; margin 0.2 at scale 16, seeds 42/43: 95.6/94.5 % and
# 86.4/85.0 %, 40 x 10 grey photos 76.3/73.8 % against 78.8/80.0 % without): scale 16, no margin, 30 epochs, since
# notebook 03 also shows the features on unseen people.
# label_smoothing / dropout: their values for the classification; for the features on unseen people (cosine head, seed
# 42 unless said; with both: 93.3 % test accuracy / 87.1 % verification) neither helped much: no label smoothing 93.1 /
# 87.6 % (seed 43: 94.2 / 87.3 %, against 93.1 / 87.3 % with it), no smoothing and no dropout 93.8 / 87.2 %, plus
# a linear head ("vanilla softmax") 93.4 / 86.2 %, no smoothing with a 512-wide last stage 93.8 / 87.4 % (2.3 min);
# nor did whitening or LDA of the features fitted on the 62 people (86.1-87.7 %), nor (two blocks per stage, seed 42)
# the small-data augmentation (SMALL_DATA_AUGMENT) on LFW-62: 91.1 / 85.5 % against 94.5 / 86.3 %. The features
# learnt from 62 people stay near 87 % whatever the recipe (bench_scratch_seeds.py --verify).
# mixup (not set: 0 = off): the alpha of mixup (train.fit_from_settings). On the 40 x 10 grey set (cosine head,
# seeds 42/43) 0.4 gave 80.0/78.8 % against 78.8/80.0 % without, so it stays off; there 48 px inputs gave 73.8 % and
# 10,000 steps 72.5 % (seed 42).
# drop_path (not set: 0 = off): stochastic depth of the residual network (models.scratch.ScratchResNet; the plain twin
# has no shortcut to fall back on). LFW-62, one block per stage, seeds 42/43/44 (bench_scratch_seeds.py --depths
# 1,1,1,1 --residual-only --verify --set drop_path=0.1): 94.0/94.7/94.9 % test accuracy (94.5 % +- 0.5 %), features
# 88.7/89.8/87.9 % (88.8 % +- 0.9 %), 3.5-4.1 min a run on a slower day; without it 94.7 % +- 1.0 % and 88.4 % +- 0.5 %,
# the plain twin 94.8 % +- 1.1 %: within the variation between seeds, so it stays off. Nor did a deeper second half
# tip the tie between the shortcuts and none: blocks (1, 1, 2, 2), seeds 42/43: 94.0/94.2 % test accuracy, features
# 86.6/87.7 %, 4.3-4.4 min a run (below 88 % and near the 5-minute budget; the plain twin was not trained). Nor two
# blocks per stage at three quarters of the width, to fit the depth where shortcuts matter into the budget (widths
# 24-48-96-192, 1.59 M parameters; --depths 2,2,2,2 --residual-only --verify --set "widths=(24,48,96,192)", seed 42, on
# the 451 test faces before the same_photo rule): 94.0 % test accuracy, features 87.7 %, 5.5 min a run, no quicker
# than the full width on two cores (narrow convolutions use the cores less well), so it was not pursued.
# preact: True, the residual blocks in the pre-activation form of He et al. 2016b (models.scratch.PreActBlock: batch
# norm and ReLU before each convolution, nothing after the sum; its plain twin is the same network as the original
# blocks' plain twin, layer for layer and with the same initial weights); sets under 15 photos a person get the
# original blocks (small_data_preact, default SMALL_DATA_PREACT, whose docstring gives the 40 x 10 grey set's numbers:
# 91.25 % against 86.25 % with pre-activation; now --set small_data_preact=True there). LFW-62, one block per stage,
# with the background people, seeds 42-49 (bench_scratch_seeds.py --depths 1,1,1,1 --residual-only --verify --set
# preact=True, 12/2026, results/bench_scratch_seeds_preact8.json): 95.1/95.8/95.8/94.4/94.2/94.2/95.1/95.3 % test
# accuracy (95.0 % +- 0.6 %, seeds 42/43/44 95.6 %), features 88.8 % +- 0.5 %, 5.4-6.0 min a run on a slow day;
# against the plain twin's 94.6 % +- 0.8 % (seeds 42/43/44 94.7 %) and the original blocks' 94.5 % +- 0.6 %
# (results/bench_scratch_seeds_8seeds.json), 3,420 against 3,406 and 3,401 of 8 x 450 faces, face by face 63 against
# 49 (p = 0.22) and 68 against 49 (p = 0.10). On the small set's 80 validation faces (unused by keep="last") the last
# epochs named 207 of 3 x 80 with pre-activation against 200, but the test faces decide; hence the rule by set size.
# (First trial, on the 451 test faces before the same_photo rule: seeds 42/43/44 95.1/94.9/94.9 %.)
# keep / flip_tta / small_data_image_size (train.fit's keep; train.predict's flip_tta; scratch_for_data): the weights
# kept after training, scoring each test face with its mirror image too, and the input size of small sets that learn
# beside background people. 40 x 10 grey photos with background people, seeds 42/43/44 (bench_small_data.py's set, a
# script in the bench's style; test accuracy without / with the mirror image): the best epoch on the set's validation
# photos (1-2 a person) 85.0/76.3/85.0 % / 85.0/76.3/88.8 %, the last epoch 87.5/81.3/85.0 % / 87.5/83.8/88.8 %, the
# last epoch at 80 px 88.8/90.0/93.8 % / 88.8/90.0/95.0 % (3.5 min a run). LFW-62 (451 validation faces), the last
# epoch instead of the best: 93.3/95.1/95.3 % / 93.6/95.1/95.8 % test accuracy, but its features verify unseen people
# at 87.0/88.7/87.8 % (the best epoch on the set's validation faces: 88.0/89.0/88.2 %, bench_scratch_seeds.py), so
# large sets keep the best epoch. Nearest class mean of the
# features instead of the head (40 x 10, 80 px): 90.0/90.0/93.8 %, no better than the head with the mirror image.
_SCRATCH_DEFAULT = dict(image_size=64, widths=(32, 64, 128, 256), blocks=(1, 1, 1, 1), epochs=30,
                        batch_size=64, optimizer="adamw", lr=3e-3, weight_decay=0.05, schedule="onecycle",
                        balanced=0.5, label_smoothing=0.1, patience=8, max_minutes=10.0, ablation_epochs=None,
                        min_steps=900, small_data_min_steps=6000, shortcut="avgpool", zero_init_residual=False,
                        stem_stride=2, dropout=0.2, crop="aligned", head="cosine", head_scale=16.0, head_margin=0.0,
                        ablation_depths=((1, 1, 1, 1), (2, 2, 2, 2)), background=True, background_min_images=10,
                        background_per_person=40, background_people=None, small_data_image_size=80,
                        keep="best", flip_tta=True, preact=True, small_data_preact=SMALL_DATA_PREACT)
_TRANSFER_DEFAULT = dict(image_size=224, head_epochs=30, finetune_epochs=3, batch_size=32, head_lr=1e-2,
                         finetune_lr=1e-4, max_minutes=4.0)
# Open set: impostors = LFW people outside the gallery (1-19 images, at most 2 each), drawn until the validation
# and the test split each hold `impostor_faces` images (>= 1,000 faces each: a 0.1 % threshold needs them);
# `open_set_score`: "auto" = the gallery-distance score that separates best on validation (classify.SCORE_METHODS);
# DIR/FAR are reported at every `far_targets` with `bootstrap` resamples for the confidence intervals.
# `far_target` is the false-accept budget of the threshold predict uses; `far_confidence`: the threshold is the lowest
# whose 95 % upper confidence bound of the FAR on the validation strangers is within the budget
# (classify.choose_threshold): a threshold placed at exactly 1 % on a sample of strangers lets more than 1 % of new
# strangers through about half the time (measured: 1.09-1.18 % of the 1,100 test strangers at exactly 1 %).
# `dlib_align`: how the dlib backend aligns its 150 px chips from notebook 02's detection (embed.DlibBackend):
# "mtcnn" (MTCNN's 5 landmarks on a fitted template), "dlib5" (dlib's 5-point shape predictor in MTCNN's box) or
# "both" (the mean of the two descriptors; LFW, all 6,000 pairs: 99.17 % / 99.07 % / 99.20 %, with cohort
# normalisation 99.22 % / 99.02 % / 99.37 %). "both" costs twice the embedding time (7,701 images: 260 s instead
# of 117 s here, about 1.5 min more for notebook 05's ~7,800 images), which the default run's 20 minutes
# does not have: the default profile keeps "mtcnn", the full profile (the README's all-pairs number) and smoke use "both".
_EMBED_DEFAULT = dict(backend="auto", dlib_align="mtcnn", far_target=0.01, far_confidence=0.95,
                      far_targets=(0.01, 0.005, 0.001),
                      batch_size=32,
                      impostor_faces=1100, impostor_min_images=1, impostor_images_per_person=2,
                      open_set_score="auto", bootstrap=1000)

PROFILE_SETTINGS: dict[str, dict] = {
    # smoke: 3 folds (cohort normalisation needs a third fold: the cohort of the threshold's pairs leaves out their
    # own fold and the test fold) × 20 pairs
    "smoke": dict(max_people=5, detect_batch_size=16, verification_folds=3, verification_pairs_per_fold=20,
                  scratch=dict(_SCRATCH_DEFAULT, image_size=48, widths=(8, 16, 32, 64), blocks=(1, 1, 1, 1),
                               ablation_depths=((1, 1, 1, 1),), epochs=6, batch_size=16,
                               patience=3, max_minutes=1.0, ablation_epochs=None, min_steps=0,
                               small_data_min_steps=0, background_people=4, background_per_person=4,
                               small_data_image_size=48),
                  transfer=dict(_TRANSFER_DEFAULT, image_size=64, head_epochs=2, finetune_epochs=1,
                                max_minutes=1.0),
                  embed=dict(_EMBED_DEFAULT, dlib_align="both", impostor_faces=20, far_target=0.1, far_targets=(0.1,),
                           bootstrap=200)),
    # default: LFW-62; verification on all 10 folds of pairs.txt but 200 of each fold's 600 pairs (the time
    # budget of `make run` on 2 cores, about 20 minutes); the full profile runs the official 6,000 pairs.
    "default": dict(verification_pairs_per_fold=200, scratch=dict(_SCRATCH_DEFAULT, ablation_depths=()),
                    transfer=dict(_TRANSFER_DEFAULT),
                    embed=dict(_EMBED_DEFAULT)),
    "full": dict(min_images_per_person=10,
                 scratch=dict(_SCRATCH_DEFAULT, image_size=160, epochs=80, patience=15, max_minutes=None, max_steps=None,
                              ablation_depths=((1, 1, 1, 1), (2, 2, 2, 2))),
                 transfer=dict(_TRANSFER_DEFAULT, finetune_epochs=15, max_minutes=None),
                 embed=dict(_EMBED_DEFAULT, dlib_align="both")),
}


def profile_name(profile: str | None = None) -> str:
    """Return the active profile: the argument, else ``$NNPRAK_PROFILE``, else ``default``."""
    name = profile or os.environ.get("NNPRAK_PROFILE") or "default"
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r} (from {'argument' if profile else 'NNPRAK_PROFILE'}); "
                         f"use one of {', '.join(PROFILES)}.")
    return name


_ACTIVE: Config | None = None


def load(profile: str | None = None, **overrides) -> Config:
    """Return the :class:`Config` of a profile, with keyword overrides (e.g. ``source=...``) applied.

    ``source`` defaults to ``$NNPRAK_PHOTOS`` when that is set (``make run PHOTOS=folder``), else the profile's (LFW).

    The returned config becomes the active one (:func:`active`), which ``plots.save_fig`` and other
    helpers use when no folder is given.
    """
    global _ACTIVE
    name = profile_name(profile)
    cfg = Config(profile=name, paths=_paths_for(name), **PROFILE_SETTINGS[name])
    if "source" not in overrides and os.environ.get(PHOTOS_ENV):
        overrides["source"] = os.environ[PHOTOS_ENV]
    from_env = "device" not in overrides and bool(os.environ.get(DEVICE_ENV))
    if from_env:
        overrides["device"] = os.environ[DEVICE_ENV]
    check_device(overrides.get("device", cfg.device), DEVICE_ENV if from_env else "device")
    _ACTIVE = replace(cfg, **overrides) if overrides else cfg
    return _ACTIVE


def active() -> Config:
    """Return the config most recently returned by :func:`load` (loading the environment's profile if none)."""
    return _ACTIVE if _ACTIVE is not None else load()


def check_device(setting: str, source: str = "device") -> str:
    """Return ``setting`` normalised (lower case) when it is a valid ``device`` value (:data:`DEVICES`).

    Raises:
        ValueError: naming ``source`` (the setting or the environment variable) and the allowed values.
    """
    name = str(setting).strip().lower()
    if name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise ValueError(f"invalid {source} setting {setting!r}: use one of {', '.join(DEVICES)}")


def resolve_device(setting=None):
    """Return the ``torch.device`` of a ``device`` setting: ``auto`` is CUDA when available, else the CPU; a
    ``torch.device`` is returned as it is.

    ``None`` means the active profile's setting (:func:`active`; ``$NNPRAK_DEVICE`` overrides it there). The one
    place that turns the setting into a device: MTCNN, the embedders and training all ask here.

    Raises:
        ValueError: an invalid setting (see :func:`check_device`), or CUDA asked for on a machine without it.
    """
    import torch

    if isinstance(setting, torch.device):
        return setting
    name = check_device(active().device if setting is None else setting)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device setting {name!r}: PyTorch sees no CUDA GPU on this machine; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int = SEED) -> int:
    """Seed Python, NumPy and PyTorch (the project's one seed call) and return the seed."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # the data notebook runs without torch
        return seed
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return seed


def set_threads(n: int = 2) -> None:
    """Limit PyTorch to ``n`` CPU threads (the course machines have 2 cores)."""
    import torch

    torch.set_num_threads(n)


class LFWNotFound(FileNotFoundError):
    """Raised when no copy of LFW can be found or downloaded."""


def is_lfw_dir(path: Path) -> bool:
    """Return True when ``path`` holds LFW's deep-funneled image folder."""
    return (Path(path) / LFW_IMAGES_SUBDIR).is_dir()


def lfw_candidates(explicit: str | os.PathLike | None = None) -> list[Path]:
    """Return the folders searched for LFW, in order: argument, $NNPRAK_LFW_DIR, data/external/lfw, shared/."""
    cands = []
    if explicit:
        cands.append(Path(explicit))
    if os.environ.get("NNPRAK_LFW_DIR"):
        cands.append(Path(os.environ["NNPRAK_LFW_DIR"]))
    cands += [EXTERNAL_DIR / "lfw", SHARED_LFW_DIR]
    return cands


def find_lfw(explicit: str | os.PathLike | None = None, download: bool = True, timeout: float = 10.0) -> Path:
    """Return the LFW folder: argument → $NNPRAK_LFW_DIR → data/external/lfw → ../shared/datasets/lfw → download.

    Raises:
        LFWNotFound: with the folders searched and where to put the data set, when none holds LFW and the
            download is disabled or fails (no network fails within ``timeout`` seconds).
    """
    searched = lfw_candidates(explicit)
    for cand in searched:
        if is_lfw_dir(cand):
            return Path(os.path.abspath(cand))   # not resolve(): a linked ../shared stays ../shared in the manifest
    if explicit:  # an explicit path that is wrong is a user error: say so instead of downloading
        raise LFWNotFound(f"{explicit} does not hold LFW (expected a '{LFW_IMAGES_SUBDIR}/' folder inside it).")
    target = EXTERNAL_DIR / "lfw"
    why = "download disabled"
    if download:
        try:
            return download_lfw(target, timeout=timeout)
        except (OSError, urllib.error.URLError, tarfile.TarError) as err:
            why = f"download from {LFW_URL} failed: {err}"
    raise LFWNotFound(
        "LFW (deep-funneled) was not found. Searched: " + ", ".join(str(c) for c in searched) + f" ({why}). "
        f"Download {LFW_URL}lfw-deepfunneled.tgz and pairs.txt, unpack them into {target} "
        f"(so that {target / LFW_IMAGES_SUBDIR} exists), or set NNPRAK_LFW_DIR to a folder that holds them.")


def download_lfw(target: Path, timeout: float = 10.0) -> Path:
    """Download LFW deep-funneled and its protocol files into ``target`` and return it (atomic: all or nothing)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".lfw-download-", dir=target.parent))
    try:
        for name in LFW_FILES:
            with urllib.request.urlopen(LFW_URL + name, timeout=timeout) as resp, open(tmp / name, "wb") as out:
                shutil.copyfileobj(resp, out)
        with tarfile.open(tmp / "lfw-deepfunneled.tgz") as tar:
            tar.extractall(tmp, filter="data")
        (tmp / "lfw-deepfunneled.tgz").unlink()
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
