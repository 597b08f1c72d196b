"""Users' own models and data by import path, and checkpoints, end to end from the CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from falsify.cli.main import main
from falsify.data import load_dataset
from falsify.errors import FalsifyError
from falsify.hypothesis.loader import load
from falsify.models.training import evaluate
from falsify.runner.cache import ModelCache
from falsify.runner.replicates import obtain_replicates, recipe_of
from falsify.runner.run import plan
from tests.helpers.usermodels import Net

REPO = Path(__file__).parents[1]

USER = """\
id: user_net
claim: Selective units of my own network matter more.
population:
  data:
    loader: tests.helpers.usermodels:load_tensors
    kwargs: {n_test: 400}
  model:
    factory: tests.helpers.usermodels:make_net
    kwargs: {width: 12}
  training: {epochs: 3, batch_size: 128, lr: 0.01}
  seeds: 2
test:
  kind: association
  layers: [body, act2]
  x: {kind: class_selectivity}
  y: {kind: unit_ablation, metric: loss_increase}
prediction: {direction: positive, sesoi: 0.1}
"""


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "reports", tmp_path / "cache"


def _cli(*args: str) -> int:
    return main(list(args))


def test_user_model_through_the_targeted_shape(write, dirs) -> None:
    # The same user model and loader, tested as targeted-vs-control: ablate the 4 units of
    # `body` with the largest mean |gradient × activation| against random groups of 4.
    out, cache = dirs
    text = USER.replace(
        """  kind: association
  layers: [body, act2]
  x: {kind: class_selectivity}
  y: {kind: unit_ablation, metric: loss_increase}""",
        """  kind: targeted
  layers: [body]
  scores: [{kind: gradient_x_activation}]
  k: [4]
  draws: 10
  metric: loss_increase""",
    ).replace("id: user_net", "id: user_targeted")
    path = write(text)
    assert _cli("run", str(path), "--out", str(out), "--cache", str(cache), "--quiet") == 0
    parts = pd.read_csv(out / "user_targeted.parts.csv")
    assert list(parts["n_replicates"]) == [2]
    assert "gradient_x_activation" in parts["part"].iloc[0]
    tidy = pd.read_csv(out / "user_targeted.csv")
    assert set(tidy["seed"]) == {0, 1}


def test_user_model_and_loader_run_end_to_end(write, dirs, capsys) -> None:
    out, cache = dirs
    path = write(USER)
    args = ("run", str(path), "--out", str(out), "--cache", str(cache), "--quiet")
    assert _cli(*args) == 0
    assert "user_net" in capsys.readouterr().out
    report = (out / "user_net.md").read_text()
    rows = report.split("## Per replicate")[1].split("##")[0]
    per_rep = [r.split("|") for r in rows.splitlines() if r.startswith("| body |")]
    assert len(per_rep) == 2 and {int(r[4]) for r in per_rep} == {12}  # n units of `body`
    assert min(float(r[5]) for r in per_rep) > 0.5  # trained: digits, chance is 0.1
    assert _cli(*args) == 0
    assert "(2 cached)" in capsys.readouterr().out


def test_layer_names_are_validated_against_the_user_model(write, dirs, capsys) -> None:
    _, cache = dirs
    path = write(USER.replace("layers: [body, act2]", "layers: [bdy]"))
    assert _cli("check", str(path), "--cache", str(cache)) == 1
    err = capsys.readouterr().err
    assert "'test.layers[0]'" in err and "Did you mean 'body'?" in err and "'act2.0'" in err


def test_dataset_pair_equals_tensor_loader(write) -> None:
    a = load_dataset(load(write(USER)).hypothesis.population.data)
    b = load_dataset(
        load(write(USER.replace(":load_tensors", ":load_datasets"))).hypothesis.population.data
    )
    for t in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, t), getattr(b, t))
    assert a.n_classes == b.n_classes == 10 and a.input_shape == (64,)


@pytest.mark.parametrize(
    "old,new,field,needle",
    [
        (
            "usermodels:make_net",
            "usermodel:make_net",
            "'population.model.factory'",
            "no module named 'tests.helpers.usermodel'; did you mean "
            "'tests.helpers.usermodels:make_net'?",
        ),
        (
            "usermodels:make_net",
            "usermodels:make_nett",
            "'population.model.factory'",
            "has no 'make_nett'; did you mean 'tests.helpers.usermodels:make_net'?",
        ),
        (
            "usermodels:make_net",
            "usermodels:not_a_model",
            "'population.model.factory'",
            "must be a function returning a torch.nn.Module. Got "
            "'tests.helpers.usermodels:not_a_model -> int'",
        ),
        (
            "usermodels:load_tensors",
            "usermodels:load_three",
            "'population.data.loader'",
            "-> a 3-tuple",
        ),
        (
            "usermodels:make_net",
            "usermodels make_net",
            "'population.model.factory'",
            "String should match pattern",
        ),
        (
            "    factory: tests.helpers.usermodels:make_net\n",
            "    kind: mlpp\n",
            "'population.model.kind'",
            "one of ['cnn', 'huggingface', 'mlp', 'resnet20'",
        ),
    ],
)
def test_user_code_errors_are_one_line_with_the_field(
    write, tmp_path, capsys, old, new, field, needle
) -> None:
    text = USER.replace(old, new)
    if "mlpp" in new:
        text = text.replace("    kwargs: {width: 12}\n", "")
    path = write(text)
    assert _cli("check", str(path), "--cache", str(tmp_path / "c")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert field in err and str(path) in err and "(line " in err
    assert needle in err


def test_factory_is_imported_from_the_working_directory_by_the_cli(tmp_path) -> None:
    # The `falsify` console script does not put the working directory on sys.path itself; a
    # package in the project folder the command runs from must still be found.
    project, hyps = tmp_path / "project", tmp_path / "hypotheses"
    (project / "mypkg_cwd").mkdir(parents=True)
    (project / "mypkg_cwd" / "__init__.py").write_text("")
    (project / "mypkg_cwd" / "nets.py").write_text(
        "from tests.helpers.usermodels import make_net as build\n"
    )
    hyps.mkdir()
    (hyps / "h.yaml").write_text(
        USER.replace("tests.helpers.usermodels:make_net", "mypkg_cwd.nets:build")
    )
    script = (
        "import sys; sys.path.remove(''); from falsify.cli.main import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "check",
            str(hyps / "h.yaml"),
            "--cache",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        cwd=project,
        env={"PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "user_net (association); 2 replicates" in proc.stdout


def test_cache_key_follows_import_path_kwargs_and_source(tmp_path, write) -> None:
    # A package beside the hypothesis file (found without installing it).
    pkg = tmp_path / "mypkg_cachekey"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    source = textwrap.dedent(
        """\
        from torch import nn

        def make(width=8):
            return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
        """
    )
    (pkg / "models.py").write_text(source)
    text = USER.replace("tests.helpers.usermodels:make_net", "mypkg_cachekey.models:make")
    text = text.replace("width: 12", "width: 8")
    path = write(text)
    base = recipe_of(load(path).hypothesis.population)
    other_kwargs = recipe_of(load(path, ["population.model.kwargs.width=9"]).hypothesis.population)
    assert base != other_kwargs
    assert (
        base["identity"]["factory_source_sha256"]
        == other_kwargs["identity"]["factory_source_sha256"]
    )
    (pkg / "models.py").write_text(source + "\n# an edit that could change the model\n")
    edited = recipe_of(load(path).hypothesis.population)
    assert edited["model"] == base["model"] and edited != base
    assert "loader_source_sha256" in edited["identity"]


def _save_seed_weights(folder: Path, seeds: list[int], fmt: str) -> dict[int, dict]:
    folder.mkdir(exist_ok=True)
    states = {}
    for s in seeds:
        torch.manual_seed(100 + s)
        state = {k: v.clone() for k, v in Net(12).state_dict().items()}
        if fmt == "pt":
            torch.save(state, folder / f"net_{s}.pt")
        else:
            save_file(state, str(folder / f"net_{s}.safetensors"))
        states[s] = state
    return states


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_checkpoint_round_trip(write, tmp_path, dirs, fmt, capsys) -> None:
    out, cache = dirs
    states = _save_seed_weights(tmp_path / "ckpt", [0, 1], fmt)
    text = USER.replace(
        "    kwargs: {width: 12}\n",
        f"    kwargs: {{width: 12}}\n    checkpoint: ckpt/net_{{seed}}.{fmt}\n",
    )
    path = write(text)
    hf = load(path)
    p = plan(hf, ModelCache(cache), torch.device("cpu"))
    assert (p.n_replicates, p.n_cached) == (2, 2)  # nothing to train
    reps = obtain_replicates(
        hf.hypothesis.population, p.data, ModelCache(cache), torch.device("cpu")
    )
    data = p.data
    for rep in reps:
        loaded = rep.model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in states[rep.seed].items())
        assert rep.test_accuracy == evaluate(rep.model, data.x_test, data.y_test)
    assert not rep.cache_hit and not (cache / "models").exists()  # evaluated as-is, not cached

    assert _cli("run", str(path), "--out", str(out), "--cache", str(cache), "--quiet") == 0
    assert "user_net" in capsys.readouterr().out
    assert not (cache / "models").exists()


def test_checkpoint_list_one_per_seed(write, tmp_path) -> None:
    _save_seed_weights(tmp_path / "ckpt", [5, 7], "pt")
    text = USER.replace("seeds: 2", "seeds: [5, 7]").replace(
        "    kwargs: {width: 12}\n",
        "    kwargs: {width: 12}\n    checkpoint: [ckpt/net_5.pt, ckpt/net_7.pt]\n",
    )
    hf = load(write(text))
    assert plan(hf, ModelCache(tmp_path / "c"), torch.device("cpu")).n_cached == 2
    with pytest.raises(FalsifyError, match=r"a list of 3 paths, one per seed \[5, 7, 8\].*2 paths"):
        plan(
            load(write(text.replace("[5, 7]", "[5, 7, 8]"))),
            ModelCache(tmp_path / "c"),
            torch.device("cpu"),
        )


def _checkpoint_error(write, tmp_path, save, checkpoint="ckpt/net_{seed}.pt") -> str:
    (tmp_path / "ckpt").mkdir(exist_ok=True)
    for s in (0, 1):
        save(tmp_path / "ckpt" / f"net_{s}.pt")
    text = USER.replace(
        "    kwargs: {width: 12}\n", f"    kwargs: {{width: 12}}\n    checkpoint: {checkpoint}\n"
    )
    with pytest.raises(FalsifyError) as exc:
        plan(load(write(text)), ModelCache(tmp_path / "c"), torch.device("cpu"))
    msg = str(exc.value)
    assert "'population.model.checkpoint'" in msg and "(line 10)" in msg and "\n" not in msg
    return msg


def test_pickled_full_module_is_refused(write, tmp_path) -> None:
    msg = _checkpoint_error(write, tmp_path, lambda p: torch.save(Net(12), p))
    assert "net_0.pt" in msg and "pickled full module" in msg and "is refused" in msg


def test_checkpoint_shape_mismatch_names_the_key(write, tmp_path) -> None:
    msg = _checkpoint_error(write, tmp_path, lambda p: torch.save(Net(8).state_dict(), p))
    assert "'body.0.weight' has shape [8, 64], the model's [12, 64]" in msg


def test_checkpoint_missing_and_unexpected_keys(write, tmp_path) -> None:
    def missing(p: Path) -> None:
        state = Net(12).state_dict()
        del state["out.bias"]
        torch.save(state, p)

    assert "missing key 'out.bias'" in _checkpoint_error(write, tmp_path, missing)

    def extra(p: Path) -> None:
        torch.save({**Net(12).state_dict(), "head.weight": torch.zeros(1)}, p)

    assert "unexpected key 'head.weight'" in _checkpoint_error(write, tmp_path, extra)


def test_checkpoint_needs_a_seed_template_and_existing_files(write, tmp_path) -> None:
    save = lambda p: torch.save(Net(12).state_dict(), p)  # noqa: E731
    assert "containing '{seed}'" in _checkpoint_error(write, tmp_path, save, "ckpt/net_0.pt")
    assert "an existing checkpoint file" in _checkpoint_error(
        write, tmp_path, save, "ckpt/other_{seed}.pt"
    )


def test_builtin_model_takes_a_checkpoint(write, tiny_yaml, tmp_path) -> None:
    from falsify.models import build_model
    from falsify.models.mlp import MLPSpec

    (tmp_path / "w").mkdir()
    for s in (0, 1, 2):
        torch.manual_seed(s)
        save_file(
            build_model(MLPSpec(kind="mlp", hidden=(16,)), (1, 8, 8), 10).state_dict(),
            str(tmp_path / "w" / f"{s}.safetensors"),
        )
    text = tiny_yaml.replace("hidden: [16]}", "hidden: [16], checkpoint: 'w/{seed}.safetensors'}")
    hf = load(write(text))
    p = plan(hf, ModelCache(tmp_path / "c"), torch.device("cpu"))
    assert p.n_cached == 3
    # Without a checkpoint the dump (and so the cache key and the lock) is as before.
    assert "checkpoint" not in load(write(tiny_yaml)).hypothesis.population.model.model_dump()


@pytest.mark.parametrize(
    "model,needle",
    [
        (
            "{factory: 'tests.helpers.usermodels:make_net', kwarg: {width: 3}}",
            "'population.model.kwarg' of {path} (line 5) is not a known field: expected one of "
            "the known fields ['checkpoint', 'factory', 'kwargs', 'units']. Got 'kwarg' instead. "
            "Did you mean 'kwargs'?",
        ),
        (
            "{kind: factory, factory: 'a:b'}",
            "'population.model.kind' of {path} (line 5) must be one of ['cnn', 'huggingface', 'mlp', 'resnet20', 'transformer'], or "
            "no kind and 'factory:' with an import path 'module:function'. Got 'factory' instead.",
        ),
        (
            "{factory: 'a:b', checkpoint: 3}",
            "must be a path template with '{seed}' or a list of paths, one per seed. Got 3",
        ),
        ("{hidden: [4]}", "'population.model.kind' of {path} (line 5) is required but missing"),
    ],
)
def test_model_union_errors_read_well(write, tiny_yaml, model, needle) -> None:
    from falsify.errors import HypothesisError

    path = write(tiny_yaml.replace("{kind: mlp, hidden: [16]}", model))
    with pytest.raises(HypothesisError) as exc:
        load(path)
    msg = str(exc.value)
    assert "\n" not in msg and needle.replace("{path}", str(path)) in msg


def test_builtin_cache_keys_gain_nothing(write, tiny_yaml) -> None:
    recipe = recipe_of(load(write(tiny_yaml)).hypothesis.population)
    assert "identity" not in recipe and "checkpoint" not in recipe["model"]
