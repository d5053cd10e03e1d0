import pytest

from ckpttool.errors import CheckpointNotFoundError, InvalidArgumentError
from ckpttool.saving import save_checkpoint
from ckpttool.verify import resolve_expected, verdict_meets, verify_file, verify_paths


@pytest.fixture(scope="module")
def random_vit_file(tmp_path_factory):
    """A random timm ViT (small config), saved the way `generate` saves: a torch zip .pth.tar."""
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2, num_classes=10)
    path = tmp_path_factory.mktemp("random") / "vit.pth.tar"
    save_checkpoint(path, model.state_dict(), metadata={"arch": "vit_tiny_patch16_224"})
    return path


@pytest.fixture(scope="module")
def trained_file(tmp_path_factory):
    """timm's test_resnet trained on digits (tests/_trained.py), as safetensors."""
    from _trained import trained_resnet

    model, _acc = trained_resnet()
    path = tmp_path_factory.mktemp("trained") / "resnet_digits.safetensors"
    save_checkpoint(path, model.state_dict())
    return path


@pytest.mark.parametrize(
    "name,expected",
    [
        ("init_model/vit_small_cifar10_pretrained_init.pth.tar", "pretrained"),
        ("vit_small_cifar100_random_init.pth.tar", "random"),
        ("RESNET_Pretrained.safetensors", "pretrained"),
        ("model.pt", "any"),
    ],
)
def test_auto_expectation_from_name(name, expected):
    assert resolve_expected(name, "auto") == expected


def test_explicit_expectation_wins():
    assert resolve_expected("x_pretrained.pth", "random") == "random"
    with pytest.raises(InvalidArgumentError, match="unknown expectation 'maybe'"):
        resolve_expected("x.pth", "maybe")


def test_any_accepts_all_but_corrupt():
    assert all(verdict_meets(v, "any") for v in ("pretrained", "random", "partial"))
    assert not verdict_meets("corrupt", "any")
    assert not verdict_meets("partial", "pretrained")


def test_misnamed_random_file_fails(random_vit_file, tmp_path):
    misnamed = tmp_path / "vit_small_cifar10_pretrained_init.pth.tar"
    misnamed.write_bytes(random_vit_file.read_bytes())
    rep = verify_file(misnamed)
    assert rep.verdict.verdict == "random"
    assert rep.expected == "pretrained" and not rep.passed
    assert rep.failure_reason.startswith("verdict random, expected pretrained")
    assert len(rep.sha256) == 64


def test_rule_can_fail_but_never_replaces_verdict(trained_file):
    rep = verify_file(trained_file, expect="pretrained", rules=["*.weight:std>100"])
    assert rep.verdict.verdict == "pretrained"
    assert not rep.passed and not rep.rules[0].passed


def test_folder_and_errors_collected(random_vit_file, tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    (d / "a_random.pth.tar").write_bytes(random_vit_file.read_bytes())
    (d / "broken.pth").write_bytes(b"not a checkpoint")
    run = verify_paths([d])
    assert [f.path.name for f in run.files] == ["a_random.pth.tar"]
    assert [e.path.name for e in run.errors] == ["broken.pth"]
    assert run.exit_code == 2


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(CheckpointNotFoundError):
        verify_paths([tmp_path])


def test_bad_rule_raises_before_reading(tmp_path):
    with pytest.raises(InvalidArgumentError):
        verify_paths([tmp_path / "missing.pth"], rules=["garbage"])


def test_a_training_checkpoint_whose_optimizer_never_saw_a_branch_names_it(tmp_path):
    """CHGNet ships a training checkpoint whose Adam state has nothing for one branch: it never got
    a gradient. Here that branch is made of tensors too small to judge on their own (a 4x4 layer and
    its bias), so only the optimizer state can say it is untouched."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.ModuleDict({
        "encoder": torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64)),
        "dead": torch.nn.Linear(4, 4),
        "head": torch.nn.Linear(64, 10),
    })
    with torch.no_grad():  # trained-looking encoder: shared low-rank structure
        for layer in (net["encoder"][0], net["encoder"][2]):
            layer.weight += 0.5 * torch.outer(torch.randn(64), torch.randn(64)) / 8
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)  # the dead branch is in the optimizer...
    used = [p for name, p in net.named_parameters() if not name.startswith("dead.")]
    sum(p.sum() for p in used).backward()  # ...but never gets a gradient, so Adam keeps no state for it
    opt.step()
    path = tmp_path / "training.ckpt"
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, path)
    report = verify_file(path)
    assert report.verdict.verdict == "partial" and report.verdict.untouched_groups == ("dead",), report.verdict.reason
    # the same weights without the optimizer: nothing says the small branch is untouched
    torch.save({"model": net.state_dict()}, tmp_path / "weights.pt")
    assert verify_file(tmp_path / "weights.pt").verdict.verdict == "pretrained"
