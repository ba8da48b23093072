"""uint8 label volumes on the NIfTI export's grid (same shape, affine and file name).

A label volume of sub-volume ``{folder}_{first:03d}-{last:03d}`` has the header the image
export writes for it (:func:`deeplesion.convert.nifti.nifti_header`), with the data type
uint8, so label voxel (i, j, k) lies on image voxel (i, j, k). Written as one deterministic
gzip stream (zlib level 6, no name, mtime 0) under a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from deeplesion.convert.nifti import Compression, nifti_header, volume_file_name, volume_shape
from deeplesion.data.io import atomic_path
from deeplesion.data.volumes import SubVolume
from deeplesion.errors import InvalidArgumentError

LABEL_DESCRIP = "deeplesion uint8 labels on the grid of the int16 HU export"
_COMPRESSION = Compression("zlib", 6)


def label_header(sub: SubVolume, rows: int, cols: int, layout: str = "project"):
    if sub.spacing_mm is None:
        raise InvalidArgumentError(f"{sub.name}: spacing unknown")
    shape = volume_shape(rows, cols, sub.n_slices, layout)
    hdr = nifti_header(shape, sub.spacing_mm, layout, sub.first_slice, sub.name)
    hdr.set_data_dtype(np.uint8)
    hdr["descrip"] = LABEL_DESCRIP.encode()
    return hdr


def write_label_volume(
    path: str | Path, sub: SubVolume, labels_srk: np.ndarray, layout: str = "project"
) -> str:
    """Write ``labels_srk`` (uint8, ``[slice, row, col]``, slice k = number first + k) as the
    label volume of ``sub``; returns its sha256."""
    labels = np.asarray(labels_srk, dtype=np.uint8)
    if labels.ndim != 3 or labels.shape[0] != sub.n_slices:
        raise InvalidArgumentError(
            f"{sub.name}: labels of shape {labels.shape} for {sub.n_slices} slices"
        )
    hdr = label_header(sub, labels.shape[1], labels.shape[2], layout)
    digest = hashlib.sha256()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        comp = _COMPRESSION.compressobj()
        chunks = [comp.compress(hdr.binaryblock + b"\0\0\0\0")]
        for k in range(labels.shape[0]):
            plane = labels[k] if layout == "project" else np.ascontiguousarray(labels[k].T)
            chunks.append(comp.compress(plane.tobytes()))
        chunks.append(comp.flush())
        for chunk in chunks:
            fh.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def label_file_name(sub: SubVolume) -> str:
    """Same name as the image volume: ``{folder}_{first:03d}-{last:03d}.nii.gz``."""
    return volume_file_name(sub)
