"""The skymatch-nb command, end to end in a subprocess and in-process through main()."""

import hashlib
import io as stdio
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from skymatch_nb_ui.cli import main
from skymatch_nb_ui.testing import make_mosaic

SKY = [100, 120, 105, 110, 105, 115]  # the documented 2x3 example
EXPOSURE = ["e1", "e1", "e2", "e3", "e4", "e5"]  # img00 and img01 form one exposure


def write_mosaic(directory, mosaic, exposures=None):
    """One SCI/DQ/ERR file per image (DQ: a few DO_NOT_USE pixels), named after the image."""
    directory.mkdir(exist_ok=True)
    paths = []
    for k, (name, image, wcs) in enumerate(zip(mosaic.names, mosaic.images, mosaic.wcs)):
        primary = fits.PrimaryHDU()
        primary.header["EXPOSURE"] = exposures[k] if exposures else name
        dq = np.zeros(image.shape, np.uint32)
        dq[:3, :3] = 1
        hdul = fits.HDUList([
            primary,
            fits.ImageHDU(image, wcs.to_header(), name="SCI"),
            fits.ImageHDU(dq, name="DQ"),
            fits.ImageHDU(np.ones(image.shape, np.float32), name="ERR"),
        ])
        path = directory / f"{name}.fits"
        hdul.writeto(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli") / "in"
    return write_mosaic(directory, make_mosaic((2, 3), shape=(60, 60), sky=SKY), EXPOSURE)


def digest(paths):
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "skymatch_nb_ui.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def run_concurrently(argvs, cwd):
    procs = [subprocess.Popen([sys.executable, "-m", "skymatch_nb_ui.cli", *map(str, argv)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
             for argv in argvs]
    return [(p, *p.communicate(timeout=120)) for p in procs]


def printed_table(stdout):
    return Table.read(stdout, format="ascii.fixed_width_two_line")


def assert_one_line_error(stderr, match):
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("skymatch-nb: error: "), stderr
    assert match in lines[0], stderr


# -- end to end in a subprocess -----------------------------------------------------------------
def test_match_table_and_subtracted_copies(inputs, tmp_path):
    before = digest(inputs)
    out_dir = tmp_path / "matched"  # created by the command
    table_path = tmp_path / "skies.ecsv"
    proc = run(inputs[0].parent / "img*.fits", "--skymethod", "global+match", "--skystat", "mean",
               "--table", table_path, "--subtract", "--output-dir", out_dir)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    printed = printed_table(proc.stdout)
    assert printed["name"].tolist() == [p.stem for p in inputs]
    np.testing.assert_allclose(printed["sky"], SKY, atol=1e-6)

    written = Table.read(table_path)
    np.testing.assert_allclose(written["sky"], SKY, rtol=0, atol=1e-9)
    assert written["valid"].all() and written.meta["skymethod"] == "global+match"
    # the metadata keep their types: what was done (--subtract), booleans, None (null)
    assert written.meta["subtract"] is True and written.meta["match_down"] is True
    assert written.meta["lower"] is None and written.meta["nclip"] == 5
    assert "subtract: true" in table_path.read_text() and "lower: null" in table_path.read_text()

    assert digest(inputs) == before  # the inputs are untouched
    assert sorted(p.name for p in out_dir.iterdir()) == [p.name for p in inputs]
    for source, sky in zip(inputs, SKY):
        with fits.open(out_dir / source.name) as out, fits.open(source) as src:
            assert [h.name for h in out] == ["PRIMARY", "SCI", "DQ", "ERR"]
            header = out["SCI"].header
            assert header["BKGLEVEL"] == pytest.approx(sky, abs=1e-9)
            assert header["BKGSUB"] is True and header["BKGMETH"] == "global+match"
            np.testing.assert_allclose(out["SCI"].data, src["SCI"].data - header["BKGLEVEL"],
                                       atol=1e-4)
            assert np.abs(out["SCI"].data).max() < 1e-4  # constant skies: nothing is left
            np.testing.assert_array_equal(out["DQ"].data, src["DQ"].data)


def test_refuses_to_overwrite_outputs(inputs, tmp_path):
    table_path = tmp_path / "skies.csv"
    table_path.write_text("precious")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / inputs[2].name).write_text("precious")
    (refused_table, out_t, err_t), (refused_copy, out_c, err_c), (allowed, out_a, err_a) = run_concurrently(
        [
            [*inputs, "--table", table_path],
            [*inputs, "--output-dir", out_dir],
            [*inputs, "--table", table_path, "--output-dir", out_dir, "--overwrite", "--quiet"],
        ],
        cwd=tmp_path,
    )
    assert refused_table.returncode == 2 and refused_copy.returncode == 2
    assert_one_line_error(err_t, "skies.csv")
    assert_one_line_error(err_c, inputs[2].name)
    assert "--overwrite" in err_t and "--overwrite" in err_c
    assert out_t == out_c == ""  # refused before any work
    # the third run (with --overwrite) replaced both; --quiet printed nothing
    assert allowed.returncode == 0, err_a
    assert out_a == ""
    assert len(Table.read(table_path, format="ascii.csv")) == 6
    assert fits.getheader(out_dir / inputs[2].name, "SCI")["BKGSUB"] is False  # no --subtract


@pytest.mark.parametrize("make_argv, match", [
    pytest.param(lambda d: [d / "missing.fits"], "missing.fits", id="missing-file"),
    pytest.param(lambda d: [d / "nothing*.fits"], "matches no file", id="empty-glob"),
    pytest.param(lambda d: [d / "img00.fits", "--skymethod", "best"], "--skymethod", id="skymethod"),
    pytest.param(lambda d: [d / "img00.fits", "--subtract"], "--output-dir", id="subtract-alone"),
    pytest.param(lambda d: [d / "img00.fits", "--group-by", "NOSUCHKEY"], "NOSUCHKEY",
                 id="group-by-keyword"),
    pytest.param(lambda d: [d / "img00.fits", "--table", "t.xyz"], "unknown table format",
                 id="table-format"),
    pytest.param(lambda d: [d / "img00.fits", "--dqbits", "NOT_A_FLAG"], "dqbits", id="dqbits"),
    pytest.param(lambda d: [d / "img00.fits", "--ext", "NOPE"], "extension 'NOPE' not found",
                 id="ext"),
    pytest.param(lambda d: [d / "img00.fits", "--table", "nodir/t.ecsv"], "does not exist",
                 id="table-directory"),
    pytest.param(lambda d: [d / "img00.fits", "--output-dir", d], "holds the inputs themselves",
                 id="output-dir-is-input-dir"),
    pytest.param(lambda d: [d / "img00.fits", "--nclip", "-1"], "nclip", id="nclip"),
])
def test_bad_input_is_one_line_and_exit_2_in_process(inputs, tmp_path, capsys, monkeypatch,
                                                     make_argv, match):
    monkeypatch.chdir(tmp_path)
    assert main([str(a) for a in make_argv(inputs[0].parent)]) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, match)
    assert captured.out == ""


def test_bad_input_in_a_subprocess(inputs, tmp_path):
    d = inputs[0].parent
    cases = {
        "missing.fits": [d / "missing.fits"],
        "--skymethod": [d / "img00.fits", "--skymethod", "best"],
        "--output-dir": [d / "img00.fits", "--subtract"],
        "NOSUCHKEY": [d / "img00.fits", "--group-by", "NOSUCHKEY"],
    }
    for match, (proc, _out, err) in zip(cases, run_concurrently(list(cases.values()), tmp_path)):
        assert proc.returncode == 2, (match, err)
        assert_one_line_error(err, match)


# -- in-process ---------------------------------------------------------------------------------
def test_group_by_keyword_shares_a_sky(inputs, capsys):
    assert main([*map(str, inputs), "--group-by", "EXPOSURE", "--skymethod", "match",
                 "--skystat", "mean"]) == 0
    table = printed_table(capsys.readouterr().out)
    assert table["group"].tolist()[:3] == ["e1", "e1", "e2"]
    assert table["sky"][0] == table["sky"][1]


def test_printed_numbers_have_seven_digits_with_planes_too(inputs, capsys):
    # the planes' columns (slopes, their errors, gradient) printed up to 20 digits
    import re

    assert main([*map(str, inputs), "--skymodel", "plane", "--skystat", "mean"]) == 0
    out = capsys.readouterr().out
    table = printed_table(out)
    assert {"slope_x_err", "gradient"} <= set(table.colnames)
    numbers = re.findall(r"(?<![\w.])-?\d+\.\d+(?:e[-+]\d+)?", out)
    assert numbers and all(len(re.sub(r"e.*|[-.]", "", n).lstrip("0")) <= 7 for n in numbers)


def test_the_written_table_has_the_images_unit_and_the_printed_one_two_header_lines(tmp_path, capsys):
    from astropy import units as u

    m = make_mosaic((1, 2), shape=(40, 40), sky=[3, 4])
    for k, (image, w) in enumerate(zip(m.images, m.wcs)):
        header = w.to_header()
        header["BUNIT"] = "MJy/sr"
        fits.PrimaryHDU(image, header).writeto(tmp_path / f"img{k}.fits")
    assert main([str(tmp_path / "img*.fits"), "--skystat", "mean", "--table",
                 str(tmp_path / "sky.ecsv")]) == 0
    assert Table.read(tmp_path / "sky.ecsv")["sky_err"].unit == u.MJy / u.sr
    assert printed_table(capsys.readouterr().out)["sky"].tolist() == pytest.approx([0, 1], abs=1e-6)


def test_dq_mask_and_no_dq(tmp_path, capsys):
    mosaic = make_mosaic((1, 2), shape=(40, 40), sky=[10, 20])
    mosaic.images[0][:3, :3] = 1e6  # exactly the DO_NOT_USE pixels of write_mosaic
    paths = write_mosaic(tmp_path / "in", mosaic)
    assert main([*map(str, paths), "--skymethod", "local", "--skystat", "mean", "--nclip", "0"]) == 0
    np.testing.assert_allclose(printed_table(capsys.readouterr().out)["sky"], [10, 20])
    assert main([*map(str, paths), "--skymethod", "local", "--skystat", "mean", "--nclip", "0",
                 "--no-dq"]) == 0
    assert printed_table(capsys.readouterr().out)["sky"][0] > 1000
    assert main([*map(str, paths), "--skymethod", "local", "--skystat", "mean", "--nclip", "0",
                 "--dqbits", "DO_NOT_USE", "--ext", "SCI,1"]) == 0
    assert printed_table(capsys.readouterr().out)["sky"][0] > 1000


@pytest.mark.parametrize("suffix, fmt", [(".ecsv", "ascii.ecsv"), (".csv", "ascii.csv"),
                                         (".fits", "fits")])
def test_table_formats_from_the_suffix(inputs, tmp_path, suffix, fmt, capsys):
    path = tmp_path / f"skies{suffix}"
    assert main([*map(str, inputs), "--skymethod", "global+match", "--skystat", "mean",
                 "--table", str(path), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    table = Table.read(path, format=fmt)
    np.testing.assert_allclose(table["sky"], SKY, atol=1e-9)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_warnings_are_one_line_each(tmp_path, capsys):
    mosaic = make_mosaic((1, 2), shape=(40, 40), sky=[100, 110]) + make_mosaic(
        (1, 2), shape=(40, 40), sky=[90, 95], center=(150.1, 2.0), prefix="b")
    paths = write_mosaic(tmp_path / "in", mosaic)
    assert main([*map(str, paths), "--skystat", "mean"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("skymatch-nb: warning: DisconnectedMosaicWarning: ")
    assert "disconnected components" in err[0]


def test_progress_bar_on_a_terminal(inputs, tmp_path, monkeypatch, capsys):
    class Terminal(stdio.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main([*map(str, inputs), "--output-dir", str(tmp_path / "a")]) == 0
    assert "writing" in terminal.getvalue() and "6/6" in terminal.getvalue()

    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert main([*map(str, inputs), "--output-dir", str(tmp_path / "b"), "--quiet"]) == 0
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("skymethod, outcome", [("match", "undefined (nan)"),
                                               ("global+match", "its own local statistic")])
def test_a_single_input_warns_that_there_is_nothing_to_match(inputs, capsys, skymethod, outcome):
    assert main([str(inputs[0]), "--skymethod", skymethod, "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("skymatch-nb: warning: SkyMatchWarning: only one input")
    assert outcome in err[0] and "--skymethod local" in err[0]
    # all images in one group: one input too; local needs no overlap and says nothing
    assert main([*map(str, inputs[:2]), "--group-by", "EXPOSURE", "--quiet"]) == 0  # both e1
    assert "only one input (all 2 images in one group)" in capsys.readouterr().err
    assert main([str(inputs[0]), "--skymethod", "local", "--quiet"]) == 0
    assert main([*map(str, inputs), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_hints_name_the_command_line_options(tmp_path, capsys):
    path = tmp_path / "nowcs.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((5, 5)), name="IMG")]).writeto(path)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "no 2-D image HDU with a celestial WCS")
    assert "Pass --ext to choose one" in err and "ext=" not in err


def test_help_shows_defaults(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--skymethod {local,global,match,global+match}" in text
    assert "(default: mode)" in text and "(default: DQ)" in text
