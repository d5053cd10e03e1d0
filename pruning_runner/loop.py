"""The state loop: gate -> model + data -> for each state: train, evaluate, prune, rewind -> records.

Contract (design.md "Runner semantics"): state 0 is dense; each state trains ``epochs`` epochs,
evaluates on the validation split every epoch and reports the test accuracy at the best-validation
epoch; then the method prunes and the survivors are rewound to the init (``lt``) or to the
snapshot after ``rewind_epoch`` epochs of state 0 (``rewind_lt``). Masks are whole groups and are
re-applied after every optimizer step. Between states the model is physically compacted (unless
``compact_between_states`` is off); masks and rewinds always map to the init's indices.

Checkpoints (every ``checkpoint_every`` epochs, at each state's end, and on Ctrl-C mid-epoch) hold
everything needed to continue bit-for-bit on CPU: model, optimizer, schedule step, masks, RSST
penalty step, RNG states, loader position, epoch accumulators, best-so-far and finished states.

Example:
    >>> result = run_pruning(cfg, listener=print)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ckpttool.errors import (
    CheckpointFormatError,
    CkptError,
    DatasetError,
    InvalidArgumentError,
    ResourceExhaustedError,
    RunInterruptedError,
)
from pruning_runner import _dist
from pruning_runner import records as rec
from pruning_runner.checkpoint import (
    FORMAT_VERSION,
    CheckpointWriter,
    capture_rng,
    load_run_checkpoint,
    load_tensors,
    restore_rng,
    save_tensors,
    to_cpu,
)
from pruning_runner.compaction import create_compact_vit, save_compact_model, select_state_dict
from pruning_runner.config import RunConfig, config_to_toml, load_config_file, resolve_config, validate_config
from pruning_runner.events import (
    EpochEnded,
    EpochStarted,
    Listener,
    RunFinished,
    RunStarted,
    StateEnded,
    StepDone,
    null_listener,
)
from pruning_runner.footprint import measure_footprint
from pruning_runner.gate import InitRecord, read_checked_init
from pruning_runner.groups import (
    GroupMasks,
    VitLayout,
    apply_param_masks_,
    create_param_masks,
    group_norms,
    mask_grads_,
    model_params,
)
from pruning_runner.importance import (
    accumulate_taylor_saliency,
    create_importance,
    score_groups,
    unstructured_keep_masks,
)
from pruning_runner.methods import create_pruner
from pruning_runner.methods.rsst import GradientPenalty
from pruning_runner.model import ModelSpec, create_vit, load_init_weights, resolve_model_spec
from pruning_runner.training import autocast_factory, count_correct, create_optimizer, lr_at, resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What a finished run reports."""

    run_dir: Path
    states: tuple[dict, ...]  # summary.json "states" entries
    init: dict  # path, sha256, verdict
    final_model: Path | None  # final_compact.safetensors


@dataclass
class _Position:
    state: int  # state in progress
    epoch: int  # epoch in progress (== epochs: training done, end of state pending)
    step: int  # batches done in that epoch


# Under torchrun the ranks agree on Ctrl-C every this many steps (one tiny MAX all-reduce, one host
# sync) and at every epoch and state end; a single process checks its flag after every step.
INTERRUPT_SYNC_STEPS = 10


class _Interrupt:
    """SIGINT -> a flag the loop acts on at agreed points; a second Ctrl-C raises at once.

    Under torchrun the workers run in their own sessions: a terminal's Ctrl-C reaches torchrun, which
    forwards one SIGINT to every worker (then SIGKILLs them after its shutdown timeout).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._previous = signal.signal(signal.SIGINT, self._handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, self._previous)


def run_pruning(cfg: RunConfig, *, listener: Listener | None = None) -> RunResult:
    """Start a new run (validates everything before creating its folder).

    Raises:
        InvalidArgumentError: bad configuration, init that does not fit, existing run folder.
        GateRefusedError: the init's verdict is refused.
        RunInterruptedError: Ctrl-C (checkpoint written; resume with ``--resume``).
    """
    validate_config(cfg)
    run = _PruningRun(cfg, listener=listener or null_listener)
    with run.leaving_the_group_on_error():
        run.prepare_new()
    return run.execute()


def resume_pruning(run_dir: str | Path, *, listener: Listener | None = None,
                   overrides: dict[str, Any] | None = None) -> RunResult:
    """Continue the run in ``run_dir`` from its latest checkpoint.

    ``overrides`` may change execution-only settings (device, amp, compile, checkpoint_every).
    """
    run_dir = Path(run_dir)
    if not (run_dir / rec.CONFIG).is_file():
        raise InvalidArgumentError(f"{run_dir} is not a run folder (no {rec.CONFIG}); check --resume")
    values = load_config_file(run_dir / rec.CONFIG)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    cfg = resolve_config(None, values)
    run = _PruningRun(cfg, listener=listener or null_listener)
    with run.leaving_the_group_on_error():
        run.prepare_resume(run_dir)
    return run.execute()


class _PruningRun:
    def __init__(self, cfg: RunConfig, *, listener: Listener):
        self.cfg = cfg
        self.listener = listener
        self.device = resolve_device(cfg.device)
        self.dist = _dist.DistInfo(0, 1, 0)
        self.writer = CheckpointWriter()
        self.results: list[dict] = []
        self.best = {"val": -1.0, "test": 0.0, "epoch": -1}
        self.best_weights: dict[str, torch.Tensor] | None = None  # last state: weights at its best-validation epoch
        self.structure: dict = {}  # the reported structure of the state in progress (params, FLOPs, per block)
        self.state_seconds = 0.0
        self.accum: torch.Tensor | None = None
        self.resume_payload: dict | None = None
        self.rewind_sd: dict[str, torch.Tensor] | None = None
        self.model: nn.Module | None = None
        self.train_model: nn.Module | None = None
        self.stopping = False  # every rank agreed to stop (Ctrl-C on any rank)

    # ------------------------------------------------------------------ setup

    @contextmanager
    def leaving_the_group_on_error(self):
        """A run that fails before it starts still leaves the torchrun process group cleanly."""
        try:
            yield
        except BaseException:
            _dist.shutdown(self.dist)
            raise

    def _common_setup(self) -> None:
        cfg = self.cfg
        self.dist = _dist.init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.batch_size % self.dist.world_size:
            raise InvalidArgumentError(
                f"--batch-size {cfg.batch_size} is not divisible by the {self.dist.world_size} processes"
            )
        set_determinism(self.device, cfg.deterministic)
        if cfg.compile:
            known = torch._dynamo.list_backends(exclude_tags=())
            if cfg.compile_backend not in known:
                raise InvalidArgumentError(
                    f"unknown --compile-backend {cfg.compile_backend!r}; choose one of: {', '.join(sorted(known))}"
                )
        self.autocast = autocast_factory(self.device, cfg.amp)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.rate = cfg.prune_rate
        self.pruner = create_pruner(cfg.method, rate=self.rate, target=cfg.target,
                                    minimum_heads=cfg.min_heads_per_layer, ranking=cfg.ranking)
        self.criterion = create_importance(cfg.criterion)

    def _load_splits(self) -> None:
        from pruning_runner.data import load_image_splits

        cfg = self.cfg

        def load():
            return load_image_splits(cfg.dataset, root=cfg.data, val_size=cfg.val_size, seed=cfg.seed,
                                     download=cfg.download, synthetic_size=cfg.synthetic_size)

        if not (cfg.download and self.dist.enabled):
            self.splits = load()
            self._check_val_split()
            return
        # torchrun: rank 0 alone downloads and extracts into the shared folder; the others wait for it
        # (the agreement below is the barrier), then read what it left. Its failure stops every rank.
        failure = None
        if self.dist.is_main:
            try:
                self.splits = load()
            except Exception as e:  # re-raised below, once the other ranks know
                failure = e
        if _dist.any_rank(failure is not None, self.dist, self.device):
            if failure is not None:
                raise failure
            raise DatasetError("rank 0 could not prepare the dataset (its error says why); no rank started")
        if not self.dist.is_main:
            self.splits = load()
        self._check_val_split()

    def _check_val_split(self) -> None:
        """The loader's default split may be too small too (a small synthetic pool)."""
        from pruning_runner.config import check_val_size

        check_val_size(len(self.splits.val_y), f"the {self.cfg.dataset} validation split of")

    def _create_loaders(self) -> None:
        from pruning_runner.data import DeviceLoader

        cfg = self.cfg
        s = self.splits
        img = self.spec.img_size
        per_rank = cfg.batch_size // self.dist.world_size
        common = dict(device=self.device, img_size=img, mean=s.mean, std=s.std, seed=cfg.seed,
                      rank=self.dist.rank, world_size=self.dist.world_size)
        self.train_loader = DeviceLoader(s.train_x, s.train_y, batch_size=per_rank, train=True,
                                         drop_last=True, hflip=s.hflip, **common)
        if len(self.train_loader) == 0:
            raise InvalidArgumentError(
                f"--batch-size {cfg.batch_size} is larger than the training split ({len(s.train_y)} images)"
            )
        self.val_loader = DeviceLoader(s.val_x, s.val_y, batch_size=cfg.eval_batch_size, train=False,
                                       drop_last=False, **common)
        self.test_loader = DeviceLoader(s.test_x, s.test_y, batch_size=cfg.eval_batch_size, train=False,
                                        drop_last=False, **common)
        # Taylor batches: the first few un-augmented training batches, the same every state.
        self.taylor_loader = DeviceLoader(s.train_x, s.train_y, batch_size=per_rank, train=False,
                                          drop_last=True, **common)

    def prepare_new(self) -> None:
        cfg = self.cfg
        run_dir = Path(cfg.out) if cfg.out else rec.default_run_dir(cfg.method, cfg.dataset)
        if run_dir.exists():
            raise InvalidArgumentError(
                f"run folder {run_dir} already exists; pass --resume {run_dir} to continue it, or choose another --out"
            )
        self._common_setup()
        # one read: the tensors judged and hashed are the tensors the model is built from
        checked = read_checked_init(cfg.init, allow_random=cfg.allow_random, allow_partial=cfg.allow_partial)
        init, state_dict, metadata = checked.record, checked.state_dict, checked.metadata
        self._load_splits()  # the dataset fixes num_classes
        self.spec = resolve_model_spec(metadata, num_classes=self.splits.num_classes,
                                       arch=cfg.arch, img_size=cfg.img_size, patch_size=cfg.patch_size)
        torch.manual_seed(cfg.seed)
        model = create_vit(self.spec)
        load = load_init_weights(model, state_dict, source=str(cfg.init))
        self.layout = VitLayout.from_model(model, target=cfg.target, arch=self.spec.arch)  # refuses inexact blocks
        if cfg.target in ("head", "both") and cfg.min_heads_per_layer > self.layout.num_heads:
            raise InvalidArgumentError(
                f"--min-heads-per-layer {cfg.min_heads_per_layer} exceeds the {self.layout.num_heads} heads per block"
            )
        self._create_loaders()
        self.init_record = init
        self.head_reinitialised = load.head_reinitialised
        # The immutable start: a private copy, never bound to a parameter's storage.
        self.init_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.run_dir = run_dir
        self.folder = rec.RunFolder(run_dir)
        self.alive = GroupMasks.full(self.layout)
        self.penalized = GroupMasks.empty(self.layout)
        self.present = GroupMasks.full(self.layout)
        self.pos = _Position(0, 0, 0)
        self.resumed = False
        if self.dist.is_main:
            self._create_folder(init, load)
        _dist.barrier(self.dist)

    def _create_folder(self, init: InitRecord, load) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=False)
        try:
            self.folder.write_text(rec.CONFIG, config_to_toml(self.cfg))
            save_tensors(self.folder.file(rec.INIT), self.init_sd,
                         metadata={**self.spec.to_dict(), "source": init.path, "source_sha256": init.sha256})
            self.folder.write_json(rec.RUN, {
                "init": init.to_dict(),
                "model": self.spec.to_dict(),
                "head_reinitialised": load.head_reinitialised,
                "init_num_classes": load.init_num_classes,
                "method": self.cfg.method,
                "dataset": self.cfg.dataset,
                "target": self.cfg.target,
                "states": self.cfg.states,
                "epochs": self.cfg.epochs,
                "seed": self.cfg.seed,
                "deterministic": self.cfg.deterministic,
                "versions": rec.versions(),
                "device": str(self.device),
                "world_size": self.dist.world_size,
                "started": rec.utc_now(),
                "ended": None,
                "status": "running",
            })
            self.folder.write_text(rec.METRICS, "")
        except BaseException:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            raise

    def prepare_resume(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.folder = rec.RunFolder(run_dir)
        self._common_setup()
        payload = load_run_checkpoint(self.folder.file(rec.CHECKPOINT))
        try:
            info = self.folder.read_json(rec.RUN)
            p = payload["position"]
            self.pos = _Position(int(p["state"]), int(p["epoch"]), int(p["step"]))
            self.spec = ModelSpec.from_dict(info["model"])
            init = info["init"]
            self.init_record = InitRecord(path=init["path"], sha256=init["sha256"], verdict=init["verdict"],
                                          reason=init.get("reason", ""),
                                          untouched_groups=tuple(init.get("untouched_groups", ())), metadata={})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            raise CheckpointFormatError(
                f"the records of {run_dir} ({rec.RUN}, {rec.CHECKPOINT}) are damaged ({reason}); "
                "restore them or start a new run"
            ) from e
        self._check_world_size(payload, info)
        self.head_reinitialised = bool(info.get("head_reinitialised"))
        self.init_sd = load_tensors(self.folder.file(rec.INIT))
        if self.folder.file(rec.REWIND).exists():
            self.rewind_sd = load_tensors(self.folder.file(rec.REWIND))
        self._load_splits()
        self._create_loaders()
        masks = payload["masks"]
        self.alive = GroupMasks.from_state(masks["alive"])
        self.penalized = GroupMasks.from_state(masks["penalized"])
        self.present = GroupMasks.from_state(masks["present"])
        self.layout = VitLayout.from_model(create_vit(self.spec, device="meta"), target=self.cfg.target,
                                           arch=self.spec.arch)
        self.results = list(payload["results"])
        self.best = dict(payload["best"])
        self.best_weights = payload.get("best_weights")
        self.state_seconds = float(payload["state_seconds"])
        self.resume_payload = payload
        self.resumed = True
        if self.dist.is_main:
            self.folder.truncate_metrics(self.pos.state, self.pos.epoch)
            self.folder.update_run(status="running", ended=None, resumed=rec.utc_now(),
                                   world_size=self.dist.world_size)

    def _check_world_size(self, payload: dict, info: dict) -> None:
        """Mid-epoch, each rank's share of the epoch is fixed: only the same number of processes may go on.

        At an epoch boundary nothing is per-rank (every rank draws the same epoch plan), so any
        number that divides the batch may continue. Raised before run.json is touched.
        """
        saved = payload.get("world_size", info.get("world_size", 1))
        saved = saved if isinstance(saved, int) else 1
        if self.pos.step > 0 and saved != self.dist.world_size:
            p = self.pos
            raise InvalidArgumentError(
                f"{self.run_dir} was interrupted mid-epoch (state {p.state}, epoch {p.epoch}, step {p.step}) "
                f"with {saved} process(es), this resume has {self.dist.world_size}; resume it with {saved} "
                f"(torchrun --nproc_per_node {saved}); another number can only continue from an epoch boundary"
            )

    # ------------------------------------------------------------------ state building

    def _build_model(self, weights: dict[str, torch.Tensor]) -> None:
        """Model of the ``present`` structure with ``weights`` (copied in), optimizer, masks, penalty."""
        if self.cfg.compact_between_states:
            model = create_compact_vit(self.spec, self.present)
        else:
            model = create_vit(self.spec)
        model.load_state_dict(weights, strict=True)
        self.model = model.to(self.device)
        params = model_params(self.model)
        self.params = params
        self.pmasks = create_param_masks(params, self.alive, self.present, self.layout)
        apply_param_masks_(params, self.pmasks)
        self.optimizer = create_optimizer(self.model, self.cfg, self.device)
        self.structure = self._measure_structure(self.alive.without(self.penalized))
        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = self.steps_per_epoch * self.cfg.epochs
        self.penalty = None
        if self.penalized.any():
            self.penalty = GradientPenalty(
                params, self.penalized, self.present, self.layout, reg_max=self.cfg.reg_max,
                schedule=self.cfg.reg_schedule, exponent=self.cfg.reg_exponent, total_steps=self.total_steps,
            )
        self.eval_masks = (
            create_param_masks(params, self.alive.without(self.penalized), self.present, self.layout)
            if self.penalized.any() else {}
        )
        train_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=ids)
        self.grad_model = train_model  # gradients averaged over ranks (Taylor scores), never compiled
        if self.cfg.compile:
            # Each state compiles a differently shaped model through the same forward code: dynamo
            # keeps one cache entry per shape on that code, and at its recompile_limit (8) it would
            # silently run every later state eager. The previous states' models are never used again,
            # so their cache entries are dropped before compiling this one.
            torch._dynamo.reset()
            train_model = torch.compile(train_model, backend=self.cfg.compile_backend)
        self.train_model = train_model

    def _rewound_weights(self) -> dict[str, torch.Tensor]:
        source = self.rewind_sd if (self.cfg.rewind == "rewind_lt" and self.rewind_sd is not None) else self.init_sd
        full = GroupMasks.full(self.layout)
        return select_state_dict(source, full, self.present, self.layout)

    def _enter_new_state(self) -> None:
        self.present = self.alive if self.cfg.compact_between_states else GroupMasks.full(self.layout)
        self._build_model(self._rewound_weights())
        self.best = {"val": -1.0, "test": 0.0, "epoch": -1}
        self.best_weights = None
        self.state_seconds = 0.0
        self.accum = None

    def _enter_resumed_state(self) -> None:
        payload = self.resume_payload
        self._build_model(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        note = restore_rng(payload["rng"])
        if note:
            log.warning("%s", note)
        if self.pos.step > 0:  # at an epoch boundary _train_state sets the epoch (any world size)
            self.train_loader.load_state_dict(payload["loader"])
        acc = payload.get("accum")
        self.accum = None
        if acc is not None:
            # the sums of ALL ranks so far: kept by rank 0 alone, so the epoch-end all-reduce counts them once
            self.accum = acc.to(self.device) if self.dist.is_main else torch.zeros_like(acc, device=self.device)
        self.resume_payload = None

    # ------------------------------------------------------------------ main loop

    def execute(self) -> RunResult:
        cfg = self.cfg
        interrupt = _Interrupt()
        try:
            with interrupt.installed():
                self.interrupt = interrupt
                self.listener(RunStarted(
                    run_dir=str(self.run_dir), states=cfg.states, epochs=cfg.epochs, device=str(self.device),
                    resumed=self.resumed, init=self._init_summary(), head_reinitialised=self.head_reinitialised,
                    world_size=self.dist.world_size,
                ))
                if self.resumed:
                    self._enter_resumed_state()
                else:
                    self._enter_new_state()
                    if cfg.rewind == "rewind_lt" and cfg.rewind_epoch == 0:
                        self._take_rewind_snapshot()
                final = None
                while True:
                    self._train_state()
                    if self.pos.state == cfg.states - 1:
                        final = self._finish()
                        break
                    self._end_state()
            self.writer.close()
            if self.dist.is_main:
                self.folder.update_run(status="finished", ended=rec.utc_now())
            _dist.barrier(self.dist)  # no rank leaves the group while another still works
            return RunResult(self.run_dir, tuple(self.results), self._init_summary(), final)
        except RunInterruptedError:
            self.writer.close()
            if self.dist.is_main:
                self.folder.update_run(status="interrupted", ended=rec.utc_now())
            raise
        except BaseException:
            try:
                self.writer.close()
            finally:
                if self.dist.is_main and self.folder.file(rec.RUN).exists():
                    self.folder.update_run(status="failed", ended=rec.utc_now())
            raise
        finally:
            _dist.shutdown(self.dist)

    def _init_summary(self) -> dict:
        r = self.init_record
        return {"path": r.path, "sha256": r.sha256, "verdict": r.verdict}

    def _train_state(self) -> None:
        cfg = self.cfg
        k = self.pos.state
        while self.pos.epoch < cfg.epochs:
            e = self.pos.epoch
            if self.pos.step == 0:
                self.train_loader.set_epoch(k * cfg.epochs + e)
                self.accum = torch.zeros(3, dtype=torch.float64, device=self.device)
            self.listener(EpochStarted(k, e, self.steps_per_epoch, self.pos.step))
            t0 = time.perf_counter()
            start_step = self.pos.step
            try:
                self._train_epoch(k, e)
            except torch.cuda.OutOfMemoryError as err:
                raise ResourceExhaustedError(
                    f"GPU out of memory at --batch-size {cfg.batch_size} (state {k}, epoch {e}); "
                    f"try --batch-size {max(1, cfg.batch_size // 2)}"
                ) from err
            if self.stopping and self.pos.step < self.steps_per_epoch:  # agreed mid-epoch by every rank
                self._save_checkpoint()
                self._raise_interrupted()
            stats = _dist.all_reduce_sum_(self.accum.clone(), self.dist).tolist()  # one host sync per epoch
            train_seconds = time.perf_counter() - t0
            val_acc = self._evaluate(self.val_loader)
            test_acc = self._evaluate(self.test_loader)
            seconds = time.perf_counter() - t0
            self.state_seconds += seconds
            images = (self.steps_per_epoch - start_step) * cfg.batch_size
            line = {
                "state": k, "epoch": e,
                "lr": lr_at(self.pos.step - 1 + e * self.steps_per_epoch, total_steps=self.total_steps,
                            warmup_steps=self._warmup_steps(), base_lr=cfg.resolved_lr, schedule=cfg.schedule),
                "train_loss": stats[0] / max(1.0, stats[2]),
                "train_acc": stats[1] / max(1.0, stats[2]),
                "val_acc": val_acc, "test_acc": test_acc,
                "seconds": round(seconds, 4),
                "images_per_s": round(images / train_seconds, 1) if train_seconds > 0 else None,
            }
            if self.penalty is not None:
                line["rsst_lambda"] = self.penalty.lam((e + 1) * self.steps_per_epoch - 1)
                line["rsst_norm_ratio"] = self._penalized_norm_ratio()
            line.update(self._structure_record())
            if val_acc > self.best["val"]:
                self.best = {"val": val_acc, "test": test_acc, "epoch": e}
                if k == cfg.states - 1:  # the export is the model whose accuracy the last state reports
                    self.best_weights = to_cpu(self.model.state_dict())
            self.pos = _Position(k, e + 1, 0)
            if self.dist.is_main:
                self.folder.append_metrics(line)
            self.listener(EpochEnded(line))
            if k == 0 and cfg.rewind == "rewind_lt" and e + 1 == cfg.rewind_epoch:
                self._take_rewind_snapshot()
            stop = self._agree_stop()  # also a Ctrl-C during the evaluation
            due = cfg.checkpoint_every > 0 and (e + 1) % cfg.checkpoint_every == 0
            if due or e + 1 == cfg.epochs or stop:
                self._save_checkpoint()
            if stop:
                self._raise_interrupted()

    def _warmup_steps(self) -> int:
        return int(round(self.cfg.warmup_epochs * self.steps_per_epoch))

    def _train_epoch(self, k: int, e: int) -> None:
        model = self.train_model
        model.train()
        warmup = self._warmup_steps()
        base = self.cfg.resolved_lr
        for x, y in self.train_loader:
            step_in_state = e * self.steps_per_epoch + self.pos.step
            lr = lr_at(step_in_state, total_steps=self.total_steps, warmup_steps=warmup, base_lr=base,
                       schedule=self.cfg.schedule)
            self._train_step(x, y, lr, step_in_state)
            self.pos.step += 1
            self.listener(StepDone(k, e, self.pos.step))
            if (not self.dist.enabled or self.pos.step % INTERRUPT_SYNC_STEPS == 0) and self._agree_stop():
                break

    def _agree_stop(self) -> bool:
        """Whether any rank got Ctrl-C; every rank gets the same answer and acts on it at the same step."""
        self.stopping = _dist.any_rank(self.interrupt.requested, self.dist, self.device)
        return self.stopping

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, lr: float, step_in_state: int) -> None:
        """One optimizer step: forward/backward, masked grads, RSST penalty, step, masked weights."""
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        with self.autocast():
            logits = self.train_model(x)
            loss = self.loss_fn(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.pmasks:
            mask_grads_(self.params, self.pmasks)
        if self.penalty is not None:
            self.penalty.add_to_grads_(step_in_state)
        self.optimizer.step()
        if self.pmasks:
            apply_param_masks_(self.params, self.pmasks)
        with torch.no_grad():
            n = y.numel()
            self.accum[0] += loss.detach().double() * n
            self.accum[1] += (logits.detach().argmax(dim=1) == y).sum()
            self.accum[2] += n

    @contextmanager
    def _without_penalized(self):
        """Evaluate the structure the state reports: RSST's penalised groups temporarily zeroed."""
        if not self.eval_masks:
            yield
            return
        saved = {n: self.params[n].detach().clone() for n in self.eval_masks}
        apply_param_masks_(self.params, self.eval_masks)
        try:
            yield
        finally:
            with torch.no_grad():
                for n, t in saved.items():
                    self.params[n].copy_(t)

    def _evaluate(self, loader) -> float:
        with self._without_penalized():
            counts = count_correct(self.model, loader, self.autocast, self.device)
        counts = _dist.all_reduce_sum_(counts, self.dist).tolist()
        return counts[0] / max(1, counts[1])

    def _penalized_norm_ratio(self) -> float | None:
        """Mean norm of the penalised groups / mean norm of the kept ones (RSST; should end << 1)."""
        pen_h, pen_n = [], []
        kept_h, kept_n = [], []
        kept = self.alive.without(self.penalized)
        for b in range(self.layout.depth):
            nh, nn_ = group_norms(self.params, self.layout, b, self.present)
            ph = self.penalized.heads[b][self.present.heads[b]].to(nh.device)
            kh = kept.heads[b][self.present.heads[b]].to(nh.device)
            pn = self.penalized.neurons[b][self.present.neurons[b]].to(nh.device)
            kn = kept.neurons[b][self.present.neurons[b]].to(nh.device)
            pen_h.append(nh[ph]), kept_h.append(nh[kh]), pen_n.append(nn_[pn]), kept_n.append(nn_[kn])
        ratios = []
        for pen, kep in ((pen_h, kept_h), (pen_n, kept_n)):
            p, q = torch.cat(pen), torch.cat(kep)
            if p.numel() and q.numel() and float(q.mean()) > 0:
                ratios.append(float(p.mean() / q.mean()))
        return max(ratios) if ratios else None

    # ------------------------------------------------------------------ state ends

    def _measure_structure(self, kept: GroupMasks) -> dict:
        """Parameters, FLOPs per image and per-block counts of the structure ``kept`` (the one a state reports)."""
        fp = measure_footprint(self.spec, kept, self.layout)
        return {"params": fp.params, "flops": fp.flops,
                "kept_heads_per_block": kept.heads.sum(1).tolist(),
                "kept_neurons_per_block": kept.neurons.sum(1).tolist()}

    def _structure_record(self) -> dict:
        return {k: self.structure[k] for k in ("params", "flops", "kept_heads_per_block", "kept_neurons_per_block")}

    def _state_result(self) -> dict:
        kept = self.alive.without(self.penalized)
        return {
            "state": self.pos.state,
            "kept_heads": kept.kept_heads(),
            "total_heads": self.layout.depth * self.layout.num_heads,
            "kept_neurons": kept.kept_neurons(),
            "total_neurons": self.layout.depth * self.layout.mlp_hidden,
            **self._structure_record(),
            "mask": rec.mask_file(self.pos.state),
            "best_val_acc": self.best["val"],
            "test_acc_at_best_val": self.best["test"],
            "best_epoch": self.best["epoch"],
            "seconds": round(self.state_seconds, 3),
            "rsst_norm_ratio": self._penalized_norm_ratio() if self.penalty is not None else None,
        }

    def _record_state(self, result: dict) -> None:
        self.results.append(result)
        if self.dist.is_main:
            kept = self.alive.without(self.penalized)
            self.folder.file(rec.MASKS).mkdir(exist_ok=True)
            save_tensors(self.folder.file(result["mask"]), {"heads": kept.heads, "neurons": kept.neurons},
                         metadata={"state": result["state"], "arch": self.spec.arch})
            self.folder.write_summary(self.results, self._init_summary(), method=self.cfg.method,
                                      dataset=self.cfg.dataset, target=self.cfg.target)
            try:
                self.folder.write_plot(self.results, f"{self.cfg.method} / {self.cfg.dataset} / {self.cfg.target}")
            except CkptError:
                raise
            except Exception as e:  # a plot must never lose a run
                log.warning("could not draw %s: %s", rec.PLOT, e)
        self.listener(StateEnded(result))

    def _scorer(self) -> Callable[[float | None], GroupMasks]:
        cfg = self.cfg

        def score(density: float | None) -> GroupMasks:
            saliency = None
            if cfg.criterion == "taylor":
                batches = _first_batches(self.taylor_loader, cfg.taylor_batches)
                # through DDP: each batch's gradient is the global batch's, as in one process
                saliency = accumulate_taylor_saliency(self.grad_model, self.params, self.layout, batches, self.loss_fn,
                                                      autocast=self.autocast)
            keep = None
            if density is not None:
                keep = unstructured_keep_masks(self.params, self.layout, density,
                                               heads=cfg.target in ("head", "both"),
                                               neurons=cfg.target in ("mlp", "both"))
            return score_groups(self.criterion, self.params, self.layout, self.present, saliency=saliency, keep=keep)

        return score

    def _end_state(self) -> None:
        """Score the TRAINED model, decide the next structure, rewind, enter the next state."""
        result = self._state_result()
        decision = self.pruner.after_state(self.pos.state, self.alive, self.penalized, self._scorer())
        alive, penalized = decision.alive, decision.penalized
        # rank 0 decides; every rank takes its masks (scores are identical anyway)
        for t in (alive.heads, alive.neurons, penalized.heads, penalized.neurons):
            _dist.broadcast_(t, self.dist, self.device)
        self._record_state(result)
        self.alive, self.penalized = alive, penalized
        self.pos = _Position(self.pos.state + 1, 0, 0)
        self._enter_new_state()
        self._save_checkpoint()
        if self._agree_stop():
            self._raise_interrupted()

    def _finish(self) -> Path | None:
        result = self._state_result()
        decision = self.pruner.finish(self.alive, self.penalized)
        self._record_state(result)
        final_path = None
        if self.dist.is_main:
            final_path = self.folder.file(rec.FINAL)
            self._export(final_path, result, decision.alive)
        self.alive, self.penalized = decision.alive, decision.penalized
        self.listener(RunFinished(str(self.run_dir), list(self.results), str(final_path) if final_path else None))
        return final_path

    def _export(self, path: Path, result: dict, keep: GroupMasks) -> None:
        """The last state's best-validation weights, compacted to what it reports, with how they were chosen."""
        weights, weights_of = self.best_weights, "best_val_epoch"
        if weights is None:  # a checkpoint written before the export held the best epoch's weights
            log.warning("no best-validation weights in this run's checkpoint: exporting the last epoch's")
            weights, weights_of = to_cpu(self.model.state_dict()), "last_epoch"
        small = create_compact_vit(self.spec, keep)
        small.load_state_dict(select_state_dict(weights, self.present, keep, self.layout), strict=True)
        dense = self.results[0]
        save_compact_model(path, small, self.spec, keep, extra={
            "run": str(self.run_dir), "init_sha256": self.init_record.sha256, "seed": self.cfg.seed,
            "weights_of": weights_of, "state": result["state"], "epoch": result["best_epoch"],
            "val_acc": result["best_val_acc"], "test_acc": result["test_acc_at_best_val"],
            "params": result["params"], "flops": result["flops"],
            "sparsity": {
                "heads": _removed(result["kept_heads"], result["total_heads"]),
                "neurons": _removed(result["kept_neurons"], result["total_neurons"]),
                "params": _removed(result["params"], dense["params"]),
                "flops": _removed(result["flops"], dense["flops"]),
            },
        })

    def _take_rewind_snapshot(self) -> None:
        self.rewind_sd = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        if self.dist.is_main:
            save_tensors(self.folder.file(rec.REWIND), self.rewind_sd,
                         metadata={"state": 0, "epoch": self.cfg.rewind_epoch})

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self) -> None:
        """Rank 0 writes; every rank calls it (mid-epoch, the running sums are all-reduced first)."""
        accum = None
        if self.accum is not None and self.pos.step > 0:
            accum = _dist.all_reduce_sum_(self.accum.clone(), self.dist)
        if not self.dist.is_main:
            return
        payload = {
            "format_version": FORMAT_VERSION,
            "position": {"state": self.pos.state, "epoch": self.pos.epoch, "step": self.pos.step},
            "model": to_cpu(self.model.state_dict()),
            "optimizer": to_cpu(self.optimizer.state_dict()),
            "scheduler": {"step": self.pos.epoch * self.steps_per_epoch + self.pos.step,
                          "total_steps": self.total_steps},
            "masks": {"alive": self.alive.to_state(), "penalized": self.penalized.to_state(),
                      "present": self.present.to_state()},
            "penalty": {"active": self.penalty is not None,
                        "step": self.pos.epoch * self.steps_per_epoch + self.pos.step,
                        "reg_max": self.cfg.reg_max, "schedule": self.cfg.reg_schedule},
            "rng": capture_rng(),
            "loader": dict(self.train_loader.state_dict()),
            "accum": to_cpu(accum) if accum is not None else None,  # all ranks' sums
            "world_size": self.dist.world_size,
            "best": dict(self.best),
            "best_weights": self.best_weights,
            "results": [dict(r) for r in self.results],
            "state_seconds": self.state_seconds,
        }
        self.writer.submit(self.folder.file(rec.CHECKPOINT), payload)

    def _raise_interrupted(self) -> None:
        self.writer.close()
        p = self.pos
        raise RunInterruptedError(
            f"interrupted at state {p.state}, epoch {p.epoch}, step {p.step}; checkpoint written to "
            f"{self.folder.file(rec.CHECKPOINT)}; continue with: ckpttool run-prune --resume {self.run_dir}"
        )


def _removed(kept: int, total: int) -> float:
    """Fraction removed (0 when there was nothing to remove)."""
    return 1.0 - kept / total if total else 0.0


def set_determinism(device: torch.device, deterministic: bool) -> None:
    """``--deterministic``: deterministic algorithms only (an error where an op has none), no TF32.

    Without it, CPU runs still prefer deterministic algorithms (warnings only) and CUDA runs use
    TF32 matmuls and convolutions for speed.
    """
    if deterministic:
        # cuBLAS needs a fixed workspace for reproducible matmuls; read when its handle is created
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    elif device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _first_batches(loader, n: int):
    loader.set_epoch(0)
    out = []
    for i, batch in enumerate(loader):
        if i >= n:
            break
        out.append(batch)
    return out


def replace_config(cfg: RunConfig, **changes: Any) -> RunConfig:
    """A copy of ``cfg`` with ``changes`` (validated)."""
    new = replace(cfg, **changes)
    validate_config(new)
    return new
