"""How to cite DeepLesion and what its release says about using the annotations."""

from __future__ import annotations

PAPER = (
    "Yan K, Wang X, Lu L, Summers RM. DeepLesion: automated mining of large-scale lesion "
    "annotations and universal lesion detection with deep learning. "
    "J Med Imaging 5(3):036501, 2018."
)
DOWNLOAD_PAGE = "https://nihcc.app.box.com/v/DeepLesion"
TERMS = (
    "DeepLesion is distributed by the NIH Clinical Center; its terms of use are stated on "
    f"the download page ({DOWNLOAD_PAGE}). The release notes that lesion types and "
    "locations are coarse and for reference only, and that not every lesion is annotated."
)


def citation_note() -> str:
    """The note printed by ``deeplesion info``: the paper to cite and the terms of use."""
    return f"Cite: {PAPER}\nTerms: {TERMS}"
