"""run-prune / runs through the real CLI entry point (in process): exit codes, one-line errors, no
half-made run folders."""

import json

import click
import pytest
from conftest import base_options, cli_args

from ckpttool.cli._root import main


def _cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _opts(init, out, **kw):
    return cli_args(base_options(init, out, **kw))


@pytest.mark.parametrize("change,message", [
    (dict(method="prune-all"), "'prune-all' is not one of 'refill', 'rsst'"),
    (dict(target="ffn"), "'ffn' is not one of"),
    (dict(criterion="random"), "'random' is not one of"),
    (dict(rate=1.5), "--rate must lie strictly between 0 and 1, got 1.5"),
    (dict(rate=0.0), "--rate must lie strictly between 0 and 1, got 0.0"),
    (dict(states=0), "--states must be an integer >= 1, got 0"),
    (dict(dataset="cifar10", data="/nonexistent/cifar"), "cifar"),
    (dict(min_heads_per_layer=5, target="head"), "--min-heads-per-layer 5 exceeds the 4 heads per block"),
    (dict(val_size=0), "--val-size 0 is below the minimum of 100 validation images"),
    (dict(val_size=99), "--val-size 99 is below the minimum of 100 validation images"),
    (dict(dataset="synthetic", synthetic_size=100),
     "the synthetic validation split of 99 is below the minimum of 100 validation images"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_no_run_folder(random_init, tmp_path, capsys, change, message):
    out_dir = tmp_path / "run"
    code, out, err = _cli(["run-prune", *_opts(random_init, out_dir, **change)], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not out_dir.exists()


def test_init_that_does_not_fit_the_arch(tmp_path, capsys):
    from conftest import create_tiny_vit, tiny_metadata

    from ckpttool.saving import save_checkpoint

    sd = create_tiny_vit().state_dict()
    sd.pop("blocks.1.mlp.fc2.bias")
    sd["extra.weight"] = sd["norm.weight"].clone()
    init = tmp_path / "bad_random_init.safetensors"
    save_checkpoint(init, sd, metadata={**tiny_metadata(), "img_size": 32})
    code, _, err = _cli(["run-prune", *_opts(init, tmp_path / "run")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "missing 1: blocks.1.mlp.fc2.bias" in err and "unexpected 1: extra.weight" in err
    assert "shape mismatch 1: pos_embed" in err
    assert not (tmp_path / "run").exists()


def test_existing_run_folder_without_resume(random_init, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    code, _, err = _cli(["run-prune", *_opts(random_init, tmp_path / "run")], capsys)
    assert code == 2 and "already exists; pass --resume" in err
    assert list((tmp_path / "run").iterdir()) == []


def test_gate_refuses_random_without_allow_random(random_init, tmp_path, capsys):
    code, _, err = _cli(["run-prune", *_opts(random_init, tmp_path / "run", allow_random=False)], capsys)
    assert code == 1
    assert "verdict random" in err and "--allow-random" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_gate_refuses_partial_even_with_allow_random(partial_init, tmp_path, capsys):
    code, _, err = _cli(["run-prune", *_opts(partial_init, tmp_path / "run", allow_random=True)], capsys)
    assert code == 1 and "verdict partial" in err and "blocks.1" in err and "--allow-partial" in err
    code, _, _ = _cli(["run-prune", *_opts(partial_init, tmp_path / "run2", allow_partial=True),
                       "--format", "json"], capsys)
    assert code == 0


def test_gate_refuses_corrupt_always(corrupt_init, tmp_path, capsys):
    code, _, err = _cli(["run-prune", *_opts(corrupt_init, tmp_path / "run", allow_partial=True)], capsys)
    assert code == 1 and "verdict corrupt" in err


def test_gate_decisions():
    from pruning_runner.gate import decide_gate

    table = {(v, r, p): decide_gate(v, allow_random=r, allow_partial=p) is None
             for v in ("pretrained", "random", "partial", "inconclusive", "corrupt")
             for r in (False, True) for p in (False, True)}
    assert [k for k, ok in table.items() if ok] == [
        ("pretrained", False, False), ("pretrained", False, True), ("pretrained", True, False),
        ("pretrained", True, True), ("random", True, False), ("random", True, True),
        ("partial", False, True), ("partial", True, True),
        ("inconclusive", True, False), ("inconclusive", True, True)]  # cannot tell: no better than random
    assert "cannot tell" in decide_gate("inconclusive", allow_random=False, allow_partial=True)


def test_toml_config_with_flag_override_and_runs_listing(trained_init, tmp_path, capsys):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(f'init = "{trained_init}"\ndataset = "digits"\nmethod = "rsst"\ntarget = "head"\n'
                   f'rate = 0.5\nstates = 2\nepochs = 1\ndevice = "cpu"\nbatch-size = 128\n')
    code, out, err = _cli(["run-prune", "--config", str(cfg), "--method", "refill", "--out", str(tmp_path / "runs" / "a"),
                           "--format", "json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["init"]["verdict"] == "pretrained"
    assert [s["kept_heads"] for s in result["states"]] == [8, 4]
    assert 'method = "refill"' in (tmp_path / "runs" / "a" / "config.toml").read_text()
    sha = result["init"]["sha256"]
    code, out, _ = _cli(["runs", "--root", str(tmp_path / "runs"), "--init", sha[:10], "--format", "json"], capsys)
    runs = json.loads(out)["runs"]
    assert code == 0 and len(runs) == 1 and runs[0]["method"] == "refill" and runs[0]["states_done"] == 2
    code, out, _ = _cli(["runs", "--root", str(tmp_path / "runs"), "--init", str(trained_init)], capsys)
    assert code == 0 and sha[:12] in out and "pretrained" in out
    code, out, _ = _cli(["runs", "--root", str(tmp_path / "runs"), "--init", "deadbeef", "--format", "json"], capsys)
    assert json.loads(out)["runs"] == []


def test_every_run_prune_option_has_one_line_help_with_its_default(capsys):
    from dataclasses import fields

    from ckpttool.cli.run_prune_cmd import command
    from pruning_runner.config import RunConfig

    defaults = {f.name: f.default for f in fields(RunConfig)}
    for param in command.params:
        assert isinstance(param, click.Option) and param.help, f"--{param.name} has no help text"
        assert "\n" not in param.help
        default = defaults.get(param.name)
        if default is not None:
            shown = ("on" if default else "off") if isinstance(default, bool) else str(default)
            assert param.help.endswith(f"[default: {shown}]"), param.help
    code, out, _ = _cli(["run-prune", "--help"], capsys)
    text = " ".join(out.split())  # click wraps the help column
    assert code == 0 and "[default: inductor]" in text and "[default: magnitude]" in text


@pytest.mark.parametrize("line,message", [
    ('lr = "fast"', "lr = 'fast' in {cfg} must be a number, got a str"),
    ("epochs = 2.5", "epochs = 2.5 in {cfg} must be an integer, got a float"),
    ("download = 1", "download = 1 in {cfg} must be true or false, got a int"),
    ("states = true", "states = True in {cfg} must be an integer, got a bool"),
    ("method = [1, 2]", "method = [1, 2] in {cfg} must be a string, got a list"),
])
def test_wrong_toml_types_are_one_error_line_exit_2(random_init, tmp_path, capsys, line, message):
    cfg = tmp_path / "exp.toml"
    keys = {"init": f'"{random_init}"', "dataset": '"digits"', "method": '"refill"', "target": '"head"',
            "rate": "0.5", "states": "2", "epochs": "1"}
    key, _, value = line.partition(" = ")
    keys[key] = value
    cfg.write_text("".join(f"{k} = {v}\n" for k, v in keys.items()))
    code, _, err = _cli(["run-prune", "--config", str(cfg), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and err == f"error: {message.format(cfg=cfg)}\n"
    assert not (tmp_path / "run").exists()


def test_resume_of_a_damaged_checkpoint_is_one_error_line(random_init, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = _cli(["run-prune", *_opts(random_init, run, states=1, epochs=1), "--format", "json"], capsys)
    assert code == 0, err
    (run / "checkpoint.pt").write_bytes(b"garbage, not a torch file")
    before = (run / "run.json").read_bytes()
    code, _, err = _cli(["run-prune", "--resume", str(run)], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: cannot read run checkpoint {run / 'checkpoint.pt'}: ") and "start a new run" in err
    assert (run / "run.json").read_bytes() == before


def test_resume_with_a_damaged_run_json_is_one_error_line(random_init, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = _cli(["run-prune", *_opts(random_init, run, states=1, epochs=1), "--format", "json"], capsys)
    assert code == 0, err
    (run / "run.json").write_text('{"init": 5}')
    code, _, err = _cli(["run-prune", "--resume", str(run)], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: the records of {run} (run.json, checkpoint.pt) are damaged (KeyError: 'model')")


def test_help_says_where_data_is_looked_for_and_what_deterministic_costs(capsys):
    code, out, _ = _cli(["run-prune", "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0 and "torchvision's data root" not in text
    assert "Folder holding the CIFAR folder or archive (digits and synthetic need none) [default: ./data]" in text
    assert "--deterministic" in text and "costs speed" in text and "not measured here (no GPU)" in text
    assert "at least 100" in text


def test_deterministic_switches_off_tf32_and_asks_for_deterministic_kernels():
    import subprocess
    import sys

    from conftest import REPO, subprocess_env

    code = ("import torch; from pruning_runner.loop import set_determinism; import os\n"
            "set_determinism(torch.device('cuda'), True)\n"
            "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),"
            " torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,"
            " os.environ['CUBLAS_WORKSPACE_CONFIG'])\n"
            "set_determinism(torch.device('cuda'), False)\n"
            "print(torch.backends.cuda.matmul.allow_tf32)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "False", "False", "False", ":4096:8", "True"]


def test_a_deterministic_run_records_seed_and_mode(random_init, tmp_path):
    """In a subprocess: deterministic-only algorithms are process-wide and would outlive an in-process run."""
    import subprocess
    import sys

    from conftest import REPO, subprocess_env

    out = tmp_path / "run"
    args = cli_args(base_options(random_init, out, states=1, epochs=1, seed=7, deterministic=True))
    done = subprocess.run([sys.executable, "-m", "pruning_runner", *args, "--format", "json"], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run = json.loads((out / "run.json").read_text())
    assert (run["seed"], run["deterministic"]) == (7, True)
