r"""The ``skymatch-nb`` command: sky matching of image files from the shell.

    skymatch-nb "data/*_cal.fits" --skymethod global+match --table skies.ecsv \
        --subtract --output-dir matched/
    skymatch-nb jw01234-o001_image3_asn.json --group-by image

Reads the images (FITS: JWST, HST and others, every chip; Roman ASDF; associations) with
`ImageCollection.from_files` (headers and WCS first, pixels when needed), matches their
skies with `ImageCollection.skymatch`, prints one row per image, and optionally writes the
table and copies of the files with the sky recorded the way each file's pipeline records it
(and subtracted).  Exit status: 0 on success, 2 on a bad argument or input (one line on
stderr, no traceback), 130 when interrupted (Ctrl-C), 128 + the signal's number after SIGTERM
or SIGHUP (143, 129).

Outputs are checked before the work starts: the table's and the copies' directories must be
writable (the output directory is created if needed, and removed again if the run fails
before writing into it), and the table may be neither a copy nor an input.  Every file is
written atomically through a temporary file (``.tmp-skymatch-...``, see
`skymatch_nb_ui.io.remove_leftovers`); Ctrl-C, SIGTERM and SIGHUP stop the command cleanly,
removing it; the leftovers of a killed run (SIGKILL) are removed by the next run that writes
to the same directory.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from . import __version__, io
from .engine import SkyMatchParams, SkyMatchWarning

__all__ = ["main"]

PROG = "skymatch-nb"

#: Table formats by file suffix (astropy ``Table.write`` format names).
TABLE_FORMATS = {
    ".ecsv": "ascii.ecsv",
    ".csv": "ascii.csv",
    ".txt": "ascii.fixed_width_two_line",
    ".fits": "fits",
    ".fit": "fits",
    ".html": "ascii.html",
    ".tex": "ascii.latex",
    ".xml": "votable",
    ".vot": "votable",
}

_ERRORS = (ValueError, TypeError, OSError, KeyError, ImportError)


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line (no usage block) and exits as return values."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message} (see {PROG} --help)\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, unless it is None or the option is a flag."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        default = action.default
        if action.nargs == 0 or default in (None, argparse.SUPPRESS) or "%(default)" in help_text:
            return help_text
        return f"{help_text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``skymatch-nb``."""
    parser = _Parser(
        prog=PROG,
        formatter_class=_HelpFormatter,
        description="Measure the sky (background) of overlapping images and make it agree\n"
        "where they overlap, with the semantics of the JWST pipeline's skymatch step.\n"
        "Reads FITS files (JWST _cal, HST _flt/_flc with every chip, any FITS image with a\n"
        "celestial WCS), Roman ASDF files and association files (*_asn.json).\n"
        "Prints one row per image; optionally writes the table and copies of the files.",
        epilog="examples:\n"
        f'  {PROG} "data/*_cal.fits" --skymethod global+match\n'
        f'  {PROG} jw01234-o001_image3_asn.json --group-by image --table skies.ecsv\n'
        f'  {PROG} "hst/*_flc.fits" --subtract --output-dir matched/\n'
        f'  {PROG} a.fits b.fits --group-by VISIT --dqbits "~DO_NOT_USE"\n',
    )
    parser.add_argument("files", nargs="+", metavar="FILES_OR_GLOB",
                        help="image files, glob patterns (quote them to keep the shell off them) "
                        "or association files")

    _add_parameters(parser.add_argument_group("sky matching"))

    inputs = parser.add_argument_group("input")
    inputs.add_argument("--ext", type=_ext, default=None, metavar="EXT",
                        help="science extension: index (1), name (SCI) or name,version (SCI,2); "
                        "default: every SCI, else every 2-D image with a celestial WCS "
                        "looking elsewhere (a mosaic camera's CCDs)")
    dq = inputs.add_mutually_exclusive_group()
    dq.add_argument("--dq-ext", default="DQ", metavar="NAME",
                    help="data-quality extension turned into the good-pixel mask (without "
                    "one, a drizzled image's WHT masks its pixels of weight 0)")
    dq.add_argument("--no-dq", action="store_const", const=None, dest="dq_ext",
                    help="ignore data-quality extensions (and drizzle weight maps)")
    inputs.add_argument("--masks", nargs=2, metavar=("OLD", "NEW"), default=None,
                        help="masks in other files: each input's name with OLD replaced by NEW "
                        "(_ooi_ _ood_: DECam's flags; .fits .weight.fits: SWarp's weights); "
                        "integer values are flags (0 good), float values weights (0 bad)")
    inputs.add_argument("--rates", choices=("auto", "yes", "no"), default="auto",
                        help="compare images in counts (BUNIT ELECTRONS, COUNTS, DN, ADU) as "
                        "count rates, divided by EXPTIME, as AstroDrizzle does: auto (when "
                        "their exposure times differ), yes (always), no (never)")
    inputs.add_argument("--dqbits", default="auto", metavar="BITS",
                        help="DQ flags to ignore (treat as good): a sum such as 4, a list "
                        "4,16 or 4+16, flag names JUMP_DET,OUTLIER, or ~FLAGS for all but "
                        "FLAGS (e.g. ~DO_NOT_USE+NON_SCIENCE); 0: any flag is bad; auto: each "
                        "pipeline's default (JWST ~DO_NOT_USE+NON_SCIENCE, Roman ~DO_NOT_USE, "
                        "others 0)")
    inputs.add_argument("--group-by", default="auto", metavar="RULE",
                        help="which images share one sky: auto (as each pipeline: JWST and HST "
                        "by exposure, others alone), exposure (the detectors/chips of one "
                        "exposure), image (each its own), or a header KEYWORD (upper case) "
                        "whose value is the group")

    output = parser.add_argument_group("output")
    output.add_argument("--table", type=Path, default=None, metavar="FILE",
                        help="write the results table; format from the suffix: "
                        + ", ".join(TABLE_FORMATS))
    output.add_argument("--output-dir", type=Path, default=None, metavar="DIR",
                        help="write copies of the input files here (same names, created if "
                        "needed) with the sky recorded as each pipeline does (BKGLEVEL, "
                        "BKGSUB, BKGMETH; JWST and Roman meta.background; HST MDRIZSKY)")
    output.add_argument("--subtract", action="store_true",
                        help="subtract the sky from the copies' science data (needs --output-dir)")
    output.add_argument("--overwrite", action="store_true",
                        help="replace existing output files")
    output.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars and no table on stdout (warnings and errors "
                        "still go to stderr)")

    execution = parser.add_argument_group("execution (the results are the same whichever)")
    execution.add_argument("--scheduler", type=_scheduler, default="auto", metavar="WHERE",
                           help="where the statistics run: auto (worker processes when there "
                           "is much to measure, else one process), serial, threads, processes, or the "
                           "address of a Dask scheduler such as tcp://host:8786 (needs "
                           "skymatch-nb-ui[dask]; the workers must see the files at the same "
                           "paths); with auto and processes, many files are also read and "
                           "copied by forked worker processes")
    execution.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                           help="threads or local worker processes (default: the CPU cores, "
                           "at most 4)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _add_parameters(group) -> None:
    """Add one option per parameter of `SkyMatchParams`, from its spec.

    ``subtract`` aside: the command never changes its inputs; its ``--subtract`` is about the
    copies it writes.
    """
    for name, spec in SkyMatchParams.specs().items():
        if spec.stage == "output":
            continue
        flag = "--" + name.replace("_", "-")
        if spec.kind == "bool":
            flag = spec.cli_flag or (f"--no-{flag[2:]}" if spec.default else flag)
            group.add_argument(flag, dest=name, action="store_false" if spec.default else "store_true",
                               help=spec.cli_help if spec.default else spec.help)
        elif spec.kind == "choice":
            group.add_argument(flag, choices=spec.choices, default=spec.default, help=spec.help)
        else:
            group.add_argument(flag, type=_NUMBER_TYPES[spec.kind], default=spec.default,
                               metavar=_METAVARS[spec.kind], help=spec.help)


_NUMBER_TYPES = {"int": int, "float": float}
_METAVARS = {"int": "N", "float": "X"}


def _ext(text: str):
    """--ext: '1' -> 1, 'SCI' -> 'SCI', 'SCI,2' -> ('SCI', 2)."""
    name, _, version = text.partition(",")
    if not version:
        return int(name) if name.strip().lstrip("-").isdigit() else name.strip()
    try:
        return name.strip(), int(version)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an index, a name or name,version (e.g. SCI,2); got {text!r}"
        ) from None


def _scheduler(text: str) -> str:
    """--scheduler: a name or an address (checked as the engine checks it)."""
    from .engine._execute import check_scheduler

    try:
        return check_scheduler(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).replace("scheduler must be", "expected")) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run ``skymatch-nb`` with ``argv`` (default: the command line); return the exit status.

    Examples
    --------
    >>> main(["data/*_cal.fits", "--skymethod", "global+match", "--quiet"])  # doctest: +SKIP
    0
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version and argument errors
        return int(done.code or 0)
    with warnings.catch_warnings(), _stop_cleanly_on_signals():
        warnings.simplefilter("always", SkyMatchWarning)  # every run reports its own
        warnings.showwarning = _show_warning
        try:
            _run(args)
        except _ERRORS as error:
            _fail(error)
            return 2
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except Terminated as stop:
            print(f"{PROG}: stopped by {signal.Signals(stop.signum).name}; no temporary file left",
                  file=sys.stderr)
            return 128 + stop.signum
    return 0


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread so that every writer cleans up.

    A BaseException, as KeyboardInterrupt: no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _stop_cleanly_on_signals():
    """Turn SIGTERM and SIGHUP into `Terminated` while the command runs (main thread only).

    The default action of these signals kills the process on the spot, leaving the
    temporary file being written; raised as an exception they unwind through the writers'
    cleanup (`io.atomic_path`).  A second signal is ignored while the first one unwinds.
    """
    previous = {}

    def stop(signum, frame):
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(signum)

    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            previous[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread: leave the signals alone
            break
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args) -> None:
    if args.subtract and args.output_dir is None:
        raise ValueError("--subtract writes sky-subtracted copies and needs --output-dir DIR")
    table_format = _table_format(args.table) if args.table is not None else None
    io.check_dqbits(_dqbits(args.dqbits))
    created = _make_output_dir(args.output_dir)
    try:
        _check_table(args)  # after: the table may go into the new output directory
        _match_and_write(args, table_format)
    except BaseException:
        for directory in reversed(created):  # made by this run, still empty: not left behind
            _remove_if_empty(directory)
        raise


def _match_and_write(args, table_format) -> None:
    from .collection import ImageCollection

    coll = ImageCollection.from_files(args.files, ext=args.ext, dq_ext=args.dq_ext,
                                      dqbits=_dqbits(args.dqbits), group_by=args.group_by,
                                      masks=None if args.masks is None else tuple(args.masks),
                                      rates={"yes": True, "no": False}.get(args.rates, "auto"),
                                      scheduler=args.scheduler, workers=args.workers)
    targets = None
    if args.output_dir is not None:  # refuse bad outputs now, not after a long solve
        targets = coll.copy_targets(args.output_dir, overwrite=args.overwrite,
                                    subtract=args.subtract)
    _check_table_is_no_other_file(args.table, targets, coll)
    _remove_leftovers(args)
    params = {name: getattr(args, name) for name in SkyMatchParams.names("geometry", "statistics", "solve")}
    with _StageBars(enabled=not args.quiet) as bars:
        result = coll.skymatch(**params, progress=bars)
    _warn_if_nothing_to_match(coll, args.skymethod)
    table = coll.to_table(result)
    table.meta["subtract"] = bool(args.subtract)  # what was done to the copies written
    if not args.quiet:
        _print_table(table)
    if args.table is not None:
        _write_table(table, args.table, table_format, overwrite=args.overwrite)
    if targets is not None:
        _write_copies(coll, result, targets, subtract=args.subtract, overwrite=args.overwrite,
                      quiet=args.quiet)


def _warn_if_nothing_to_match(coll, skymethod: str) -> None:
    """A single input (one image, or every image in one group) has no overlap to match."""
    if skymethod not in ("match", "global+match"):
        return
    labels = list(coll.groups.values())
    if len(coll) > 1 and (None in labels or len(set(labels)) > 1):
        return
    what = "one image" if len(coll) == 1 else f"all {len(coll)} images in one group"
    outcome = ("its sky is undefined (nan)" if skymethod == "match"
               else "its sky is its own local statistic")
    warnings.warn(
        f"only one input ({what}): sky matching needs at least two overlapping images or "
        f"groups, so with --skymethod {skymethod} {outcome}. Give more files, or use "
        "--skymethod local for the sky of each image on its own",
        SkyMatchWarning, stacklevel=2,
    )


def _check_table(args) -> None:
    """Refuse a table that cannot be written now, not after a long solve."""
    if args.table is None:
        return
    if not args.table.parent.is_dir():
        raise FileNotFoundError(
            f"--table {str(args.table)!r}: the directory {str(args.table.parent)!r} does not exist"
        )
    if args.table.exists() and not args.overwrite:
        raise FileExistsError(f"{str(args.table)!r} exists; use --overwrite to replace it")
    io.probe_writable(args.table.parent, what=f"--table {str(args.table)!r}")


def _make_output_dir(directory: Path | None) -> list[Path]:
    """Create ``--output-dir`` if needed and check that files can be written in it, now.

    Returns the directories created (outermost first), to be removed if the run fails.
    """
    if directory is None:
        return []
    what = f"--output-dir {str(directory)!r}"
    missing = [p for p in (directory, *directory.parents) if not p.exists()][::-1]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise type(exc)(
            f"{what}: cannot create the directory ({exc.strerror or exc}); choose another one"
        ) from None
    try:
        io.probe_writable(directory, what=what)
    except OSError:
        for made in reversed(missing):
            _remove_if_empty(made)
        raise
    return missing


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


def _check_table_is_no_other_file(table: Path | None, copies, coll) -> None:
    """Refuse a table whose path is one of the copies' or one of the inputs'.

    With --overwrite the copy would silently replace the table (or the table an input).
    """
    if table is None:
        return
    where = os.path.realpath(table)
    for copy in copies or ():
        if os.path.realpath(copy) == where:
            raise ValueError(
                f"--table {str(table)!r} is also the path of a copy written to --output-dir "
                f"({str(copy)!r}): the copy would replace the table. Give the table another "
                "name or directory"
            )
    for source in coll.table["file"].values:
        if source and os.path.realpath(source) == where:
            raise ValueError(
                f"--table {str(table)!r} is one of the input files: the command never changes "
                "its inputs. Give the table another name or directory"
            )


def _remove_leftovers(args) -> None:
    """Remove the temporary files killed runs left where this one writes (see io._temp)."""
    folders = {p for p in (args.output_dir, args.table.parent if args.table else None) if p}
    for folder in sorted(folders):
        removed = io.remove_leftovers(folder)
        if removed and not args.quiet:
            print(f"{PROG}: removed {len(removed)} temporary file(s) that an interrupted run "
                  f"left in {str(folder)!r}", file=sys.stderr)


def _dqbits(text: str):
    return int(text) if text.strip().isdigit() else text


def _table_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ValueError(
            f"--table {str(path)!r}: unknown table format {suffix or '(no suffix)'!r}; use one of "
            + ", ".join(TABLE_FORMATS)
        )
    return TABLE_FORMATS[suffix]


def _print_table(table) -> None:
    shown = table.copy(copy_data=False)
    for name in shown.colnames:  # every float to 7 digits (the planes' errors printed 20)
        if shown[name].dtype.kind == "f":
            shown[name].format = ".7g"
        shown[name].unit = None  # (two header lines, as before: the written table has them)
    print("\n".join(shown.pformat(max_lines=-1, max_width=-1)))


def _write_table(table, path: Path, table_format: str, *, overwrite: bool) -> None:
    from astropy.io.fits.verify import VerifyWarning

    with io.atomic_path(path, overwrite=overwrite) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)  # long meta keys become HIERARCH cards
        table.write(tmp, format=table_format)


def _write_copies(coll, result, targets, *, subtract: bool, overwrite: bool, quiet: bool) -> None:
    from .engine._execute import release_process_pools

    directory = targets[0].parent  # write_fits creates it, as it does for the API
    release_process_pools()  # done with: their threads would keep the copies on one core
    bar = None if quiet else _progress_bar(len(targets))
    coll.write_copies(directory, result, subtract=subtract, overwrite=overwrite, progress=bar)
    if not quiet:
        print(f"{PROG}: wrote {len(targets)} file(s) to {str(directory)!r}", file=sys.stderr)


def _progress_bar(total: int):
    """A tqdm progress bar on stderr, or None without tqdm (pip install skymatch-nb-ui[cli])."""
    tqdm = _tqdm()
    if tqdm is None:
        return None
    from functools import partial

    return partial(tqdm, total=total, desc="writing", unit="file", file=sys.stderr, disable=None)


class _StageBars:
    """A progress bar per stage of the engine on stderr (none without tqdm, or when quiet).

    Called with the engine's `Progress` values; a stage that had nothing to do (cached)
    shows no bar.
    """

    UNITS: ClassVar[dict] = {"geometry": "step", "statistics": "stat", "solve": "solve",
                             "subtract": "image"}

    def __init__(self, *, enabled: bool):
        self._tqdm = _tqdm() if enabled else None
        self._bar = None
        self._stage = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._close()

    def __call__(self, progress) -> None:
        if self._tqdm is None:
            return
        if progress.stage != self._stage:
            self._close()
            self._stage = progress.stage
            if progress.done == progress.total:
                return  # cached: nothing to show
            self._bar = self._tqdm(total=progress.total, desc=progress.stage, file=sys.stderr,
                                   unit=self.UNITS.get(progress.stage, "it"), disable=None,
                                   leave=True)
        if self._bar is not None:
            self._bar.update(progress.done - self._bar.n)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None


def _tqdm():
    """The tqdm bar class, or None without tqdm (pip install skymatch-nb-ui[cli]).

    Without tqdm's monitor thread (``monitor_interval = 0``): while a thread runs, the engine
    does not fork workers (`engine._fork.fork_safe`), and the command's bars would keep its
    work on one core.  (The monitor only redraws bars that wait long between updates.)
    """
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    tqdm.monitor_interval = 0
    return tqdm


#: The library's hints, said in the command line's words.
_HINTS = (("pass overwrite=True", "use --overwrite"), ("Pass ext= ", "Pass --ext "),
          ("pass ext= ", "pass --ext "))


def _fail(error: BaseException) -> None:
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    text = " ".join(str(text).split())
    for api, cli in _HINTS:
        text = text.replace(api, cli)
    print(f"{PROG}: error: {text}", file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())
    print(f"{PROG}: warning: {category.__name__}: {text}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
