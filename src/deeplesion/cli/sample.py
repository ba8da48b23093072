"""Commands: sample, demo."""

from __future__ import annotations

import json
from pathlib import Path

import click

from deeplesion.cli._common import console, fail_cleanly, progress_bar
from deeplesion.data.sample import write_sample
from deeplesion.demo import run_demo


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Same seed, same bytes.")
def sample(out: Path, seed: int) -> None:
    """Write a small synthetic dataset in the release layout to OUT."""
    with fail_cleanly(), progress_bar("writing slices", None) as update:
        write_sample(out, seed, progress=update)
    console.print(f"synthetic sample written to {out} (DL_info.csv, Images_png/)")


@click.command()
@click.option(
    "--out",
    "out_dir",
    default="deeplesion-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder.",
)
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Use this dataset root instead of the synthetic sample.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic sample.")
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
    stats_path = out_dir / "stats" / "stats.json"
    if stats_path.is_file():
        s = json.loads(stats_path.read_text())
        console.print(
            f"data: {s['lesions']} lesions on {s['key_slices']} key slices, "
            f"{s['studies']} studies, {s['patients']} patients"
        )
    froc_path = out_dir / "evaluation" / "evaluation.json"
    if froc_path.is_file():
        e = json.loads(froc_path.read_text())
        console.print(
            f"evaluation of noisy synthetic predictions ({e['split']} split): "
            f"average sensitivity {e['average']:.3f} at 0.5-4 FPs per image"
        )
