"""`python -m sparsebert <subcommand>` (sparsebert/cli.py) and what it sets up for every command: the wiring of a
subcommand's module, its one-line errors, the fault injection of the retry tests, the stack dumps of stuck jobs and
glibc's thresholds (sparsebert/allocator.py). In-process, with a stand-in subcommand module."""

from __future__ import annotations

import importlib
import logging
import sys
import types

import pytest

from sparsebert import allocator, cli
from sparsebert.io import UserError


@pytest.fixture
def echo(monkeypatch):
    """A subcommand `echo` whose module records the arguments it runs with and raises on --fail."""
    module = types.ModuleType("echo_subcommand")
    module.calls = []

    def add_arguments(parser):
        parser.add_argument("--word", required=True)
        parser.add_argument("--fail", action="store_true")

    def run(args):
        module.calls.append(vars(args))
        if args.fail:
            raise UserError(f"cannot say {args.word}")

    module.add_arguments, module.run = add_arguments, run
    monkeypatch.setitem(sys.modules, "echo_subcommand", module)
    monkeypatch.setattr(cli, "SUBCOMMANDS", {**cli.SUBCOMMANDS, "echo": ("echo_subcommand", "say a word")})
    for name in ("SPARSEBERT_FAIL_ONCE", "SPARSEBERT_STACKS_AFTER_S"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(allocator, "reuse_freed_memory", lambda: module.calls.append("allocator") or True)
    return module


def test_a_subcommand_runs_its_module_with_its_own_arguments(echo, monkeypatch):
    cli.main(["echo", "--word", "hello"])
    assert echo.calls == ["allocator", {"word": "hello", "fail": False}]
    monkeypatch.setattr(sys, "argv", ["python -m sparsebert", "echo", "--word", "from the command line"])
    cli.main()
    assert echo.calls[-1] == {"word": "from the command line", "fail": False}


def test_no_subcommand_is_a_usage_error(echo, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "sparsebert: error: the following arguments are required: SUBCOMMAND"


def test_a_user_error_is_one_line_and_exit_2(echo, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["echo", "--word", "hi", "--fail"])
    assert stop.value.code == 2 and capsys.readouterr().err == "sparsebert echo: error: cannot say hi\n"


def test_each_subcommands_help_is_its_own(echo, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["echo", "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and out.startswith("usage: sparsebert echo [-h] --word WORD") and "say a word" in out
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: sparsebert [-h] SUBCOMMAND ...\n\n`python -m sparsebert <subcommand>`: one subcommand "
                          "per Snakemake rule.\n")
    listing = " ".join(out.split())  # argparse wraps the lines
    assert all(f"{name} {help_text}" in listing for name, (_, help_text) in cli.SUBCOMMANDS.items())


def test_every_subcommand_names_a_module_that_declares_and_runs_it():
    parser = cli.build_parser()
    for name, (module, _) in cli.SUBCOMMANDS.items():
        assert parser.parse_args([name])._module == module
        loaded = importlib.import_module(module)
        assert callable(loaded.add_arguments) and callable(loaded.run), module


def test_an_injected_failure_exits_75_once_then_the_command_runs(echo, monkeypatch, tmp_path, capsys):
    marker = tmp_path / "a:b" / "markers" / "echo.marker"  # a ':' in the path, folders to make
    monkeypatch.setenv("SPARSEBERT_FAIL_ONCE", f"echo:{marker}")
    with pytest.raises(SystemExit) as stop:
        cli.main(["echo", "--word", "a"])
    assert stop.value.code == 75 and marker.read_text() == "failed once\n" and echo.calls == []
    assert capsys.readouterr().err == "sparsebert echo: injected failure (SPARSEBERT_FAIL_ONCE)\n"
    cli.main(["echo", "--word", "b"])  # the retry
    assert echo.calls[-1]["word"] == "b"
    monkeypatch.setenv("SPARSEBERT_FAIL_ONCE", f"echo:{marker.with_name('second.marker')}")  # its folder exists now
    with pytest.raises(SystemExit):
        cli.main(["echo", "--word", "c"])
    assert marker.with_name("second.marker").exists()


@pytest.mark.parametrize("spec", ["other:{marker}", "echo-{marker}", ""])
def test_the_injection_is_for_its_subcommand_only(echo, monkeypatch, tmp_path, spec):
    monkeypatch.setenv("SPARSEBERT_FAIL_ONCE", spec.format(marker=tmp_path / "m"))
    cli.main(["echo", "--word", "a"])
    assert echo.calls[-1] == {"word": "a", "fail": False} and not (tmp_path / "m").exists()


def test_stuck_jobs_dump_their_stacks_every_n_seconds(echo, monkeypatch):
    dumps = []
    monkeypatch.setattr(cli.faulthandler, "dump_traceback_later", lambda seconds, repeat: dumps.append((seconds, repeat)))
    cli.main(["echo", "--word", "a"])
    assert dumps == []
    monkeypatch.setenv("SPARSEBERT_STACKS_AFTER_S", "2.5")
    cli.main(["echo", "--word", "a"])
    assert dumps == [(2.5, True)]


def test_the_log_says_when_and_who(echo, monkeypatch):
    configured = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: configured.append(kwargs))
    cli.main(["echo", "--word", "a"])
    assert configured == [{"level": logging.INFO, "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}]


# ------------------------------------------------------------------------------------------ glibc's thresholds


class Libc:
    def __init__(self, answer=1):
        self.answer, self.calls = answer, []

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return self.answer


@pytest.fixture
def libc(monkeypatch):
    """A stand-in C library behind ctypes, on Linux with glibc (whatever runs the tests)."""
    fake = Libc()
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: fake)
    return fake


def test_glibc_keeps_blocks_up_to_32_mib_and_trims_above_512_mib(libc):
    assert allocator.reuse_freed_memory() is True
    assert libc.calls == [(-3, 32 * 1024 * 1024), (-1, 512 * 1024 * 1024)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD


def test_a_refusal_is_one_warning_and_false(libc, caplog):
    libc.answer = 0
    with caplog.at_level(logging.WARNING, logger="sparsebert.allocator"):
        assert allocator.reuse_freed_memory() is False
    assert libc.calls == [(-3, 32 * 1024 * 1024)]  # the second is not tried
    assert caplog.messages == ["glibc refused the mmap/trim thresholds: freed activations are unmapped after every step"]


def test_the_c_library_is_looked_up_by_name(libc, monkeypatch):
    opened = []
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: opened.append(name) or libc)
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: "/lib/found/libc.so" if name == "c" else None)
    allocator.reuse_freed_memory()
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: None)  # not found: glibc's usual name
    allocator.reuse_freed_memory()
    assert opened == ["/lib/found/libc.so", "libc.so.6"]


@pytest.mark.parametrize("where", ["macOS", "musl", "no libc", "no mallopt"])
def test_nothing_changes_where_it_cannot(libc, monkeypatch, where):
    if where == "macOS":
        monkeypatch.setattr(allocator.platform, "system", lambda: "Darwin")
    elif where == "musl":
        monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    elif where == "no libc":
        monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: (_ for _ in ()).throw(OSError("not found")))
    else:
        monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: object())
    assert allocator.reuse_freed_memory() is False and libc.calls == []
