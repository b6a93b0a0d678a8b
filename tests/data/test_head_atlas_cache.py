"""The head atlas's on-disk cache (built once, memory-mapped by every later process) and the
twin's two fast paths over it: the slab look-up through torch's grid_sample and the coarse
pose mapping, each against the plain computation it replaces."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from ichseq.data import head_atlas as atlas_module
from ichseq.data.head_atlas import ATLAS_FIELDS, GRID_ORIGIN_MM, GRID_SHAPE, atlas_cache_dir, head_atlas, slab_atlas
from ichseq.data.twin import AIR_HU, _draw_pose, _sample_slab_hu, _slice_grid, _trilinear


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True) for f in ATLAS_FIELDS)


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ICHSEQ_CACHE_DIR", str(tmp_path))
    assert atlas_cache_dir().parent == tmp_path / "head-atlas"
    monkeypatch.setenv("ICHSEQ_CACHE_DIR", "off")
    assert atlas_cache_dir() is None
    monkeypatch.delenv("ICHSEQ_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert atlas_cache_dir().parent == tmp_path / "xdg" / "ichseq" / "head-atlas"


def test_a_stored_level_loads_back_identical_and_read_only(tmp_path):
    built = head_atlas(1)
    atlas_module._store_cached(tmp_path, built)
    assert sorted(p.name for p in (tmp_path / "level1").iterdir()) == sorted(f"{f}.npy" for f in ATLAS_FIELDS)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    loaded = atlas_module._load_cached(tmp_path, 1)
    assert loaded is not None and loaded.atrophy == 1 and _same(built, loaded)
    for field in ATLAS_FIELDS:
        array = getattr(loaded, field)
        assert type(array) is np.ndarray and not array.flags.writeable, field
    # The other levels are not there: they are built, not mistaken for this one.
    assert atlas_module._load_cached(tmp_path, 0) is None


def test_a_damaged_cache_is_ignored(tmp_path):
    atlas_module._store_cached(tmp_path, head_atlas(0))
    target = tmp_path / "level0" / "label.npy"
    target.write_bytes(target.read_bytes()[:1000])  # truncated, as by a full disk
    assert atlas_module._load_cached(tmp_path, 0) is None
    np.save(target, np.zeros((4, 4), np.uint8))  # readable, wrong shape
    assert atlas_module._load_cached(tmp_path, 0) is None


def test_a_level_already_in_place_is_kept(tmp_path, monkeypatch):
    """A level folder already there is left as it is; and when another process renames its
    level into place while this one writes, this one's copy is dropped, not left behind."""
    atlas_module._store_cached(tmp_path, head_atlas(0))
    before = (tmp_path / "level0" / "hu.npy").stat().st_mtime_ns
    atlas_module._store_cached(tmp_path, head_atlas(0))
    assert (tmp_path / "level0" / "hu.npy").stat().st_mtime_ns == before

    real_mkdtemp = atlas_module.tempfile.mkdtemp

    def the_other_process_wins(**kwargs):
        staging = real_mkdtemp(**kwargs)
        (tmp_path / "level3").mkdir()
        (tmp_path / "level3" / "hu.npy").write_bytes(b"theirs")
        return staging

    monkeypatch.setattr(atlas_module.tempfile, "mkdtemp", the_other_process_wins)
    atlas_module._store_cached(tmp_path, head_atlas(3))
    assert (tmp_path / "level3" / "hu.npy").read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["level0", "level3"]


def test_an_unwritable_cache_path_warns(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match=r"cannot cache the head atlas.*ICHSEQ_CACHE_DIR"):
        atlas_module._store_cached(blocker / "head-atlas", head_atlas(0))


def test_a_fresh_process_reads_the_cache_this_one_wrote(tmp_path):
    """The version digest is the same in another process, so the level is found, not rebuilt."""
    env = dict(os.environ, ICHSEQ_CACHE_DIR=str(tmp_path))
    folder = tmp_path / "head-atlas"
    code = ("import time; t = time.perf_counter(); from ichseq.data.head_atlas import head_atlas, atlas_cache_dir; "
            "a = head_atlas(2); print(atlas_cache_dir(), time.perf_counter() - t, float(a.hu.sum()))")
    version_dir = folder / atlas_cache_dir().name
    atlas_module._store_cached(version_dir, head_atlas(2))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == str(version_dir)
    assert float(out[2]) == pytest.approx(float(head_atlas(2).hu.sum(dtype=np.float64)), rel=1e-6)
    assert float(out[1]) < 10.0  # read, not built (a build takes 15 s or more)


def test_the_slab_lookup_matches_trilinear_interpolation():
    rng = np.random.default_rng(0)
    volume = slab_atlas(0, 5.0)
    # Points over the whole head and beyond the atlas on every side.
    lo, hi = GRID_ORIGIN_MM - 8, GRID_ORIGIN_MM + np.array(GRID_SHAPE) + 8
    mni = rng.uniform(lo[:, None], hi[:, None], size=(3, 20000)).astype(np.float32)
    fast = _sample_slab_hu(0, 5.0, mni)
    reference = ndi.map_coordinates(volume, mni - GRID_ORIGIN_MM[:, None], order=1, mode="constant", cval=AIR_HU)
    inside = np.all((mni - GRID_ORIGIN_MM[:, None] >= 0) & (mni - GRID_ORIGIN_MM[:, None] <= np.array(GRID_SHAPE)[:, None] - 1), axis=0)
    assert inside.sum() > 10000 and (~inside).sum() > 1000
    assert np.abs(fast[inside] - reference[inside]).max() < 0.05  # HU, float32 rounding
    idx = mni - GRID_ORIGIN_MM[:, None]
    beyond = np.any((idx <= -1) | (idx >= np.array(GRID_SHAPE)[:, None]), axis=0)  # a voxel or more outside
    assert beyond.sum() > 1000 and np.abs(fast[beyond] - AIR_HU).max() < 0.01
    assert np.abs(_trilinear(volume, (mni - GRID_ORIGIN_MM[:, None])[:, inside], AIR_HU) - reference[inside]).max() < 0.05


def test_the_coarse_pose_mapping_is_the_exact_one_at_its_nodes():
    """grid_to_mni is exact where the coarse grid is (every 8th pixel from the first, and the
    last) and smooth between: neighbours differ by about a pixel."""
    pose = _draw_pose(np.random.default_rng(3), "M")
    grid = _slice_grid(129, 1.8, np.linspace(-60.0, 90.0, 7))
    mapped = pose.grid_to_mni(grid)
    exact = pose.to_mni(grid)
    nodes = np.ix_(range(3), range(7), range(0, 129, 8), range(0, 129, 8))
    assert np.abs(mapped[nodes] - exact[nodes]).max() < 1e-3
    step = np.linalg.norm(np.diff(mapped, axis=3), axis=0)
    expected = 1.8 / float(pose.scale.mean())  # the pixel in MNI mm, less the elastic strain
    assert 0.75 * expected < step.min() and step.max() < 1.25 * expected
    assert np.percentile(np.abs(mapped - exact), 99) < 0.6
