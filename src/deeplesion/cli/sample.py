"""Commands: sample, demo."""

from __future__ import annotations

import json
from pathlib import Path

import click

from deeplesion.cli._common import console, fail_cleanly, progress_bar
from deeplesion.cli._options import EXISTING_DIR, NEW_DIR, out_argument, out_option, seed_option
from deeplesion.data.sample import write_sample
from deeplesion.demo import run_demo


@click.command()
@out_argument
@seed_option("Same seed, same bytes.")
def sample(out: Path, seed: int) -> None:
    """Write a small synthetic dataset in the release layout to OUT."""
    with fail_cleanly(), progress_bar("writing slices", None) as update:
        write_sample(out, seed, progress=update)
    console.print(f"synthetic sample written to {out} (DL_info.csv, Images_png/)")


@click.command()
@out_option("out_dir", NEW_DIR, "Output folder.", default="deeplesion-demo")
@click.option(
    "--root", type=EXISTING_DIR, help="Use this dataset root instead of the synthetic sample."
)
@seed_option("Seed of the synthetic sample.")
def demo(out_dir: Path, root: Path | None, seed: int) -> None:
    """Run every pipeline step on the synthetic sample (or --root) and list the outputs."""
    with fail_cleanly(), console.status("demo") as status:
        written = run_demo(
            out_dir, root=root, seed=seed, progress=lambda name: status.update(f"demo: {name}")
        )
    for name, paths in written.items():
        console.print(f"[bold]{name}[/bold]")
        for path in paths:
            console.print(f"  {path}")
    _headlines(out_dir)
    console.print(f"all outputs under {out_dir}")


def _headlines(out_dir: Path) -> None:
    """A few results of the demo's steps, read back from what they wrote."""
    lines = {
        "stats/stats.json": lambda s: (
            f"data: {s['lesions']} lesions on {s['key_slices']} key "
            f"slices, {s['studies']} studies, {s['patients']} patients"
        ),
        "evaluation/evaluation.json": lambda e: (
            "evaluation of noisy synthetic predictions "
            f"({e['split']} split): average sensitivity {e['average']:.3f} at 0.5-4 FPs per image"
        ),
    }
    for name, line in lines.items():
        if (out_dir / name).is_file():
            console.print(line(json.loads((out_dir / name).read_text())))
