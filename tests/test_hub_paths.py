"""Parsing hf://ORG/REPO[@REVISION][/FILE] (pure; the downloads are in tests/test_hub_http.py)."""

from __future__ import annotations

import pytest

from ckpttool.errors import InvalidArgumentError
from ckpttool.hub_paths import HubPath, is_hub_path, parse_hub_path


@pytest.mark.parametrize(("uri", "expected"), [
    ("hf://timm/resnet18.a1_in1k/model.safetensors", HubPath("timm/resnet18.a1_in1k", None, "model.safetensors")),
    ("hf://org/repo@v1.0/sub/dir/w.pth", HubPath("org/repo", "v1.0", "sub/dir/w.pth")),
    ("hf://org/repo@refs%2Fpr%2F1/w.bin", HubPath("org/repo", "refs/pr/1", "w.bin")),
    ("hf://timm/resnet18.a1_in1k", HubPath("timm/resnet18.a1_in1k", None, None)),  # the repo's model
    ("hf://org/repo@v1.0", HubPath("org/repo", "v1.0", None)),
])
def test_parse_round_trips(uri, expected):
    assert parse_hub_path(uri) == expected
    assert str(expected) == uri
    assert is_hub_path(uri) and not is_hub_path("/tmp/hf:/x")


@pytest.mark.parametrize(("uri", "message"), [
    ("hf://timm/model.safetensors", "model.safetensors is a file name, not a repo name; "
                                    "expected hf://ORG/REPO[@REVISION][/FILE]"),
    ("hf://timm/pytorch_model.bin.index.json", "is a file name, not a repo name"),
    ("hf://timm//model.safetensors", "expected hf://ORG/REPO[@REVISION][/FILE]"),
    ("hf://timm", "expected hf://ORG/REPO[@REVISION][/FILE]"),
    ("hf://timm/repo/", "expected hf://ORG/REPO[@REVISION][/FILE]"),
    ("hf://ti m/repo/x", "ti m/repo is not a valid hub repo id"),
    ("hf://org/repo@bad rev/x", "revision 'bad rev' is not a valid branch, tag or commit"),
    ("hf://org/repo/../../etc/passwd", "the file path must stay inside the repo"),
    ("https://huggingface.co/x", "is not a hub path"),
])
def test_malformed_references_name_the_form(uri, message):
    with pytest.raises(InvalidArgumentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_hub_path(uri)
