"""Profiles, paths and the LFW look-up order of nnprak.config."""
import time

import pytest

from nnprak import config, data


def test_profiles_write_to_separate_places():
    default, smoke = config.load("default"), config.load("smoke")
    assert default.paths.results == config.ROOT / "results"
    assert default.paths.manifest == config.ROOT / "data" / "processed" / "manifest.csv"
    # smoke never writes over the committed default outputs
    for folder in (smoke.paths.results, smoke.paths.figures, smoke.paths.processed, smoke.paths.models):
        assert (config.ROOT / "build" / "smoke") in folder.parents
    assert smoke.max_people == 5 and default.max_people is None
    assert config.active() is smoke


def test_profile_from_environment_and_bad_profile(monkeypatch):
    monkeypatch.setenv("NNPRAK_PROFILE", "smoke")
    assert config.load().profile == "smoke"
    assert config.load("default").profile == "default"  # the argument wins
    monkeypatch.setenv("NNPRAK_PROFILE", "fast")
    with pytest.raises(ValueError, match="NNPRAK_PROFILE"):
        config.load()


def test_overrides():
    cfg = config.load("smoke", source="raw", seed=7)
    assert (cfg.source, cfg.seed, cfg.profile) == ("raw", 7, "smoke")


def test_lfw_lookup_order(tmp_path, monkeypatch, lfw_dir):
    fake = tmp_path / "mylfw"
    (fake / config.LFW_IMAGES_SUBDIR).mkdir(parents=True)
    # the explicit argument wins over everything
    assert config.find_lfw(fake, download=False) == fake.resolve()
    # then NNPRAK_LFW_DIR, before the shared folder
    monkeypatch.setenv("NNPRAK_LFW_DIR", str(fake))
    assert config.find_lfw(download=False) == fake.resolve()
    # an environment variable that points nowhere falls through to the next candidate (the real LFW)
    monkeypatch.setenv("NNPRAK_LFW_DIR", str(tmp_path / "nothing"))
    assert config.find_lfw(download=False) == lfw_dir


def test_linked_lfw_keeps_the_link_path(tmp_path, lfw_dir):
    """A ../shared that is a symbolic link must not leak its target into the committed manifest's paths."""
    link = tmp_path / "linked_lfw"
    link.symlink_to(lfw_dir, target_is_directory=True)
    found = config.find_lfw(link, download=False)
    assert found == link and found.is_absolute()
    img = next((found / config.LFW_IMAGES_SUBDIR / "Aaron_Eckhart").glob("*.jpg"))
    assert "linked_lfw" in data.rel_path(img) and data.abs_path(data.rel_path(img)).is_file()


def test_lfw_missing_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("NNPRAK_LFW_DIR", raising=False)
    monkeypatch.setattr(config, "EXTERNAL_DIR", tmp_path / "external")
    monkeypatch.setattr(config, "SHARED_LFW_DIR", tmp_path / "shared")
    with pytest.raises(config.LFWNotFound) as err:
        config.find_lfw(download=False)
    msg = str(err.value)
    assert str(tmp_path / "external" / "lfw") in msg and "NNPRAK_LFW_DIR" in msg and "lfw-deepfunneled.tgz" in msg
    with pytest.raises(config.LFWNotFound, match="does not hold LFW"):
        config.find_lfw(tmp_path / "wrong", download=False)


def test_lfw_download_failure_is_fast_and_clear(tmp_path, monkeypatch):
    monkeypatch.delenv("NNPRAK_LFW_DIR", raising=False)
    monkeypatch.setattr(config, "EXTERNAL_DIR", tmp_path / "external")
    monkeypatch.setattr(config, "SHARED_LFW_DIR", tmp_path / "shared")
    monkeypatch.setattr(config, "LFW_URL", "http://127.0.0.1:9/")  # discard port: nothing listens
    start = time.perf_counter()
    with pytest.raises(config.LFWNotFound, match="download from http://127.0.0.1:9/ failed"):
        config.find_lfw(timeout=5)
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "external" / "lfw").exists()  # nothing half-downloaded is left as "LFW"
