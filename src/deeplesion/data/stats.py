"""Dataset counts: lesions, key slices, series, studies, patients, splits and types."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from deeplesion.data.annotations import LESION_TYPES, SPLITS, Lesion


def dataset_stats(lesions: Iterable[Lesion]) -> dict:
    """Counts as a JSON-ready dict.

    Studies are distinct (patient, study) pairs; series are distinct series folders.
    """
    lesions = list(lesions)
    by_split = Counter(l.split for l in lesions)
    by_type = Counter(l.type_name for l in lesions)
    return {
        "lesions": len(lesions),
        "key_slices": len({l.file_name for l in lesions}),
        "series": len({l.series_folder for l in lesions}),
        "studies": len({(l.patient_index, l.study_index) for l in lesions}),
        "patients": len({l.patient_index for l in lesions}),
        "noisy": sum(l.possibly_noisy for l in lesions),
        "by_split": {name: by_split.get(name, 0) for name in SPLITS.values()},
        "by_type": {name: by_type.get(name, 0) for name in LESION_TYPES.values()},
    }
