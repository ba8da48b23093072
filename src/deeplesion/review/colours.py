"""Colours of the lesion types (RGB hex), shared by the body map, the report and the
explorer; a module of its own so that using them imports no plotting library."""

from __future__ import annotations

#: One colour per coarse type (RGB hex); unlabelled rows are grey.
TYPE_COLOURS = {
    "bone": "#8c564b",
    "abdomen": "#ff7f0e",
    "mediastinum": "#9467bd",
    "liver": "#d62728",
    "lung": "#1f77b4",
    "kidney": "#e377c2",
    "soft tissue": "#2ca02c",
    "pelvis": "#bcbd22",
    "unlabelled": "#b0b0b0",
}
