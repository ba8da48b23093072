import math

import numpy as np
import pytest
from PIL import Image

from deeplesion.data.context import context_offsets_mm, load_context, plan_context


def _all(n):
    return True


def test_offsets():
    assert context_offsets_mm(3) == [-2.0, 0.0, 2.0]
    assert context_offsets_mm(9, 2.0)[0] == -8.0
    with pytest.raises(ValueError):
        context_offsets_mm(4)


def test_five_mm_interval_interpolates_as_the_papers_do():
    # preprocessing.md: at 5 mm, the -2 mm slice = 0.4 * s(-1) + 0.6 * s(0)
    plan = plan_context(100, 5.0, [-2.0, 0.0, 2.0], _all)
    assert dict(plan[0]) == pytest.approx({99: 0.4, 100: 0.6})
    assert plan[1] == ((100, 1.0),)
    assert dict(plan[2]) == pytest.approx({100: 0.6, 101: 0.4})


def test_linear_and_3dce_weights_differ_only_past_the_first_neighbour():
    offsets = [-4.0, -2.0, 0.0, 2.0, 4.0]
    linear = plan_context(50, 5.0, offsets, _all)
    upstream = plan_context(50, 5.0, offsets, _all, weights="3dce")
    assert linear[1:4] == upstream[1:4]
    assert dict(linear[4]) == pytest.approx({50: 0.2, 51: 0.8})  # 4 mm = 0.8 slices
    assert dict(upstream[4]) == pytest.approx({50: 0.6, 51: 0.4})  # reuses 0.4


def test_integer_offsets_and_unknown_interval():
    assert plan_context(10, 1.0, [-2.0, 0.0, 2.0], _all) == [
        ((8, 1.0),),
        ((10, 1.0),),
        ((12, 1.0),),
    ]
    for bad in (math.nan, 0.0, -1.0):
        assert plan_context(10, bad, [-2.0, 0.0, 2.0], _all) == [((10, 1.0),)] * 3


def test_edge_steps_back_toward_the_key_slice():
    available = set(range(5, 12))
    plan = plan_context(10, 1.0, [-4.0, 0.0, 4.0], available.__contains__)
    assert plan == [((6, 1.0),), ((10, 1.0),), ((11, 1.0),)]


def test_load_context_on_real_slices(real_series_dir, tmp_path):
    images = tmp_path / "Images_png"
    images.mkdir()
    (images / "000062_01_01").symlink_to(real_series_dir)
    stack = load_context(tmp_path, "000062_01_01", 80, 2.5, n_slices=5, step_mm=2.0)

    def raw(n):
        with Image.open(real_series_dir / f"{n:03d}.png") as img:
            return np.array(img).astype(np.float64) - 32768

    # offsets -4,-2,0,2,4 mm at 2.5 mm = -1.6,-0.8,0,0.8,1.6 slices; 82 and 84 exist
    expected = [
        0.6 * raw(78) + 0.4 * raw(79),
        0.8 * raw(79) + 0.2 * raw(80),
        raw(80),
        0.2 * raw(80) + 0.8 * raw(81),
        0.4 * raw(81) + 0.6 * raw(82),
    ]
    assert stack.shape == (5, 512, 512) and stack.dtype == np.float32
    for got, want in zip(stack, expected):
        assert np.allclose(got, want, atol=1e-3)
    edge = load_context(tmp_path, "000062_01_01", 84, 1.0, n_slices=3)
    assert np.array_equal(edge[2], edge[1])  # slice 86 missing -> 85 missing -> key 84
    assert np.allclose(edge[0], raw(82))
