"""The ``deeplesion`` command line. Thin: parses options, calls the library, prints.

Start-up stays light: the group knows each command's name, module and help line, and
imports a command's module (with what that command needs) only when the command runs.
"""

from __future__ import annotations

import importlib

import click

from deeplesion import __version__

#: command name -> (module under ``deeplesion.cli``, attribute, first paragraph of its help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "bodymap": (
        "review",
        "bodymap",
        "Lesions' normalised x against z (head at the top), coloured by type (README Fig. 1).",
    ),
    "classify": (
        "classify",
        "classify_cmd",
        "Predict the type (or tags) of every lesion of a split with a trained classifier.",
    ),
    "demo": (
        "sample",
        "demo",
        "Run every pipeline step on the synthetic sample (or --root) and list the outputs.",
    ),
    "detect": (
        "train",
        "detect_cmd",
        "Run a trained detector on a split's key slices and write its predictions.",
    ),
    "download": (
        "download",
        "download",
        "Download the release zips into DEST: resumable, retried, MD5-verified.",
    ),
    "evaluate": (
        "evaluate",
        "evaluate",
        "Evaluate predictions exactly as the published DeepLesion numbers were computed.",
    ),
    "export-coco": (
        "train",
        "export_coco_cmd",
        "Write key slices and lesions of DL_info.csv as COCO JSON (bbox 0-based x, y, w, h).",
    ),
    "export": (
        "segmentation",
        "export",
        "Exports for segmentation and detection frameworks (nnU-Net v2, MONAI).",
    ),
    "extract": (
        "download",
        "extract",
        "Unpack the Images_png_*.zip files in DEST (or the zip DEST) into ROOT/Images_png/.",
    ),
    "gallery": (
        "review",
        "gallery",
        "A montage of lesion crops grouped by lesion type, labelled a., b., c. ...",
    ),
    "growth": (
        "growth",
        "growth",
        "Link lesions across each patient's studies; tracks and RECIST 1.1 responses.",
    ),
    "info": (
        "core",
        "info",
        "Describe a DL_info.csv, or a dataset root (folder with Images_png/ and DL_info.csv).",
    ),
    "lesions": (
        "lesions",
        "lesions",
        "List lesions of the official DL_info.csv carrying LesaNet tags.",
    ),
    "masks": (
        "segmentation",
        "masks",
        "A mask per lesion from its RECIST marks: label PNGs, NIfTI labels, masks.csv in OUT.",
    ),
    "measure": (
        "measure",
        "measure",
        "RECIST diameters (mm), ellipse area and checks; distances between listed lesions "
        "of the same patient.",
    ),
    "nifti": (
        "volumes",
        "nifti",
        "Write one int16 .nii.gz per contiguous sub-volume of ROOT into OUT (resumable).",
    ),
    "relations": (
        "relations",
        "relations_cmd",
        "Which lesion types (or tags) are annotated together, and again at follow-up.",
    ),
    "render": (
        "review",
        "render",
        "Key slices with their lesions drawn (long axis, short axis, box, label).",
    ),
    "report": (
        "review",
        "report",
        "One self-contained HTML page: counts, distributions, body map, gallery.",
    ),
    "sample": (
        "sample",
        "sample",
        "Write a small synthetic dataset in the release layout to OUT.",
    ),
    "serve": (
        "serve",
        "serve",
        "Browse ROOT's lesions and slices in a web browser (needs the [serve] extra).",
    ),
    "similar": (
        "similar",
        "similar",
        "Find the K lesions most similar to the lesion on FILE_NAME (or a row index).",
    ),
    "stats": (
        "core",
        "stats",
        "Counts of lesions, key slices, series, studies, patients, splits and types.",
    ),
    "store": (
        "volumes",
        "store",
        "Convert the slices training reads from ROOT's PNGs into int16 HU arrays in OUT.",
    ),
    "train-classifier": (
        "classify",
        "train_classifier_cmd",
        "Train a lesion classifier (ResNet-18) on patches of ROOT; validation each epoch.",
    ),
    "train-detector": (
        "train",
        "train_detector_cmd",
        "Train the baseline Faster R-CNN on ROOT; validation FROC after each epoch.",
    ),
    "validate": (
        "core",
        "validate",
        "Check every row of a DL_info.csv; exit 1 when an error (or, with --strict, a "
        "warning) is found.",
    ),
    "verify": (
        "download",
        "verify",
        "Check the files in DEST against the manifest MD5s; exit 1 unless all are complete.",
    ),
    "volumes": (
        "volumes",
        "volumes",
        "Index ROOT: series folders, contiguous sub-volumes, and what does not fit.",
    ),
}


def _show_defaults(command: click.Command) -> None:
    """Show each option's default in its help unless the option says otherwise (so that
    the command modules need not repeat ``show_default=True``)."""
    for param in command.params:
        if isinstance(param, click.Option) and param.show_default is None:
            param.show_default = True
    for sub in getattr(command, "commands", {}).values():
        _show_defaults(sub)


class LazyGroup(click.Group):
    """A group whose commands are imported when used; ``--help`` lists them from
    :data:`COMMANDS` without importing any."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return self.commands.get(cmd_name)
        module, attribute, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(f"deeplesion.cli.{module}"), attribute)
        _show_defaults(command)
        self.add_command(command, cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> object:
        """Run the command; a file the system refuses (permissions, a file where a folder
        belongs, a full disk) ends in a one-line error naming it, not a traceback."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise  # click ends quietly when the reader of stdout has gone
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [
            (
                name,
                click.Command(name, help=COMMANDS[name][2]).get_short_help_str(limit)
                if name in COMMANDS and name not in self.commands
                else self.commands[name].get_short_help_str(limit),
            )
            for name in names
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deeplesion")
def main() -> None:
    """Tools for the NIH DeepLesion CT dataset."""
