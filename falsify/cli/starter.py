"""``falsify new SHAPE``: a commented starter hypothesis file built from the shape's registry
entry (its ``example`` and its fields), so a plugin's shape gets one too (docs/file-format.md)."""

from __future__ import annotations

from pathlib import Path

import yaml

from falsify.errors import FalsifyError, did_you_mean
from falsify.hypothesis.kinds import SHAPES
from falsify.report.kinds import kind_fields

__all__ = ["starter_text", "write_starter"]

# A grid the between-conditions examples refer to (their reference is label_noise 0.0).
_GRID = {"training.label_noise": [0.0, 0.5]}

_HEAD = """\
# A starter hypothesis file for the {label} test ({docs}),
# written by `falsify new {tag}`.
# It passes `falsify check` as written; state your claim, then edit the test and prediction.
# Every field: docs/file-format.md; every kind and its fields: `falsify kinds --fields`;
# completion in an editor: docs/editors.md.
id: {id}
claim: >-
  TODO: one sentence that can come out false, e.g. "more selective units matter more".
# source: {{citation: "Author (year). Title.", url: "https://..."}}

population:                      # the trained models the claim is about
  data: {{kind: digits}}           # scikit-learn's 8x8 digits, bundled; `falsify kinds datasets`
  model: {{kind: mlp, hidden: [32, 32]}}   # layers hidden1, hidden2; `falsify kinds architectures`
  training: {{epochs: 20}}         # optimizer, lr, batch_size, ... (docs/file-format.md)
  seeds: 5                       # replicates: seeds 0..4, one trained model each
"""

_PREDICTION = """
prediction:
  direction: positive            # positive | negative | none (an equivalence claim)
  sesoi: 0.1                     # the smallest effect that would matter, in the test's units
  alpha: 0.05                    # one-sided; the verdict reads the 90% CI
  # combine: all                 # several parts: all must hold, or any
  # adjust: holm                 # multiplicity across parts: holm | bonferroni | none
"""


def starter_text(tag: str) -> str:
    """The starter file for the shape ``tag``."""
    if tag not in SHAPES:
        raise FalsifyError(
            f"The shape {tag!r} is not a registered test shape: expected one of {list(SHAPES)}. "
            f"Got {tag!r} instead.{did_you_mean(tag, SHAPES)}"
        )
    cls = SHAPES[tag]
    out = _HEAD.format(label=cls.label, docs=cls.docs, tag=tag, id=f"my_{tag}".replace("-", "_"))
    if cls.compares_conditions:
        grid = yaml.safe_dump({"conditions": _GRID}, default_flow_style=None, sort_keys=False)
        out += "".join(f"  {line}\n" for line in grid.splitlines())
        out = out.rstrip("\n") + "   # each condition trains every seed\n"
    test = yaml.safe_dump(
        {"test": {"kind": tag, **cls.example}}, default_flow_style=None, sort_keys=False
    )
    out += "\n" + test
    unset = [f for f in kind_fields(cls) if f[0] not in cls.example]
    if unset:
        out += "  # more fields of this test (type, default):\n"
        for name, type_name, default, description in unset:
            note = f": {description}" if description else ""
            out += f"  # {name}: {type_name} {default}{note}\n"
    return out + _PREDICTION


def write_starter(tag: str, path: Path | None = None) -> Path:
    """Write the starter for ``tag`` to ``path`` (default ``<tag>.yaml``); never overwrite."""
    path = path or Path(f"{tag}.yaml")
    text = starter_text(tag)
    try:
        with path.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise FalsifyError(
            f"{path} exists already; name another file (falsify new {tag} PATH)."
        ) from None
    except OSError as exc:
        raise FalsifyError(f"{path} cannot be written: {exc.strerror}.") from None
    return path
