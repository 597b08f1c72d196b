from __future__ import annotations

import pytest
import torch

import falsify
from falsify.cli.main import main
from falsify.errors import FalsifyError, LocatedError
from falsify.hypothesis.loader import loads
from falsify.models import build_model
from falsify.models.memory import check_fits, parameter_count
from falsify.runner import ModelCache
from falsify.runner.estimate import estimate_training, format_duration

_HUGE_EPOCHS = "population.training.epochs=1000000000"


def test_check_says_roughly_how_long_and_cached(write, tiny_yaml, tmp_path, capsys) -> None:
    path, cache = write(tiny_yaml), tmp_path / "cache"
    assert main(["check", str(path), "--cache", str(cache)]) == 0
    assert "3 to train on cpu, about " in capsys.readouterr().out
    assert main(["check", str(path), "--cache", str(cache), "--set", _HUGE_EPOCHS]) == 0
    assert capsys.readouterr().out.rstrip().endswith(" h")  # hours, not seconds
    falsify.run(path, cache=cache)
    assert main(["check", str(path), "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "3 cached, 0 to train" in out and "about" not in out


def test_a_replicate_missing_a_checkpoint_is_not_counted_cached(
    write, tiny_yaml, tmp_path, capsys
) -> None:
    """Keeping checkpoints leaves the replicate's key as it is, but a cached model without its
    checkpoints is trained again, so check counts it to train."""
    path, cache = write(tiny_yaml), tmp_path / "cache"
    falsify.run(path, cache=cache)
    keep = ["--set", "population.training.checkpoint_epochs=[1]"]
    assert main(["check", str(path), "--cache", str(cache), "--no-estimate", *keep]) == 0
    assert "0 cached, 3 to train" in capsys.readouterr().out


def test_check_without_the_estimate_trains_nothing(
    write, tiny_yaml, tmp_path, capsys, monkeypatch
) -> None:
    import falsify.runner.estimate as estimate

    def no_probe(*args: object) -> float:
        raise AssertionError("--no-estimate must not time training steps")

    monkeypatch.setattr(estimate, "_probe", no_probe)
    path, cache = write(tiny_yaml), tmp_path / "cache"
    assert main(["check", str(path), "--cache", str(cache), "--no-estimate"]) == 0
    out = capsys.readouterr().out
    assert "0 cached, 3 to train on cpu" in out and "about" not in out


def test_estimate_grows_with_the_work(tiny_yaml) -> None:
    hf = loads(tiny_yaml, "tiny.yaml")
    pop = hf.hypothesis.population
    data = falsify.data.load_dataset(pop.data)
    est = estimate_training(pop, data, ModelCache("/nonexistent"), torch.device("cpu"))
    assert (est.to_train, est.cached) == (3, 0) and est.seconds > 0
    huge = loads(tiny_yaml, "tiny.yaml", [_HUGE_EPOCHS]).hypothesis.population
    big = estimate_training(huge, data, ModelCache("/nonexistent"), torch.device("cpu"))
    assert big.hours > 100  # a probe step takes well over 1e-9 s


def test_with_steps_the_estimate_counts_steps_not_epochs(tiny_yaml) -> None:
    """``training.steps`` stops training after that many steps, whatever ``epochs`` says."""
    steps = ["population.training.steps=20", _HUGE_EPOCHS]
    pop = loads(tiny_yaml, "tiny.yaml", steps).hypothesis.population
    data = falsify.data.load_dataset(pop.data)
    est = estimate_training(pop, data, ModelCache("/nonexistent"), torch.device("cpu"))
    assert 0 < est.seconds < 600  # 20 steps of a 16-unit MLP, not 10⁹ epochs


def test_the_probe_trains_its_few_steps_not_the_recipes(tiny_yaml, monkeypatch) -> None:
    # A recipe's `steps` must not make each probe train that many steps on its slice.
    counted: list[int] = []
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        counted.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    pop = loads(tiny_yaml, "tiny.yaml", ["population.training.steps=500"]).hypothesis.population
    data = falsify.data.load_dataset(pop.data)
    est = estimate_training(pop, data, ModelCache("/nonexistent"), torch.device("cpu"))
    assert est.seconds > 0
    # A warm-up of one step, then twice one step and twice 8 steps (one stacked ensemble).
    assert len(counted) == 1 + 2 * 1 + 2 * 8


def test_run_refuses_work_beyond_max_hours(write, tiny_yaml, tmp_path, capsys) -> None:
    path, cache, out = write(tiny_yaml), tmp_path / "cache", tmp_path / "reports"
    args = ["run", str(path), "--cache", str(cache), "--out", str(out), "--quiet"]
    assert main([*args, "--set", _HUGE_EPOCHS]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-hours" in err and str(path) in err
    assert not out.exists() and not (cache / "models").exists()
    with pytest.raises(FalsifyError, match=r"beyond the limit of 0\.5 h"):
        falsify.run(falsify.load(path, [_HUGE_EPOCHS]), cache=cache, max_hours=0.5)


def test_a_model_too_big_for_memory_is_a_field_error(write, tiny_yaml, tmp_path, capsys) -> None:
    path = write(tiny_yaml.replace("hidden: [16]", "hidden: [100000000000]"))
    cache = ["--cache", str(tmp_path / "cache")]
    for args in (["check", *cache], ["run", *cache, "--out", str(tmp_path / "reports")]):
        assert main([args[0], str(path), *args[1:]]) == 1
        err = capsys.readouterr().err
        assert f"The 'population.model.hidden' of {path} (line 5) must be small enough" in err
        assert "internal error" not in err and err.count("\n") == 1


def test_parameters_are_counted_without_allocating(tiny_yaml) -> None:
    spec = loads(tiny_yaml, "tiny.yaml").hypothesis.population.model
    real = sum(p.numel() for p in build_model(spec, (8, 8), 10).parameters())
    assert parameter_count(spec, (8, 8), 10) == real == 64 * 16 + 16 + 16 * 10 + 10
    wide = spec.model_copy(update={"hidden": (10**11,)})
    with pytest.raises(LocatedError) as info:
        check_fits(wide, (8, 8), 10, torch.device("cpu"))
    assert info.value.loc == ("population", "model", "hidden")


@pytest.mark.parametrize(
    ("seconds", "text"), [(3.2, "3 s"), (600, "10 min"), (7200, "2 h"), (3.6e9, "1.00e+06 h")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
