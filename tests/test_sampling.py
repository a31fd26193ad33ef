"""Tests of medmtl.engine.sampling: task schedules, per-task passes, determinism, exact resume."""

from __future__ import annotations

import io
import math
from collections import Counter

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose, MapTransform, RandomizableTransform

from medmtl.data.datasets import task_datasets
from medmtl.engine.sampling import (
    KeepListsCollate,
    MultiTaskBatchSampler,
    MultiTaskLoader,
    sampling_proportions,
    weighted_cycle,
)
from medmtl.errors import CheckpointError, ConfigError, DatalistError

SIZES = {"a": 10, "b": 7, "c": 3}


class CountingDataset(torch.utils.data.Dataset):
    """Samples ``{"idx": i}``; counts ``__getitem__`` calls (in this process)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        self.calls += 1
        return {"idx": torch.tensor(i)}


class RandNoised(RandomizableTransform, MapTransform):
    """Adds a random number to ``idx`` so augmentation shows in the batch."""

    def __init__(self) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, keys="idx")

    def __call__(self, data):
        d = dict(data)
        d["noise"] = torch.tensor(self.R.uniform())
        return d


def datasets(sizes=SIZES):
    return {t: CountingDataset(n) for t, n in sizes.items()}


def aug_datasets(sizes=SIZES):
    return {t: Dataset([{"idx": i} for i in range(n)], Compose([RandNoised()])) for t, n in sizes.items()}


def take(loader: MultiTaskLoader, k: int) -> list[dict]:
    """``k`` steps across epochs, breaking mid-epoch when ``k`` is reached."""
    out: list[dict] = []
    while len(out) < k:
        for step in loader:
            out.append(step)
            if len(out) == k:
                break
    return out


def flat(steps: list[dict]) -> list[tuple]:
    """Comparable form of steps: (task, indices, noise) per task in each step."""
    return [
        tuple(
            (t, b["idx"].tolist(), [round(x, 6) for x in b["noise"].tolist()] if "noise" in b else None)
            for t, b in step.items()
        )
        for step in steps
    ]


def test_round_robin_exact_sequence():
    loader = MultiTaskLoader(datasets(), batch_size=2, mode="round_robin", steps_per_epoch=8)
    steps = list(loader)
    assert len(steps) == len(loader) == 8
    assert [list(s) for s in steps] == [["a"], ["b"], ["c"], ["a"], ["b"], ["c"], ["a"], ["b"]]


def test_round_robin_with_shares_spreads_the_larger_share():
    loader = MultiTaskLoader(datasets(), batch_size=2, mode="round_robin", steps_per_epoch=8, shares={"c": 2})
    # one cycle of 4 steps: c twice, never twice in a row within the cycle
    assert [list(s)[0] for s in loader] == ["c", "a", "b", "c"] * 2
    assert loader.proportions == pytest.approx({"a": 0.25, "b": 0.25, "c": 0.5})
    assert weighted_cycle((1, 1, 1, 3)) == (3, 0, 1, 3, 2, 3)
    # equal shares keep the plain round-robin order
    assert weighted_cycle((1, 1, 1)) == (0, 1, 2)


def test_shares_scale_the_random_modes():
    sampler = MultiTaskBatchSampler(SIZES, mode="proportional", seed=3, shares={"c": 4})
    total = 10 + 7 + 3 * 4
    assert sampler.proportions == pytest.approx({"a": 10 / total, "b": 7 / total, "c": 12 / total})
    counts = Counter(sampler.tasks[sampler.tasks_of_step(s)[0]] for s in range(4000))
    assert abs(counts["c"] / 4000 - 12 / total) < 0.03


def test_invalid_shares_are_named():
    with pytest.raises(ConfigError, match="not trained"):
        MultiTaskBatchSampler(SIZES, shares={"z": 2})
    with pytest.raises(ConfigError, match="positive integers"):
        MultiTaskBatchSampler(SIZES, shares={"a": 0})
    with pytest.raises(ConfigError, match="positive integers"):
        MultiTaskBatchSampler(SIZES, shares={"a": 1.5})
    # in all mode every step carries every task: shares do not apply (and do not stop the run)
    assert MultiTaskBatchSampler(SIZES, mode="all", shares={"a": 2}).shares == (1, 1, 1)


def test_state_records_the_shares():
    state = MultiTaskLoader(datasets(), batch_size=2, shares={"a": 2}).state_dict()
    with pytest.raises(CheckpointError, match="shares"):
        MultiTaskLoader(datasets(), batch_size=2).load_state_dict(state)
    # a state saved before shares existed resumes a loader with a share of 1 per task
    old = MultiTaskLoader(datasets(), batch_size=2).state_dict()
    del old["config"]["shares"]
    MultiTaskLoader(datasets(), batch_size=2).load_state_dict(old)


@pytest.mark.parametrize("mode,temperature", [("proportional", 1.0), ("temperature", 2.0), ("temperature", math.inf)])
def test_empirical_task_frequencies(mode, temperature):
    sampler = MultiTaskBatchSampler(SIZES, mode=mode, temperature=temperature, seed=3)
    counts = Counter(sampler.tasks[sampler.tasks_of_step(s)[0]] for s in range(4000))
    expected = sampling_proportions(SIZES, mode, temperature)
    for task, p in expected.items():
        assert abs(counts[task] / 4000 - p) < 0.03, (task, counts[task] / 4000, p)


def test_proportion_formulas():
    total = sum(SIZES.values())
    prop = sampling_proportions(SIZES, "proportional")
    assert prop == pytest.approx({t: n / total for t, n in SIZES.items()})
    assert sampling_proportions(SIZES, "temperature", 1.0) == pytest.approx(prop)
    assert sampling_proportions(SIZES, "temperature", math.inf) == pytest.approx({t: 1 / 3 for t in SIZES})
    t2 = sampling_proportions(SIZES, "temperature", 2.0)
    assert t2["a"] / t2["c"] == pytest.approx(math.sqrt(10 / 3))
    # Higher temperature flattens the distribution towards uniform.
    assert prop["a"] > t2["a"] > 1 / 3
    assert sampling_proportions(SIZES, "all") == {t: 1.0 for t in SIZES}
    loader = MultiTaskLoader(datasets(), mode="temperature", temperature=2.0)
    assert loader.proportions == pytest.approx(t2)


def test_all_mode_yields_every_task_each_step():
    loader = MultiTaskLoader(datasets(), batch_size={"a": 4, "b": 2, "c": 1}, mode="all")
    # default epoch: the largest number of batches one pass of a task needs (a: 10 / 4 -> 3, b: 4, c: 3)
    assert len(loader) == 4
    steps = list(loader)
    assert len(steps) == 4
    assert all(list(s) == ["a", "b", "c"] for s in steps)
    assert [len(s["c"]["idx"]) for s in steps] == [1, 1, 1, 1]


def test_default_steps_per_epoch_one_task_modes():
    loader = MultiTaskLoader(datasets(), batch_size={"a": 4, "b": 2, "c": 1}, mode="proportional")
    assert len(loader) == math.ceil(10 / 4) + math.ceil(7 / 2) + 3
    dropped = MultiTaskLoader(datasets(), batch_size={"a": 4, "b": 2, "c": 1}, mode="proportional", drop_last=True)
    assert len(dropped) == 10 // 4 + 7 // 2 + 3


@pytest.mark.parametrize("drop_last", [False, True])
def test_batch_sizes_and_each_pass_visits_every_sample_once(drop_last):
    bs = {"a": 4, "b": 3, "c": 2}
    loader = MultiTaskLoader(datasets(), batch_size=bs, mode="round_robin", steps_per_epoch=60, drop_last=drop_last)
    seen: dict[str, list[list[int]]] = {t: [] for t in SIZES}
    for step in loader:
        ((task, batch),) = step.items()
        seen[task].append(batch["idx"].tolist())
    for task, batches in seen.items():
        n, b = SIZES[task], bs[task]
        per_pass = n // b if drop_last else math.ceil(n / b)
        expected_sizes = [b] * (n // b) + ([] if drop_last or n % b == 0 else [n % b])
        passes = [batches[i : i + per_pass] for i in range(0, len(batches) - per_pass + 1, per_pass)]
        assert len(passes) >= 2
        orders = []
        for p in passes:
            assert [len(x) for x in p] == expected_sizes
            order = [i for x in p for i in x]
            assert len(set(order)) == len(order)  # no sample twice in a pass
            if not drop_last:
                assert sorted(order) == list(range(n))
            orders.append(order)
        if task != "c":  # c has 3 samples: two passes may share an order by chance
            assert orders[0] != orders[1], "each pass must be reshuffled"


def test_same_seed_same_stream_other_seed_other_stream():
    def run(seed):
        return flat(list(MultiTaskLoader(aug_datasets(), batch_size=2, mode="proportional", seed=seed)))

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_stream_does_not_depend_on_num_workers():
    kwargs = dict(batch_size=2, mode="temperature", temperature=2.0, seed=1, steps_per_epoch=12)
    serial = flat(list(MultiTaskLoader(aug_datasets(), num_workers=0, **kwargs)))
    parallel = flat(list(MultiTaskLoader(aug_datasets(), num_workers=2, multiprocessing_context="fork", **kwargs)))
    assert serial == parallel


def test_state_counts_handed_out_steps_not_prefetched_ones():
    kwargs = dict(batch_size=2, mode="proportional", seed=2, steps_per_epoch=12)
    serial = MultiTaskLoader(aug_datasets(), **kwargs)
    parallel = MultiTaskLoader(
        aug_datasets(), num_workers=2, prefetch_factor=4, multiprocessing_context="fork", **kwargs
    )
    take(serial, 5)
    take(parallel, 5)  # the workers have loaded further ahead by now
    assert parallel.state_dict() == serial.state_dict()
    assert parallel.step == 5


@pytest.mark.parametrize("mode", ["round_robin", "proportional", "temperature", "all"])
@pytest.mark.parametrize("total,cut", [(10, 5), (24, 13)])  # cut inside epoch 1 / inside a later epoch
def test_resume_yields_identical_batches(mode, total, cut):
    shares = {} if mode == "all" else {"b": 2}
    kwargs = dict(batch_size={"a": 3, "b": 2, "c": 2}, mode=mode, temperature=2.0, seed=11, steps_per_epoch=7, shares=shares)
    straight = flat(take(MultiTaskLoader(aug_datasets(), **kwargs), total))

    first = MultiTaskLoader(aug_datasets(), **kwargs)
    head = flat(take(first, cut))
    buffer = io.BytesIO()
    torch.save({"loader": first.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["loader"]

    resumed = MultiTaskLoader(aug_datasets(), **kwargs)
    resumed.load_state_dict(state)
    assert resumed.epoch == cut // 7 and resumed.step == cut
    # The first iteration after the resume finishes the interrupted epoch only.
    rest_of_epoch = list(resumed)
    assert len(rest_of_epoch) == 7 - cut % 7
    tail = flat(rest_of_epoch) + flat(take(resumed, total - cut - len(rest_of_epoch)))
    assert head + tail == straight


def test_fast_forward_loads_no_skipped_sample():
    kwargs = dict(batch_size=2, mode="proportional", seed=0, steps_per_epoch=50)
    first = MultiTaskLoader(datasets(), **kwargs)
    take(first, 30)
    fresh = datasets()
    resumed = MultiTaskLoader(fresh, **kwargs)
    resumed.load_state_dict(first.state_dict())
    step = next(iter(resumed))
    ((task, batch),) = step.items()
    assert sum(d.calls for d in fresh.values()) == len(batch["idx"]) == fresh[task].calls


def test_breaking_out_continues_the_epoch():
    loader = MultiTaskLoader(datasets(), batch_size=2, steps_per_epoch=6)
    reference = flat(list(MultiTaskLoader(datasets(), batch_size=2, steps_per_epoch=6)))
    head = flat(take(loader, 2))
    assert len(list(loader)) == 4 and loader.epoch == 1
    loader2 = MultiTaskLoader(datasets(), batch_size=2, steps_per_epoch=6)
    assert flat(take(loader2, 2)) + flat(list(loader2)) == reference == head + reference[2:]


def test_state_of_another_loader_is_rejected():
    state = MultiTaskLoader(datasets(), batch_size=2, seed=0).state_dict()
    other = MultiTaskLoader(datasets({"a": 10, "b": 8, "c": 3}), batch_size=2, seed=0)
    with pytest.raises(CheckpointError, match="sizes"):
        other.load_state_dict(state)
    with pytest.raises(CheckpointError, match="seed"):
        MultiTaskLoader(datasets(), batch_size=2, seed=1).load_state_dict(state)
    with pytest.raises(CheckpointError, match="malformed"):
        MultiTaskLoader(datasets(), batch_size=2, seed=0).load_state_dict({"version": 1, "config": state["config"]})


def test_iteration_does_not_consume_global_torch_rng():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    list(MultiTaskLoader(aug_datasets(), batch_size=2, mode="proportional"))
    assert torch.equal(torch.get_rng_state(), before)


def test_ddp_ranks_agree_on_task_and_split_the_global_batch():
    kwargs = dict(mode="proportional", seed=4, steps_per_epoch=20)
    sizes = {"a": 12, "b": 8}
    single = list(MultiTaskLoader(datasets(sizes), batch_size=4, **kwargs))
    ranks = [list(MultiTaskLoader(datasets(sizes), batch_size=2, num_replicas=2, rank=r, **kwargs)) for r in (0, 1)]
    for whole, s0, s1 in zip(single, *ranks):
        assert list(whole) == list(s0) == list(s1)
        task = next(iter(whole))
        assert len(s0[task]["idx"]) == len(s1[task]["idx"]) == 2
        assert sorted(s0[task]["idx"].tolist() + s1[task]["idx"].tolist()) == sorted(whole[task]["idx"].tolist())


def test_ddp_pads_a_short_final_chunk():
    sampler = MultiTaskBatchSampler({"a": 5}, batch_size=2, num_replicas=2, rank=1, steps_per_epoch=2)
    batches = list(sampler)
    assert [len(b) for b in batches] == [2, 1]  # 4 + 1 samples; rank 1 gets the padded one


def test_per_task_collate_for_detection():
    det = [
        {"image": torch.zeros(1, 4, 4), "boxes": torch.zeros(k, 4), "box_labels": torch.zeros(k, dtype=torch.long)}
        for k in (0, 2, 3)
    ]
    cls = [{"image": torch.zeros(1, 4, 4), "label": torch.tensor(i % 2)} for i in range(4)]
    loader = MultiTaskLoader(
        {"det": det, "cls": cls},
        batch_size=3,
        collate_fn={"det": KeepListsCollate(("boxes", "box_labels"))},
        steps_per_epoch=2,
    )
    det_batch, cls_batch = (next(iter(s.values())) for s in loader)
    assert det_batch["image"].shape == (3, 1, 4, 4)
    assert sorted(len(b) for b in det_batch["boxes"]) == [0, 2, 3]
    assert isinstance(det_batch["box_labels"], list)
    assert cls_batch["label"].shape == (3,)


def test_invalid_arguments():
    with pytest.raises(ConfigError, match="mode"):
        MultiTaskLoader(datasets(), mode="random")
    with pytest.raises(ConfigError, match="temperature"):
        MultiTaskLoader(datasets(), mode="temperature", temperature=0)
    with pytest.raises(ConfigError, match="missing"):
        MultiTaskLoader(datasets(), batch_size={"a": 1})
    with pytest.raises(ConfigError, match="no samples"):
        MultiTaskLoader(datasets({"a": 0}))
    with pytest.raises(ConfigError, match="shuffle"):
        MultiTaskLoader(datasets(), shuffle=True)
    with pytest.raises(ConfigError, match="drop_last"):
        MultiTaskLoader(datasets(), batch_size=4, drop_last=True)  # c has 3 samples


def test_task_datasets_groups_and_caches(tmp_path):
    entries = [{"task": "b", "idx": i} for i in range(3)] + [{"task": "a", "idx": i} for i in range(5)]
    built = task_datasets(entries, lambda task: Compose([]))
    assert list(built) == ["b", "a"]
    assert type(built["a"]) is Dataset and [built["a"][i]["idx"] for i in range(5)] == list(range(5))
    assert isinstance(task_datasets(entries, lambda t: Compose([]), cache="memory")["a"], CacheDataset)
    disk = task_datasets(entries, lambda t: Compose([]), cache="disk", cache_dir=tmp_path)
    assert isinstance(disk["b"], PersistentDataset) and disk["b"][0]["idx"] == 0
    assert (tmp_path / "b").is_dir()
    with pytest.raises(ConfigError, match="cache_dir"):
        task_datasets(entries, lambda t: Compose([]), cache="disk")
    with pytest.raises(DatalistError, match="entry 1"):
        task_datasets([{"task": "a"}, {"image": "x.nii.gz"}], lambda t: Compose([]), source="train.json")


def test_label_fraction_is_a_deterministic_nested_subset():
    entries = [{"task": "a", "idx": i} for i in range(40)] + [{"task": "b", "idx": i} for i in range(6)]

    def kept(fraction, seed=0):
        built = task_datasets(entries, lambda t: Compose([]), label_fraction={"a": fraction}, seed=seed)
        assert len(built["b"]) == 6
        return [built["a"][i]["idx"] for i in range(len(built["a"]))]

    quarter, half = kept(0.25), kept(0.5)
    assert len(quarter) == 10 and len(half) == 20
    assert quarter == kept(0.25) and set(quarter) < set(half)
    assert quarter != list(range(10))  # a random subset, not the head of the datalist
    assert kept(0.25, seed=1) != quarter
    assert len(kept(0.001)) == 1
    with pytest.raises(ConfigError, match="label_fraction"):
        kept(1.5)
    with pytest.raises(ConfigError, match="no entries"):
        task_datasets(entries, lambda t: Compose([]), label_fraction={"z": 0.5})
    np.testing.assert_array_equal(sorted(half), np.unique(half))
