"""Names from a file cannot forge output (finding 9, and the rich-markup part of 10, of hardening round 2).

The folder built here holds a file name with ESC, form feed, a newline, ``[/]``, ``[bold]`` and the
GitHub property separators; a non-tensor key that redraws the line as a fake PASS; a tensor name
with markup and an ANSI clear-screen; and a pickle whose global's module name carries a newline and
a ``::error`` workflow command. Every output format is checked: text (no control character, names
printed literally), stderr (one ``error:`` line per refused file, nothing GitHub would read as a
command), ``--format github`` (one command per line, properties %-escaped), ``--format junit``
(parses as XML) and ``--format json`` (valid, raw names kept). Then `inspect`, `backup` and
`backup list` with markup in paths and ``--reason``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import _attacks as A
import _names as N
import pytest
from _cli import cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ckpttool
from ckpttool.report.escape import escape_text

SOURCE = Path(ckpttool.__file__).resolve().parents[1]  # the copy under test, for the child process
# "[/]" spans a folder: "sub[" / "]evil..." (a file name cannot hold "/")
EVIL_NAME = "sub[/]evil\x1b[31m\x0c\n::error::x [bold]a:b,c%d\u202e_pretrained.safetensors"
FAKE_PASS = "\x1b[2K\r\x1b[32mPASS\x1b[0m all good\n::error title=forged::x [/]"
EVIL_TENSOR = "blocks.0.[/][bold]\x1b[2J.weight"
EVIL_MODULE = "os\n::error file=forged.py::forged annotation\n"


def _weights(seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    # one body layer large enough to say "random" (a lone head, or fewer entries, is "inconclusive")
    return {"blocks.0.fc.weight": torch.randn(64, 64, generator=gen) * 0.02, "blocks.0.fc.bias": torch.zeros(64)}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("hostile")
    (folder / "sub[").mkdir()
    save_file(_weights(0), str(folder / EVIL_NAME))  # random weights under a 'pretrained' name: FAIL
    torch.save({"state_dict": _weights(1), FAKE_PASS: 1}, folder / "fake_pass.pth")
    save_file({EVIL_TENSOR: _weights(2)["blocks.0.fc.weight"]}, str(folder / "tensor_names.safetensors"))
    A.torch_zip_with_data_pkl(folder / "global.pth", A.global_call_pickle(EVIL_MODULE, "system", ("true",), 4),
                              folder)
    return folder


def assert_clean(text: str) -> None:
    bad = N.UNSAFE.search(text)
    assert bad is None, f"raw {bad.group()!r} in output: {text!r}"


def test_escape_text_leaves_one_visible_line():
    assert escape_text(EVIL_MODULE) == "os\\n::error file=forged.py::forged annotation\\n"
    assert escape_text("a\r\x1b[2J\x00\x7f\x85\u202e\u2066\u2028\udcff\ufffe\té%") == (
        "a\\r\\x1b[2J\\x00\\x7f\\x85\\u202e\\u2066\\u2028\\udcff\\ufffe\\té%")
    assert escape_text("blocks.0.attn.qkv.weight [/] 中文") == "blocks.0.attn.qkv.weight [/] 中文"


def test_text_and_stderr(capsys, hostile):
    code, out, err = cli(capsys, "verify", str(hostile))
    assert code == 2  # the refused global
    assert_clean(out)
    assert_clean(err)
    assert escape_text(str(hostile / EVIL_NAME)) in out  # the path, literally, markup and all
    assert escape_text(FAKE_PASS) in out  # the key is shown as the escapes it is made of
    assert not any(line.startswith("::") for line in out.splitlines())
    # stderr: exactly one line for the one refused file, no forged workflow command
    (line,) = err.splitlines()
    assert line.startswith("error: ") and str(hostile / "global.pth") in line
    assert "os\\n::error file=forged.py" in line


def test_github_format_one_command_per_line(capsys, hostile):
    code, out, err = cli(capsys, "verify", "--format", "github", str(hostile))
    assert code == 2
    assert_clean(out)
    lines = out.splitlines()
    assert len(lines) == 4 and all(re.match(r"::(notice|warning|error) file=", s) for s in lines)
    (evil,) = [s for s in lines if "evil" in s]
    prop = evil.split("::")[1]  # "error file=...,title=..."
    assert "%3A" in prop and "%2C" in prop and "%25" in prop and "\\x1b[31m" in prop and "\\n" in prop
    assert len(err.splitlines()) == 1 and err.startswith("error: ")


def test_junit_is_well_formed_xml(capsys, hostile):
    code, out, _ = cli(capsys, "verify", "--format", "junit", str(hostile))
    assert code == 2
    suite = ET.fromstring(out)
    names = {case.get("name") for case in suite.iter("testcase")}
    assert escape_text(str(hostile / EVIL_NAME)) in names
    (error,) = suite.iter("error")
    assert "os\\n::error file=forged.py" in error.get("message")
    (failure,) = suite.iter("failure")
    assert failure.get("type") == "random"


def test_json_keeps_raw_names_and_escapes_them_as_json(capsys, hostile):
    code, out, _ = cli(capsys, "verify", "--format", "json", str(hostile))
    assert code == 2
    assert_clean(out)  # json.dumps escapes every control character, ensure_ascii the rest
    doc = json.loads(out)
    assert str(hostile / EVIL_NAME) in {f["path"] for f in doc["files"]}  # the data is not altered
    (fake,) = [f for f in doc["files"] if f["path"].endswith("fake_pass.pth")]
    assert FAKE_PASS in fake["non_tensor_keys"]
    assert EVIL_MODULE in doc["errors"][0]["error"]


def test_real_stderr_stream_and_a_name_that_is_not_utf8(hostile, tmp_path):
    """Through a real process (GitHub reads the stderr stream), strict UTF-8 output and a file name
    whose bytes are not UTF-8 (a lone surrogate in Python, which crashed the write)."""
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("global.pth", "fake_pass.pth"):
        (folder / name).write_bytes((hostile / name).read_bytes())
    not_utf8 = os.fsdecode(b"bad\xff\x1b[2J_weights.pth")
    (folder / not_utf8).write_bytes((hostile / "fake_pass.pth").read_bytes())
    env = {**os.environ, "PYTHONPATH": str(SOURCE), "PYTHONIOENCODING": "utf-8:strict",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "ckpttool", "verify", "--format", "github", str(folder)],
                          capture_output=True, env=env, timeout=300, cwd=tmp_path)
    out, err = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")
    assert proc.returncode == 2, err
    assert_clean(out)
    assert_clean(err)
    assert "Traceback" not in err and all(s.startswith("error: ") for s in err.splitlines())
    assert "os\\n::error file=forged.py" in err
    assert "bad\\udcff\\x1b[2J_weights.pth" in out  # judged or refused, it is named safely
    assert len(out.splitlines()) == 3 and all(s.startswith("::") for s in out.splitlines())
    assert len(err.splitlines()) == out.count("title=ckpttool verify%3A unreadable")


def test_inspect_prints_markup_in_tensor_names_and_paths_literally(capsys, hostile):
    code, out, err = cli(capsys, "inspect", str(hostile / "tensor_names.safetensors"))
    assert code == 0, err
    assert_clean(out)
    assert escape_text(EVIL_TENSOR) in out


def test_backup_and_backup_list_print_markup_in_paths_and_reasons_literally(capsys, tmp_path):
    folder = tmp_path / "init[bold]_model"
    folder.mkdir()
    path = folder / "a[" / "]b:cross_mark:.pth"
    path.parent.mkdir()
    path.write_bytes(b"not a checkpoint")
    reason = "[/] [bold]before[/bold] regenerating \x1b[2J"
    code, out, err = cli(capsys, "backup", str(path), "--reason", reason, "--root", str(folder))
    assert code == 0, err
    assert f"copied {path} -> " in out and ":cross_mark:" in out
    for _ in range(2):  # a stored reason used to break the listing for good
        code, out, err = cli(capsys, "backup", "list", "--root", str(folder))
        assert code == 0, err
        assert_clean(out)
        cells = re.sub(r"\s*│\s*", "│", out)  # the table may wrap the reason column: compare words
        for word in ("[/]", "[bold]before[/bold]", "regenerating", "\\x1b[2J", "init[bold]_model"):
            assert word in cells
    (record,) = json.loads(cli(capsys, "backup", "list", "--root", str(folder), "--format", "json")[1])["backups"]
    assert record["reason"] == reason  # stored as given
    code, out, err = cli(capsys, "restore", record["id"], "--root", str(folder))
    assert code == 0, err
    assert f"{path} already holds backup" in out


@pytest.fixture(scope="module")
def base_report(hostile):
    from ckpttool.verify import verify_file

    return verify_file(hostile / "fake_pass.pth")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(min_size=1, max_size=40),
                 st.lists(st.sampled_from(N.FRAGMENTS), min_size=1, max_size=8).map("".join)))
def test_any_name_is_safe_in_every_format(base_report, name):
    assert N.output_problems(base_report, name) == []
