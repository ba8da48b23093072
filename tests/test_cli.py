import csv
import json

from click.testing import CliRunner

from deeplesion.cli import main


def test_stats_json_on_real_val(real_val_csv):
    result = CliRunner().invoke(main, ["stats", str(real_val_csv), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert (
        stats["lesions"],
        stats["key_slices"],
        stats["series"],
        stats["studies"],
        stats["patients"],
        stats["noisy"],
    ) == (4889, 4793, 2193, 1599, 703, 2)
    assert stats["by_split"] == {"train": 0, "val": 4889, "test": 0}
    assert set(stats["by_type"]) >= {"unlabelled", "liver", "lung", "bone"}


def test_validate_exit_codes(real_excerpt_csv, tmp_path):
    ok = CliRunner().invoke(main, ["validate", str(real_excerpt_csv)])
    assert ok.exit_code == 0, ok.output
    with open(real_excerpt_csv, newline="") as fh:
        rows = list(csv.reader(fh))
    rows[2][rows[0].index("Slice_range")] = "1, 2"  # line 3: key slice outside its range
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3" in result.output and "Slice_range" in result.output


def test_validate_warnings_fail_only_with_strict(real_val_csv):
    # the val split has one warning (an end point outside its 512 x 512 image), no error
    result = CliRunner().invoke(main, ["validate", str(real_val_csv)])
    assert result.exit_code == 0, result.output
    assert "0 errors, 1 warnings" in result.output
    strict = CliRunner().invoke(main, ["validate", str(real_val_csv), "--strict"])
    assert strict.exit_code == 1


def test_demo_root_without_annotations(tmp_path):
    result = CliRunner().invoke(
        main, ["demo", "--root", str(tmp_path), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert "no DL_info.csv in this folder" in result.output and "Errno" not in result.output


def test_info_says_not_official(real_val_csv):
    result = CliRunner().invoke(main, ["info", str(real_val_csv)])
    assert result.exit_code == 0, result.output
    assert "not the official DL_info.csv" in result.output
    assert "4889 lesions" in result.output


def test_info_on_a_dataset_root(sample_root):
    result = CliRunner().invoke(main, ["info", str(sample_root)])
    assert result.exit_code == 0, result.output
    assert "series folders" in result.output


def test_demo_on_a_root(sample_root, tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--root", str(sample_root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats" / "stats.json").read_text())
    assert stats["lesions"] > 0
    assert "0 errors, 0 warnings" in (out / "validate" / "validation.txt").read_text()


def test_bad_path_gives_a_clean_error(tmp_path):
    missing = tmp_path / "nope.csv"
    result = CliRunner().invoke(main, ["stats", str(missing)])
    assert result.exit_code != 0 and "does not exist" in result.output


def test_stats_warns_about_rows_it_cannot_use(real_excerpt_csv, tmp_path):
    with open(real_excerpt_csv, newline="") as fh:
        rows = list(csv.reader(fh))
    rows[5][rows[0].index("Patient_age")] = "abc"
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    result = CliRunner().invoke(main, ["stats", str(bad), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["lesions"] == len(rows) - 2  # header and the bad row
    assert "1 rows of" in result.stderr and "left out" in result.stderr
    assert "deeplesion validate" in result.stderr


def test_a_library_value_error_is_a_clean_message(real_excerpt_csv):
    """Errors that used to be plain ValueErrors (here: every feature block weighted 0)
    reach the user as one line and exit status 1, not as a traceback."""
    with open(real_excerpt_csv, newline="") as fh:
        first = next(csv.DictReader(fh))["File_name"]
    zero = [a for b in ("location", "size", "type") for a in ("--weight", f"{b}=0")]
    result = CliRunner().invoke(main, ["similar", str(real_excerpt_csv), first, *zero])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # not the ValueError itself
    assert "no feature block left" in result.output and "Traceback" not in result.output


def test_every_command_shows_its_defaults_in_help():
    """The group shows each option's default (the command modules do not say so one by
    one), in nested groups too; an option can still opt out."""
    from deeplesion.analysis.tracks import MatchRule

    growth = CliRunner().invoke(main, ["growth", "--help"], terminal_width=200)
    assert growth.exit_code == 0, growth.output
    assert f"Links costing more are refused.  [default: {MatchRule.max_cost}]" in growth.output
    nested = CliRunner().invoke(main, ["evaluate", "detection3d", "--help"], terminal_width=200)
    assert "--iobb FLOAT RANGE" in nested.output and "[default: 0.3;" in nested.output
    similar = CliRunner().invoke(main, ["similar", "--help"], terminal_width=200)
    tags_line = next(line for line in similar.output.splitlines() if "--tags / --no-tags" in line)
    assert "[default" not in tags_line
