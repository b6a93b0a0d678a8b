"""The anatomical twin's figure and HU tables (ichseq.report.twin).

Small scans (64 px, 3 patients) keep it to the atlas build (~20 s, once per process) and a
few seconds of generation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from ichseq.data.synthetic import SyntheticSpec
from ichseq.errors import DataError
from ichseq.report import twin

SPEC = SyntheticSpec(n_patients=3, n_positive=2, image_size=64, min_slices=28, max_slices=34, seed=0)
BONES = {"cortical bone", "diploe", "petrous bone"}


@pytest.fixture(scope="module")
def tables():
    return twin.hu_tables(SPEC)


def test_levels_figure_is_a_readme_sized_png_with_a_head_in_every_row(tmp_path):
    out = twin.twin_levels_figure(SPEC, twin.showcase_patient(SPEC), tmp_path / "levels.png")
    assert out == tmp_path / "levels.png"
    image = imread(out)
    height, width = image.shape[:2]
    assert 1300 <= width <= 1500 and 500 <= height <= 900
    grey = image[..., :3].mean(axis=2)
    # Three rows of heads on black: a good share of the pixels are lit, with a spread of grey levels.
    assert 0.1 < (grey > 0.1).mean() < 0.8
    assert len(np.unique(np.round(grey, 2))) > 50
    for band in np.array_split(grey[int(0.1 * height):], 3):  # below the heading, one band per difficulty
        assert (band > 0.3).mean() > 0.05
    # The mask outline: pure red pixels somewhere (the patient is drawn with a bleed).
    red = (image[..., 0] > 0.8) & (image[..., 1] < 0.4) & (image[..., 2] < 0.4)
    assert red.sum() > 20


def test_tissue_table_has_brain_csf_and_bone_with_grey_denser_than_white(tables):
    tissues, _ = tables
    assert list(tissues.columns) == list(twin.TISSUE_COLUMNS)
    assert tissues.attrs["patients"] == 3
    assert {"grey matter", "white matter", "csf"} <= set(tissues["reference"])
    assert BONES & set(tissues["tissue"])
    assert (tissues["pixels"] > 0).all()
    median = tissues.set_index("tissue")["median"]
    assert median["grey matter"] > median["white matter"]
    assert median[sorted(BONES & set(tissues["tissue"]))].min() > 300
    # CSF read where there are enough interior pixels for a median (at 64 px the ventricles; the
    # few interior pixels of the thin extra-axial spaces are not a measurement).
    csf = tissues[(tissues["reference"] == "csf") & (tissues["pixels"] >= 50)]
    assert len(csf) and csf["median"].between(-10, 30).all()


def test_in_range_flags_follow_the_measured_medians(tables):
    for frame in tables:
        assert len(frame)
        for row in frame.itertuples():
            if pd.isna(row.published_lo):
                assert pd.isna(row.median_in_range)
            else:
                assert row.median_in_range == (row.published_lo <= row.median <= row.published_hi)
            assert row.q1 <= row.median <= row.q3


def test_values_used_and_ranges_are_the_atlas_ones(tables):
    tissues, _ = tables
    for row in tissues.itertuples():
        used, (lo, hi) = twin.TISSUE_HU[row.reference]
        assert (row.value_used, row.published_lo, row.published_hi) == (used, lo, hi)


def test_blood_table_rows_are_subtypes_and_subdural_stages(tables):
    _, blood = tables
    assert list(blood.columns) == list(twin.BLOOD_COLUMNS)
    assert set(blood["group"]) <= {"subtype", "stage"}
    subtypes = blood[blood["group"] == "subtype"]
    assert set(subtypes["bleed"]) <= set(twin.SUBTYPE_ABBREVIATIONS) and len(subtypes)
    assert (blood["bleeds"] >= 1).all() and (blood["pixels"] > 0).all()
    acute = subtypes[subtypes["bleed"] != "Subdural"]
    assert (acute["published_lo"] == 50).all() and (acute["published_hi"] == 90).all()


def test_histogram_statistics_are_numpy_s():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000):
        values = rng.integers(-1024, 3000, n)
        hists = twin._Histograms()
        hists.add("x", values)
        stats = twin._stats(hists.counts["x"])
        assert stats["median"] == np.median(values) and stats["pixels"] == n
        assert np.isclose(stats["q1"], np.quantile(values, 0.25)) and np.isclose(stats["q3"], np.quantile(values, 0.75))
        assert np.isclose(stats["mean"], values.mean()) and np.isclose(stats["sd"], values.std())


def test_markdown_and_html_hold_both_tables(tables, html_tables):
    tissues, blood = tables
    markdown = twin.hu_markdown(tissues, blood)
    assert "| grey matter" in markdown and "in range" in markdown
    pages = html_tables(twin.hu_html(tissues, blood))
    assert len(pages) == 2
    header, *rows = pages[0]
    assert header[0] == "tissue" and "in range" in header and len(rows) == len(tissues)
    flags = [row[header.index("in range")] for row in rows]
    assert flags == ["yes" if ok else "no" for ok in tissues["median_in_range"]]


def test_the_cartoon_generator_is_refused():
    cartoon = SyntheticSpec(n_patients=2, n_positive=1, image_size=48, min_slices=8, max_slices=8, generator="cartoon")
    with pytest.raises(DataError, match="anatomical"):
        twin.tissue_hu_table(cartoon)
