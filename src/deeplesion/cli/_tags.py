"""LesaNet tags joined to a DL_info.csv, for the commands that filter or count by tag."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from deeplesion.cli._common import warn


def check_tag_join(csv_path: Path, override: bool, *, quiet: bool = False) -> bool:
    """Whether ``csv_path`` is the official DL_info.csv; refuse another file unless
    ``override`` (then warn, unless ``quiet``, that tags go by row index)."""
    from deeplesion.data.tags import check_official
    from deeplesion.errors import FingerprintError

    try:
        official = check_official(csv_path, override_fingerprint=override)
    except FingerprintError as exc:
        raise click.ClickException(f"{exc} Option: --override-fingerprint.") from None
    if not official and not quiet:
        warn(
            f"{escape(str(csv_path))} is not the official DL_info.csv; tags joined by row "
            "index at your request"
        )
    return official


def load_tagged(
    csv_path: Path, lesanet: Path | None, override: bool, table=None, *, ontology: bool = True
):
    """The lesions of ``csv_path`` with their tags, and the LesaNet files they came from."""
    from deeplesion.data.tags import join_tags, load_lesanet
    from deeplesion.errors import MissingDataError

    check_tag_join(csv_path, override)  # refuse before loading LesaNet
    try:
        lesa = load_lesanet(lesanet, ontology=ontology)
    except MissingDataError as exc:
        raise click.ClickException(f"{exc} Option: --lesanet DIR.") from None
    return join_tags(csv_path, lesa, override_fingerprint=override, table=table), lesa
