"""Data that does not fit in memory: streamed training, measures and sweeps equal the in-memory
ones (docs/performance.md, "Data that does not fit in memory"), on small sizes."""

from __future__ import annotations

import pytest
import torch

from falsify._imports import UserCodeError
from falsify.data.generated_images import GeneratedImagesData
from falsify.data.stream import batches, gather, labels_of
from falsify.data.user import UserData
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.interventions import ablation_effects, fill_values, single_unit_masks
from falsify.interventions.engine import ablation_sweep
from falsify.measures.activation import collect_class_means, collect_unit_activations
from falsify.measures.selectivity import unit_activations
from falsify.models.cnn import CNNSpec
from falsify.models.mlp import MLPSpec
from falsify.models.training import evaluate, train_replicate
from falsify.selectivity import class_conditional_means

CPU = torch.device("cpu")
SPEC = GeneratedImagesData(kind="generated_images", n_train=400, n_test=200)


def _population(model, epochs: int = 2, **training) -> Population:
    return Population(
        data=SPEC,
        model=model,
        training=TrainingSpec(epochs=epochs, lr=0.003, batch_size=64, **training),
        seeds=2,
    )


@pytest.fixture(scope="module")
def data():
    return SPEC.load(), SPEC.streamed()


@pytest.fixture(scope="module")
def mlp(data):
    return train_replicate(_population(MLPSpec(kind="mlp", hidden=(32, 16))), data[0], 0, CPU)


@pytest.fixture(scope="module")
def cnn(data):
    pop = _population(CNNSpec(kind="cnn", channels=(4, 6)), epochs=1)
    return train_replicate(pop, data[0], 0, CPU)


def test_generated_images_are_made_per_index_the_same_in_any_batch(data) -> None:
    memory, stream = data
    train = stream.train
    assert len(train) == 400 and stream.input_shape == (3, 32, 32) and stream.n_classes == 10
    assert torch.equal(train[7][0], gather(train, [3, 7, 1])[0][1])
    assert torch.equal(memory.x_train[100:164], gather(train, range(100, 164))[0])
    assert torch.equal(memory.y_test, labels_of(stream.test))
    assert torch.bincount(memory.y_train).tolist() == [40] * 10
    assert float(memory.x_train.min()) >= 0.0 and float(memory.x_train.max()) <= 1.0
    other = GeneratedImagesData(kind="generated_images", n_train=400, n_test=200, seed=1).load()
    assert not torch.equal(memory.x_train, other.x_train)
    with pytest.raises(IndexError, match="image 400 of a split of 400"):
        train[400]


def test_generated_images_have_learnable_class_structure() -> None:
    # The setting docs/performance.md quotes (60% there).
    spec = GeneratedImagesData(kind="generated_images", n_train=5000, n_test=1000)
    pop = Population(
        data=spec,
        model=MLPSpec(kind="mlp", hidden=(256, 128)),
        training=TrainingSpec(epochs=3, lr=0.001, batch_size=128),
        seeds=2,
    )
    res = train_replicate(pop, spec.streamed(), 0, CPU)
    assert res.test_accuracy > 0.4  # chance is 0.1


def test_streamed_training_gives_the_in_memory_weights_bit_for_bit(data, mlp) -> None:
    memory, stream = data
    pop = _population(MLPSpec(kind="mlp", hidden=(32, 16)))
    streamed = train_replicate(pop, stream, 0, CPU)
    for (name, a), (_, b) in zip(
        mlp.model.state_dict().items(), streamed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert streamed.train_loss == mlp.train_loss
    assert streamed.test_accuracy == pytest.approx(mlp.test_accuracy, abs=1e-6)
    assert evaluate(mlp.model, memory.x_test, memory.y_test) == pytest.approx(
        mlp.test_accuracy, abs=1e-6
    )


def test_streamed_training_with_steps_and_the_untrained_control(data) -> None:
    memory, stream = data
    for training in ({"steps": 9}, {"control": "untrained"}):
        pop = _population(MLPSpec(kind="mlp", hidden=(8,)), **training)
        a = train_replicate(pop, memory, 3, CPU)
        b = train_replicate(pop, stream, 3, CPU)
        assert a.train_loss == b.train_loss
        assert torch.equal(a.model.head.weight, b.model.head.weight)


def test_streamed_activations_and_class_means_equal_the_in_memory_ones(data, cnn) -> None:
    memory, stream = data
    for layer in ("conv1", "conv2"):
        whole = unit_activations(cnn.model, layer, memory.x_test)
        streamed = collect_unit_activations(cnn.model, layer, stream.test, batch_size=64)
        torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-6)
        means = class_conditional_means(cnn.model, layer, memory.x_test, memory.y_test, 10)
        streamed_means = collect_class_means(cnn.model, layer, stream.test, 10, batch_size=64)
        torch.testing.assert_close(streamed_means, means, rtol=0, atol=1e-6)


@pytest.mark.parametrize("value", ["zero", "mean", "resample"])
def test_streamed_fills_equal_the_in_memory_ones(data, cnn, value) -> None:
    memory, stream = data
    whole = fill_values(cnn.model, "conv1", memory.x_test, value, seed=4)
    streamed = fill_values(cnn.model, "conv1", stream.test, value, seed=4, batch_size=48)
    torch.testing.assert_close(streamed, whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("which", "layer", "strategy"),
    [
        ("mlp", "hidden1", "rank_one"),
        ("mlp", "hidden2", "split"),
        ("mlp", "hidden1", "hooks"),
        ("cnn", "conv1", "conv_delta"),
        ("cnn", "conv2", "split"),
    ],
)
@pytest.mark.parametrize("value", ["zero", "mean", "resample"])
def test_streamed_sweeps_equal_the_in_memory_ones(
    data, mlp, cnn, which, layer, strategy, value
) -> None:
    memory, stream = data
    model = (mlp if which == "mlp" else cnn).model
    n = unit_activations(model, layer, memory.x_test[:1]).shape[1]
    masks = torch.cat(
        [single_unit_masks(n), torch.rand(5, n, generator=torch.Generator().manual_seed(0)) < 0.3]
    )
    for metric in ("accuracy_drop", "loss_increase"):
        kw = {"value": value, "metric": metric, "strategy": strategy, "seed": 2}
        whole = ablation_effects(model, layer, memory.x_test, memory.y_test, masks, **kw)
        # A budget this small cuts the 200 examples into several blocks and chunks.
        streamed = ablation_effects(
            model, layer, stream.test, None, masks, max_bytes=400_000, batch_size=32, **kw
        )
        torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-6)


def test_a_streamed_sweep_runs_in_blocks_within_its_budget(data, cnn) -> None:
    memory, stream = data
    fill = fill_values(cnn.model, "conv1", memory.x_test, "zero")
    masks = single_unit_masks(4)
    whole = ablation_sweep(cnn.model, "conv1", memory.x_test, memory.y_test, masks, fill)
    seen: list[int] = []

    class Counting(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(stream.test)

        def __getitems__(self, idx: list[int]):
            seen.append(len(idx))
            return gather(stream.test, idx)

    res = ablation_sweep(cnn.model, "conv1", Counting(), None, masks, fill, max_bytes=4_000_000)
    probe, blocks = seen[0], seen[1:]  # the strategy check reads the first 64 examples
    assert probe == 64 and sum(blocks) == 200 and len(blocks) > 2
    torch.testing.assert_close(res.ablated, whole.ablated, rtol=0, atol=1e-9)
    assert torch.equal(res.intact, whole.intact)
    assert res.rows_evaluated == whole.rows_evaluated


def test_batches_follow_an_order_and_gather_items_one_by_one() -> None:
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    order = torch.tensor([3, 1, 4, 0, 5, 9, 2, 6, 8, 7])
    got = [yb.tolist() for _, yb in batches((x, y), 4, order)]
    assert got == [[3, 1, 4, 0], [5, 9, 2, 6], [8, 7]]
    ds = torch.utils.data.TensorDataset(x, y)
    assert [yb.tolist() for _, yb in batches(ds, 4, order)] == got


def _user(name: str) -> UserData:
    return UserData.model_validate(
        {"loader": f"tests.helpers.streamdata:{name}", "kwargs": {"n_test": 300}},
        context={"base_dir": "."},
    )


def test_a_user_map_style_dataset_streams_like_it_loads(tmp_path) -> None:
    spec = _user("load_items")
    memory, stream = spec.load(), spec.streamed()
    assert stream.n_classes == memory.n_classes == 10 and stream.input_shape == (64,)
    assert torch.equal(stream.y_train, memory.y_train)
    xb, _ = next(iter(batches(stream.train, 100)))
    assert xb.dtype == torch.float32 and torch.equal(xb, memory.x_train[:100])
    pop = Population(
        data=spec,
        model=MLPSpec(kind="mlp", hidden=(16,)),
        training=TrainingSpec(epochs=2, batch_size=64, lr=0.01),
        seeds=2,
    )
    a = train_replicate(pop, memory, 0, CPU)
    b = train_replicate(pop, stream, 0, CPU)
    assert torch.equal(a.model.head.weight, b.model.head.weight)
    masks = single_unit_masks(16)
    whole = ablation_effects(a.model, "hidden1", memory.x_test, memory.y_test, masks)
    streamed = ablation_effects(b.model, "hidden1", stream.test, None, masks, max_bytes=100_000)
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-6)


def test_a_user_loader_that_returns_no_datasets_is_a_located_error() -> None:
    with pytest.raises(UserCodeError, match=r"population\.data\.loader"):
        _user("load_unbatchable").streamed()
