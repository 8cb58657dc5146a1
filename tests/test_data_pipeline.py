"""The Grain pipeline: batch contract, determinism, resume, sharding over processes, global arrays."""

import pathlib

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from bleedjax.configs import data as data_configs
from jax.sharding import PartitionSpec

from bleedjax.data import augment, datasets, fake_trees, pipeline

RATE, BLOCK, SESSIONS, BLOCKS_PER_SESSION = 8000, 0.25, 3, 4


def tiny_config(data_dir, **overrides):
    config = data_configs.get_config()
    config.update({"data_dir": str(data_dir), "sample_rate": RATE, "block_seconds": BLOCK,
                   "global_batch_size": 4} | overrides)
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    config = fake_trees.tiny_dataset(tmp_path_factory.mktemp("pipeline"), sessions=SESSIONS, stems=5,
                                     sample_rate=RATE, block_seconds=BLOCK)
    return pathlib.Path(config.data_dir)


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def assert_same(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_batches_follow_the_contract(data_dir):
    batch = next(pipeline.make_iterator(tiny_config(data_dir), seed=0, split="train"))
    samples = int(RATE * BLOCK)
    assert {name: (value.shape, value.dtype) for name, value in batch.items()} == {
        "mics": ((4, 4, samples), np.float32),
        "targets": ((4, 4, samples), np.float32),
        "matrix": ((4, 4, 4), np.float32),
        "active": ((4, 4), np.bool_),
    }
    np.testing.assert_allclose(batch["mics"], np.einsum("bij,bjt->bit", batch["matrix"], batch["targets"]),
                               atol=1e-5)
    assert np.all(batch["active"].sum(axis=1) >= 2)
    assert np.all(np.abs(batch["targets"][batch["active"]]).max(axis=-1) > 0)


def test_same_seed_same_batches_other_seed_others(data_dir):
    config = tiny_config(data_dir)
    first = take(pipeline.make_iterator(config, seed=1, split="train"), 4)  # crosses an epoch
    assert_same(first, take(pipeline.make_iterator(config, seed=1, split="train"), 4))
    other = next(pipeline.make_iterator(config, seed=2, split="train"))
    assert not np.array_equal(first[0]["targets"], other["targets"])


def test_resume_gives_the_identical_next_batch(data_dir, tmp_path):
    config = tiny_config(data_dir)
    iterator = pipeline.make_iterator(config, seed=3, split="train")
    take(iterator, 2)
    state = iterator.get_state()
    manager = ocp.CheckpointManager(tmp_path / "checkpoints")
    manager.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
    expected = take(iterator, 2)

    restored = pipeline.make_iterator(config, seed=3, split="train")
    restored.set_state(state)
    assert_same(expected, take(restored, 2))

    from_orbax = pipeline.make_iterator(config, seed=3, split="train")
    manager.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(from_orbax)))
    assert_same(expected, take(from_orbax, 2))


def identities(stream):
    return [(record["track"], int(record["offset"])) for _, record in stream]


def test_two_processes_are_disjoint_and_cover_an_epoch(data_dir):
    config = tiny_config(data_dir)
    total = SESSIONS * BLOCKS_PER_SESSION
    shards = [
        pipeline.block_stream(config, seed=0, split="train", num_epochs=1,
                              shard_options=grain.sharding.ShardOptions(index, 2))
        for index in range(2)
    ]
    seen = [identities(shard) for shard in shards]
    assert len(seen[0]) == len(seen[1]) == total // 2
    assert not set(seen[0]) & set(seen[1])
    everything = {(f"session_{k}".encode(), o) for k in range(SESSIONS) for o in range(0, 8000, 2000)}
    assert set(seen[0]) | set(seen[1]) == everything
    positions = [{position for position, _ in shard} for shard in shards]
    assert positions == [set(range(0, total, 2)), set(range(1, total, 2))]

    config.global_batch_size = 8
    batches = [next(pipeline.make_iterator(config, seed=0, split="train",
                                           shard_options=grain.sharding.ShardOptions(index, 2)))
               for index in range(2)]
    assert batches[0]["mics"].shape[0] == batches[1]["mics"].shape[0] == 4
    assert not np.array_equal(batches[0]["targets"], batches[1]["targets"])


def test_every_epoch_is_a_new_global_shuffle(data_dir):
    config = tiny_config(data_dir)
    total = SESSIONS * BLOCKS_PER_SESSION
    stream = identities(pipeline.block_stream(config, seed=0, split="train", num_epochs=2))
    first, second = stream[:total], stream[total:]
    assert len(set(first)) == len(set(second)) == total and set(first) == set(second)
    assert first != second and first != sorted(first)
    ordered = identities(pipeline.block_stream(config, seed=0, split="train", num_epochs=1, shuffle=False))
    assert len(ordered) == total and set(ordered) == set(first)


def test_global_arrays_over_the_data_mesh(data_dir):
    batch = next(pipeline.make_iterator(tiny_config(data_dir), seed=0, split="train"))
    mesh = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4])
    arrays = pipeline.to_global(batch, mesh)
    for name, array in arrays.items():
        assert array.shape == batch[name].shape
        assert array.sharding.spec == PartitionSpec("data")
        assert len(array.addressable_shards) == 4
        np.testing.assert_array_equal(np.asarray(array), batch[name])


def test_silent_stems_filter_on_the_phenicx_excerpt(tmp_path, shared_data):
    datasets.prepare("multitrack_stems", manual_dir=shared_data / "phenicx-anechoic-excerpt",
                     data_dir=tmp_path, sample_rate=RATE, block_seconds=BLOCK)
    lowest = {}
    for drop in (False, True):
        config = tiny_config(tmp_path, drop_silent=drop)
        batches = take(pipeline.make_iterator(config, seed=0, split="train"), 5)
        targets = np.concatenate([b["targets"] for b in batches])
        active = np.concatenate([b["active"] for b in batches])
        lowest[drop] = (10 * np.log10(np.mean(targets**2, axis=-1) + 1e-20))[active].min()
    # flute2, trumpet1 and trumpet2 are nearly silent (about -84 dBFS) and 4 of the 20 stems are
    # drawn per example; the random gain lowers a stem by at most 6 dB
    assert lowest[False] < -80
    assert lowest[True] >= -60 - 6


def test_room_augmentation_through_the_pipeline(data_dir):
    config = tiny_config(data_dir, augmentation="room", rir_rooms=2, rir_seconds=0.3, num_tracks=3)
    with pytest.raises(ValueError, match="no room impulse-response bank"):
        pipeline.make_iterator(config, seed=0, split="train")
    config.manual_dir = str(data_dir.parent / "stems")
    datasets.prepare_from_config(config)
    batch = next(pipeline.make_iterator(config, seed=0, split="train"))
    assert batch["mics"].shape == (4, 3, int(RATE * BLOCK))
    active = batch["active"]
    diagonal = np.diagonal(batch["matrix"], axis1=1, axis2=2)
    np.testing.assert_allclose(diagonal[active], 1.0, rtol=1e-5)
    assert np.all(diagonal[~active] == 0)


def test_unprepared_dataset_and_split_are_named(tmp_path, data_dir):
    with pytest.raises(ValueError, match=f"{tmp_path}.*not prepared; run `bleedjax data prepare"):
        pipeline.make_iterator(tiny_config(tmp_path), seed=0, split="train")
    with pytest.raises(ValueError, match="no split 'test'"):
        pipeline.make_iterator(tiny_config(data_dir), seed=0, split="test")


def test_worker_processes_give_the_same_batches(data_dir):
    """Grain's worker processes (7 s with a cold compile cache)."""
    config = tiny_config(data_dir)
    expected = take(pipeline.make_iterator(config, seed=5, split="train"), 3)
    config.worker_count = 2
    iterator = pipeline.make_iterator(config, seed=5, split="train")
    assert_same(expected, take(iterator, 3))
    iterator.close()


def test_device_augmentation_gives_the_host_batches(data_dir):
    config = tiny_config(data_dir)
    host = take(pipeline.make_iterator(config, seed=4, split="train"), 2)
    config.augment_on = "device"
    inputs = take(pipeline.make_iterator(config, seed=4, split="train"), 2)
    assert inputs[0].keys() == {"stems", "present", "position"}
    mesh = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4])
    settings = augment.Settings.from_config(config)
    step = jax.jit(lambda batch: pipeline.augment_batch(batch, settings=settings, seed=4))
    device = [jax.tree.map(np.asarray, step(pipeline.to_global(batch, mesh))) for batch in inputs]
    for want, got in zip(host, device):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)


def test_sessions_with_fewer_stems_are_padded_inactive(tmp_path):
    config = fake_trees.tiny_dataset(tmp_path, sessions=1, stems=3, seconds=0.5, sample_rate=RATE,
                                     block_seconds=BLOCK, global_batch_size=4)
    batch = next(pipeline.make_iterator(config, seed=0, split="train"))
    assert not batch["active"][:, 3].any() and batch["active"][:, :3].any()
    assert not batch["targets"][:, 3].any() and not batch["mics"][:, 3].any()
    assert not batch["matrix"][:, 3].any() and not batch["matrix"][:, :, 3].any()
