"""Run checkpoints: RNG states restored on a machine with fewer GPUs than the one that saved them."""

import torch

from pruning_runner.checkpoint import capture_rng, restore_cuda_rng, restore_rng


def _fake_cuda_states(n):
    return [torch.full((16,), i, dtype=torch.uint8) for i in range(n)]


def test_cuda_rng_states_of_missing_devices_are_left_out_and_named():
    calls = []
    note = restore_cuda_rng(_fake_cuda_states(4), 2, lambda state, index: calls.append((index, int(state[0]))))
    assert calls == [(0, 0), (1, 1)]
    assert note == ("the checkpoint holds CUDA RNG states of 4 devices, 2 visible here: "
                    "restored devices 0-1, left out device(s) 2-3")
    calls.clear()
    assert restore_cuda_rng(_fake_cuda_states(2), 8, lambda s, i: calls.append(i)) is None and calls == [0, 1]


def test_resume_on_a_cpu_machine_of_a_checkpoint_saved_with_gpus():
    state = capture_rng()
    state["cuda"] = _fake_cuda_states(3)  # saved where 3 GPUs were visible; none here (CPU)
    expected = torch.rand(5)
    torch.manual_seed(123)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    note = restore_rng(state)
    assert torch.equal(torch.rand(5), expected)  # the CPU generator is restored all the same
    if visible < 3:
        assert note is not None and note.startswith(f"the checkpoint holds CUDA RNG states of 3 devices, {visible} ")
