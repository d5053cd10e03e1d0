"""`ckpttool demo`: the whole story on CPU, offline, in about a minute, in a folder of its own.

1. Train stand-in "hub" weights: timm's vit_tiny on scikit-learn's digits at 32 px / patch 8 (a 4x4
   patch grid, as ImageNet's 224 / 16 is 14x14). This stands in for the Hugging Face download,
   which needs a network; `generate` reads it through the same `--weights-file` path.
2. `generate` a random vit_tiny init (seeded) and a pretrained one at 16 px / patch 4, which
   resamples the patch embedding with timm's own function (the CIFAR case in small).
3. `verify` both; then a random file named `..._pretrained_init` is caught: the incident.
4. `backup` the pretrained file, clobber it, `restore` it byte for byte.
5. The pruning runner's gate refuses the random init; then a short gated Refill run on digits.

The library yields one :class:`DemoStep` per step and reports progress inside the long steps
(training, the pruning run) as :class:`DemoProgress` events to a callback; the CLI renders both.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# The stand-in "hub" model: timm's vit_tiny (width 192, 3 heads) with 4 of its 12 blocks, so that
# training it on CPU takes well under a minute; the input geometry is small too.
ARCH = "vit_tiny"
MODEL_KWARGS = {"depth": 4}
SOURCE_GEOMETRY = {"img_size": 32, "patch_size": 8}
TARGET_GEOMETRY = {"img_size": 16, "patch_size": 4}
OLD_GUARD = "blocks.0.attn.qkv.weight:std>0.05"


@dataclass(frozen=True)
class DemoStep:
    """One step of the demo: what it showed, and whether it behaved as it should."""

    title: str
    ok: bool  # the step behaved as designed (a refusal that was meant to happen is ok)
    lines: tuple[str, ...]  # what a person should read
    seconds: float
    data: dict = field(default_factory=dict)  # machine-readable figures


@dataclass(frozen=True)
class DemoProgress:
    """Progress inside a long demo step, for a progress bar."""

    step: str  # "train" (the stand-in weights) | "run" (the pruning run)
    completed: float  # in epochs
    total: float  # in epochs (training may finish early, at its target accuracy)
    detail: str  # e.g. "epoch 3/20, test acc 71.2%"


DemoProgressCallback = Callable[[DemoProgress], None]


def train_standin_weights(path: Path, *, epochs: int = 20, seed: int = 0,
                          progress: DemoProgressCallback | None = None) -> dict:
    """Train vit_tiny (4 blocks) on digits (32 px, patch 8) and save its state dict as safetensors.

    Stops early once test accuracy reaches 90%. The patch embedding gets 10x the learning rate:
    grey 8x8 digits move it far less than ImageNet moves a real one (see _calibration)."""
    import timm
    import torch

    from ckpttool.saving import save_checkpoint
    from ckpttool.verdict import _calibration as cal

    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, **SOURCE_GEOMETRY, **MODEL_KWARGS)
    data = cal.load_digits_data(img_size=SOURCE_GEOMETRY["img_size"], seed=seed, channels=3)
    last_acc: list[float] = []

    def on_progress(p: cal.TrainProgress) -> None:
        if progress is None:
            return
        if p.test_acc is not None:
            last_acc[:] = [p.test_acc]
        acc = f", test acc {last_acc[0]:.1%}" if last_acc else ""
        progress(DemoProgress("train", p.epoch + p.batch / p.batches, p.epochs,
                              f"epoch {p.epoch + 1}/{p.epochs}{acc} (stops at 90%)"))

    info = cal.train_on_digits(
        model, data, epochs=epochs, lr=5e-4, batch=16, seed=seed, target_acc=0.9, lr_scale={"patch_embed": 10.0},
        on_progress=on_progress,
    )
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    sha = save_checkpoint(path, sd, metadata={"note": "ckpttool demo stand-in for hub weights", **SOURCE_GEOMETRY})
    return {"test_acc": info["acc"], "epochs": info["epochs"], "sha256": sha}


def run_demo(workdir: str | Path, *, run_epochs: int = 2, standin_epochs: int = 20,
             progress: DemoProgressCallback | None = None) -> Iterator[DemoStep]:
    """Run the demo in ``workdir`` (created), yielding each step as it finishes.

    Args:
        workdir: folder for every file the demo writes.
        run_epochs: epochs per pruning state in the runner step.
        standin_epochs: most epochs for the stand-in weights (stops at 90% test accuracy).
        progress: called with :class:`DemoProgress` during the long steps.
    """
    from ckpttool.backup import backup_file, restore_backup
    from ckpttool.errors import GateRefusedError
    from ckpttool.generate import GenerateRequest, generate_init
    from ckpttool.verify import verify_file

    work = Path(workdir)
    init_dir = work / "init_model"
    init_dir.mkdir(parents=True, exist_ok=True)
    clock = _Clock()

    weights = work / "standin_hub_weights" / "vit_tiny_digits_32px_patch8.safetensors"
    trained = train_standin_weights(weights, epochs=standin_epochs, progress=progress)
    yield DemoStep(
        "Train stand-in pretrained weights (no network: this replaces the hub download)",
        trained["test_acc"] > 0.8,
        (
            f"vit_tiny (4 blocks) trained on scikit-learn digits at 32 px / patch 8: "
            f"{trained['test_acc']:.1%} test accuracy after {trained['epochs']} epochs",
            f"-> {weights}",
        ),
        clock.lap(),
        trained,
    )

    from ckpttool.generate import parse_model_kwargs

    common = dict(arch=ARCH, dataset="digits", num_classes=10, out_dir=init_dir, **TARGET_GEOMETRY,
                  model_kwargs=parse_model_kwargs(json.dumps(MODEL_KWARGS)))
    rnd = generate_init(GenerateRequest(init="random", seed=0, **common))
    pre = generate_init(GenerateRequest(init="pretrained", weights_file=weights, **common))
    counts = pre.built.origin_counts()
    yield DemoStep(
        "Generate a random and a pretrained init (verdict checked before writing; atomic)",
        rnd.built.verdict.verdict == "random" and pre.built.verdict.verdict == "pretrained",
        (
            f"{rnd.path.name}: {rnd.built.verdict.verdict} (seed 0)",
            f"{pre.path.name}: {pre.built.verdict.verdict}; tensor origins {_fmt_counts(counts)}",
        ),
        clock.lap(),
        {"random": str(rnd.path), "pretrained": str(pre.path), "origins": counts},
    )

    reports = [verify_file(p) for p in (rnd.path, pre.path)]
    yield DemoStep(
        "Verify both (expectation from the file name)",
        all(r.passed for r in reports),
        tuple(
            f"{r.path.name}: {r.verdict.verdict}, expected {r.expected} -> {'PASS' if r.passed else 'FAIL'}"
            for r in reports
        ),
        clock.lap(),
    )

    incoming = work / "incoming"
    incoming.mkdir(exist_ok=True)
    misnamed = incoming / f"{ARCH}_cifar10_pretrained_init.pth.tar"
    shutil.copyfile(rnd.path, misnamed)
    caught = verify_file(misnamed, rules=[OLD_GUARD])
    guard = caught.rules[0]
    yield DemoStep(
        "The incident: a random init named ..._pretrained_init is caught",
        not caught.passed and caught.verdict.verdict == "random",
        (
            f"{misnamed.name}: verdict {caught.verdict.verdict}, expected {caught.expected} -> FAIL (exit 1)",
            f"evidence: {caught.verdict.reason}",
            f"the old guard, for contrast: {guard.message}",
        ),
        clock.lap(),
    )

    rec = backup_file(pre.path, reason="demo: before an accident")
    original = pre.path.read_bytes()
    shutil.copyfile(rnd.path, pre.path)  # the accident: a random file lands on the pretrained name
    clobbered = verify_file(pre.path)
    restored = restore_backup(rec.id, root=init_dir)
    after = verify_file(pre.path)
    yield DemoStep(
        "Backup, accident, restore",
        not clobbered.passed and after.passed and pre.path.read_bytes() == original,
        (
            f"backed up as {rec.id} (sha256 {rec.sha256[:12]}…, verdict {rec.verdict})",
            f"after the accident: {clobbered.verdict.verdict} -> FAIL",
            f"restored byte-identical; the clobbered file was backed up too "
            f"({restored.replaced.id if restored.replaced else 'n/a'}); verdict {after.verdict.verdict} -> PASS",
        ),
        clock.lap(),
    )

    from pruning_runner.config import RunConfig
    from pruning_runner.loop import run_pruning

    base = dict(dataset="digits", method="refill", target="both", rate=0.3, states=3, epochs=run_epochs,
                batch_size=64, lr=5e-4, device="cpu", seed=0, checkpoint_every=0)  # fmt: skip
    try:
        run_pruning(RunConfig(init=str(rnd.path), out=str(work / "runs" / "refused"), **base))
        refused, why = False, "the gate let a random init through"
    except GateRefusedError as e:
        refused, why = True, str(e).splitlines()[0]
    yield DemoStep(
        "The runner's gate refuses the random init",
        refused and not (work / "runs" / "refused").exists(),
        (why,),
        clock.lap(),
    )

    result = run_pruning(RunConfig(init=str(pre.path), out=str(work / "runs" / "refill_digits"), **base),
                         listener=_RunProgress(progress) if progress is not None else None)
    lines = [
        f"state {s['state']}: {s['kept_heads']}/{s['total_heads']} heads, {s['kept_neurons']}/{s['total_neurons']} "
        f"neurons, test acc {s['test_acc_at_best_val']:.1%}"
        for s in result.states
    ]
    lines.append(f"run folder {result.run_dir} (init sha256 {result.init['sha256'][:12]}…, {result.init['verdict']})")
    yield DemoStep(
        "A gated Refill run on digits from the pretrained init",
        result.states[0]["test_acc_at_best_val"] > 0.5,
        tuple(lines),
        clock.lap(),
        {"states": list(result.states)},
    )


def _fmt_counts(counts: dict) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "n/a"


class _RunProgress:
    """Turns the pruning runner's events (pruning_runner.events) into DemoProgress for a bar."""

    def __init__(self, progress: DemoProgressCallback) -> None:
        self.progress = progress
        self.states = self.epochs = 1
        self.state = self.epoch = 0
        self.steps = 1
        self.val = ""

    def __call__(self, event) -> None:
        from pruning_runner import events as ev

        if isinstance(event, ev.RunStarted):
            self.states, self.epochs = event.states, event.epochs
            self._emit(0.0)
        elif isinstance(event, ev.EpochStarted):
            self.state, self.epoch = event.state, event.epoch
            self.steps = max(1, event.steps)
            self._emit(event.start_step / self.steps)
        elif isinstance(event, ev.StepDone):
            self._emit(event.step / self.steps)
        elif isinstance(event, ev.EpochEnded):
            acc = event.metrics.get("val_acc")
            self.val = f", val acc {acc:.1%}" if isinstance(acc, (int, float)) else ""
            self._emit(1.0)

    def _emit(self, epoch_fraction: float) -> None:
        done = self.state * self.epochs + self.epoch + epoch_fraction
        self.progress(DemoProgress("run", done, self.states * self.epochs,
                                   f"state {self.state + 1}/{self.states}, epoch {self.epoch + 1}/{self.epochs}"
                                   f"{self.val}"))


class _Clock:
    def __init__(self) -> None:
        self.t = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return dt


DemoCallback = Callable[[DemoStep], None]
