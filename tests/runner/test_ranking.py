import torch

from pruning_runner.ranking import expected_kept, select_kept
from pruning_runner.schedule import kept_count


def _scores(depth=3, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(depth, n, generator=g)


def test_layer_ranking_keeps_the_same_count_per_block_and_the_best():
    s = _scores()
    alive = torch.ones_like(s, dtype=torch.bool)
    keep = select_kept(s, alive, rate=0.25, prunes=1, minimum=1, ranking="layer")
    assert keep.sum(1).tolist() == [6, 6, 6]
    for b in range(3):
        assert s[b][keep[b]].min() >= s[b][~keep[b]].max()


def test_global_ranking_exact_total_and_minimum_per_block():
    s = _scores()
    s[0] *= 0.01  # block 0 is tiny in raw scale but normalisation per block keeps it comparable
    alive = torch.ones_like(s, dtype=torch.bool)
    for k in range(1, 6):
        keep = select_kept(s, alive, rate=0.4, prunes=k, minimum=2, ranking="global")
        assert int(keep.sum()) == kept_count(24, 0.4, k, minimum=6)
        assert int(keep.sum(1).min()) >= 2
        alive = keep


def test_selection_is_a_subset_of_alive_and_follows_the_schedule_over_states():
    s = _scores(2, 12)
    alive = torch.ones(2, 12, dtype=torch.bool)
    for k in range(1, 8):
        keep = select_kept(s, alive, rate=0.3, prunes=k, minimum=1, ranking="layer")
        assert not bool((keep & ~alive).any())
        assert int(keep.sum()) == expected_kept(2, 12, rate=0.3, prunes=k, minimum=1, ranking="layer")
        alive = keep


def test_ties_are_broken_by_position():
    s = torch.zeros(1, 4)
    keep = select_kept(s, torch.ones(1, 4, dtype=torch.bool), rate=0.5, prunes=1, minimum=1, ranking="layer")
    assert keep.tolist() == [[True, True, False, False]]
