"""RECIST measurement in mm, fitted ellipse, distances between lesions."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from deeplesion.data.annotations import load_lesions
from deeplesion.data.measurement import (
    BODY_LENGTH_MM,
    MeasurementError,
    fitted_ellipse,
    lesion_distance,
    measure,
)
from deeplesion.data.sample import sample_lesions
from deeplesion.errors import DeepLesionError


@pytest.fixture(scope="module")
def template():
    return sample_lesions()[0][0]


def test_real_val_diameters_mm_match_pixel_diameters_times_spacing(real_val_csv):
    table = load_lesions(real_val_csv)
    assert len(table) == 4889
    worst_mm = 0.0
    for lesion in table:
        m = measure(lesion)
        long_px, short_px = lesion.diameters_px
        sx = lesion.spacing_mm[0]
        worst_mm = max(worst_mm, abs(m.long_mm - long_px * sx), abs(m.short_mm - short_px * sx))
        # the release's end points are rounded; their lengths agree to a hundredth of a pixel
        assert m.discrepancy_px < 0.01, lesion.file_name
    # A hundredth of a pixel is at most 0.01 mm at the release's spacings (< 1 mm/px).
    assert worst_mm < 0.01


def test_x_and_y_spacing_are_applied_separately(template):
    # Long axis vertical (10 px along y), short axis horizontal (4 px along x).
    lesion = replace(
        template,
        spacing_mm=(0.5, 2.0, 5.0),
        diameters_px=(10.0, 4.0),
        recist_px1=(100.0, 95.0, 100.0, 105.0, 98.0, 100.0, 102.0, 100.0),
    )
    m = measure(lesion)
    assert m.long_mm == pytest.approx(10 * 2.0)
    assert m.short_mm == pytest.approx(4 * 0.5)
    assert m.axes_angle_deg == pytest.approx(90.0)
    assert m.area_mm2 == pytest.approx(math.pi / 4 * 20.0 * 2.0)


def test_fitted_ellipse(template):
    lesion = replace(
        template,
        spacing_mm=(0.8, 0.8, 1.0),
        recist_px1=(10.0, 20.0, 30.0, 20.0, 20.0, 15.0, 20.0, 25.0),
    )
    e = fitted_ellipse(lesion)
    assert e.center_px1 == pytest.approx((20.0, 20.0))
    assert (e.semi_long_px, e.semi_short_px) == pytest.approx((10.0, 5.0))
    assert e.angle_deg == pytest.approx(0.0)
    assert e.area_mm2 == pytest.approx(math.pi * 8.0 * 4.0)


def test_distance_in_one_series_uses_slices_and_spacing(template):
    a = replace(
        template,
        key_slice_index=10,
        spacing_mm=(0.7, 0.7, 5.0),
        recist_px1=(90.0, 100.0, 110.0, 100.0, 100.0, 95.0, 100.0, 105.0),
    )
    b = replace(
        template,
        row_index=99,
        key_slice_index=13,
        spacing_mm=(0.7, 0.7, 5.0),
        recist_px1=(120.0, 140.0, 140.0, 140.0, 130.0, 135.0, 130.0, 145.0),
    )
    d = lesion_distance(a, b)
    assert d.method == "series"
    expected = math.sqrt((30 * 0.7) ** 2 + (40 * 0.7) ** 2 + (3 * 5.0) ** 2)
    assert d.mm == pytest.approx(expected)


def test_distance_across_studies_uses_normalised_location(template):
    a = replace(
        template,
        study_index=1,
        location_norm=(0.5, 0.5, 0.5),
        image_size=(512, 512),
        spacing_mm=(0.8, 0.8, 5.0),
    )
    b = replace(
        template,
        study_index=2,
        location_norm=(0.6, 0.5, 0.52),
        image_size=(512, 512),
        spacing_mm=(0.8, 0.8, 5.0),
    )
    d = lesion_distance(a, b)
    assert d.method == "normalised"
    assert d.mm == pytest.approx(math.hypot(0.1 * 512 * 0.8, 0.02 * BODY_LENGTH_MM))


def test_distance_between_patients_refused(template):
    other = replace(template, patient_index=template.patient_index + 1)
    with pytest.raises(MeasurementError) as info:
        lesion_distance(template, other)
    assert isinstance(info.value, DeepLesionError) and isinstance(info.value, ValueError)
