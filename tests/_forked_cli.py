"""Run `ckpttool` CLI invocations in forks of one warm Python process.

``python -m ckpttool generate`` spends most of its time importing torch and timm (seconds on a
busy 2-core machine). This helper starts one Python process that imports them once, then forks it
for each invocation: the child sets the invocation's environment, points fd 1/2 at files and calls
``ckpttool.cli.main`` (the console entry point, the same error boundary), so each run is a real
separate process with its own exit status, at the cost of the command's own work only.

Caveat: timm imports huggingface_hub, so huggingface_hub's import-time settings (``HF_ENDPOINT``,
``HF_HUB_DOWNLOAD_TIMEOUT``...) are those of the environment the warm process was started with;
ckpttool itself reads ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` at call time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_SERVER = r"""
import json, os, sys, traceback
import PRELOAD  # the slow imports, once
import ckpttool.cli, ckpttool.verify
reply = sys.stdout
for line in sys.stdin:
    req = json.loads(line)
    reply.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 98
        try:
            os.environ.clear(); os.environ.update(req["env"])
            os.dup2(os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
            os.dup2(os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
            sys.stdout = open(1, "w", closefd=False); sys.stderr = open(2, "w", closefd=False)
            try:
                ckpttool.cli.main(req["args"])
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc(); code = 99
        finally:
            try:
                sys.stdout.flush(); sys.stderr.flush()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    reply.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n"); reply.flush()
"""


class ForkedCli:
    """``run(env, *args) -> (code, stdout, stderr)``; ``close()`` when done."""

    def __init__(self, env: dict[str, str], *, preload: str = "torch, timm, ckpttool.generate"):
        """``preload``: the modules the warm process imports once (`verify` alone needs neither torch nor timm)."""
        self._dir = Path(tempfile.mkdtemp(prefix="ckpttool-forked-cli-"))
        self._proc = subprocess.Popen([sys.executable, "-c", _SERVER.replace("PRELOAD", preload)], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._n = 0

    def run(self, env: dict[str, str], *args: str) -> tuple[int, str, str]:
        self._n += 1
        out, err = self._dir / f"{self._n}.out", self._dir / f"{self._n}.err"
        self._proc.stdin.write(json.dumps({"env": env, "args": list(args), "out": str(out), "err": str(err)}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the warm CLI process died (exit {self._proc.wait()})")
        return json.loads(line)["code"], out.read_text(), err.read_text()

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(timeout=30)
        for p in self._dir.iterdir():
            p.unlink()
        os.rmdir(self._dir)
