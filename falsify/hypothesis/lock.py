"""Pre-registration: `falsify lock` records what each verdict depends on before any result exists.

The lock stores, per hypothesis id, the validated content its verdict depends on (population,
test, prediction: decision rule, SESOI, α, seeds …) and a hash of it, plus the file's own hash
and the time of locking. A report then states one of:

- ``PRE-REGISTERED``: the decision-relevant content is unchanged since the lock, and the lock is
  older than the first result for that hypothesis;
- ``CHANGED AFTER LOCK``: some decision-relevant field differs (the report lists each one, with
  its locked and current value), e.g. a SESOI edited after seeing a result, or a ``--seeds``
  override;
- ``LOCKED AFTER RESULTS``: unchanged, but the lock was made after a result already existed;
- ``NOT LOCKED``: no lock entry for this hypothesis.

Comments, formatting and the claim's prose are not decision-relevant, so editing them keeps a
hypothesis pre-registered.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from falsify._io import atomic_write_text
from falsify.errors import FalsifyError
from falsify.hypothesis.kinds import REGULARIZERS
from falsify.hypothesis.loader import HypothesisFile
from falsify.hypothesis.schema import Hypothesis

__all__ = [
    "DEFAULT_LOCK",
    "PreRegistration",
    "decision_content",
    "lock_files",
    "preregistration",
]

DEFAULT_LOCK = Path("falsify.lock")
_DECISION_FIELDS = {"population", "test", "prediction"}


def decision_content(h: Hypothesis) -> dict[str, Any]:
    """Everything a verdict depends on, flattened to ``{"prediction.sesoi": 0.1, ...}``.

    Fields at their default value are left out, so a field added to the file format in a
    later version (with a default that keeps the old behaviour) does not turn an old lock
    into CHANGED AFTER LOCK. A regularizer's settings keep the flat names they had before
    the ``training`` blocks (``training.selectivity_alpha``), for the same reason.
    """
    flat = _flatten(h.model_dump(mode="json", include=_DECISION_FIELDS, exclude_defaults=True))
    legacy = {
        f"population.training.{tag}.{field}": f"population.training.{old}"
        for tag, cls in REGULARIZERS.items()
        for old, field in cls.legacy_fields.items()
    }
    return {legacy.get(k, k): v for k, v in flat.items()}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: d}


def _hash(content: dict[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FalsifyError(
            f"The lock file {path} must be JSON written by `falsify lock`: {exc}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("hypotheses"), dict):
        raise FalsifyError(f"The lock file {path} must be JSON written by `falsify lock`.")
    return data["hypotheses"]


def lock_files(
    files: list[HypothesisFile], lock_path: Path, first_results: dict[str, str | None]
) -> list[str]:
    """Record each file's decision content in ``lock_path``; return one line per file.

    ``first_results`` maps a hypothesis id to the time of its first result, if any exists, so
    that a lock made after a result is recorded (and reported) as such.
    """
    entries = _read(lock_path)
    lines = []
    for hf in files:
        h = hf.hypothesis
        content = decision_content(h)
        new = {
            "file": str(hf.path),
            "file_sha256": hf.sha256,
            "content_sha256": _hash(content),
            "content": content,
            "locked_at": _now(),
        }
        old = entries.get(h.id)
        if old and old.get("content_sha256") == new["content_sha256"]:
            lines.append(f"unchanged  {h.id}: locked at {old['locked_at']}")
            continue
        entries[h.id] = new
        after = first_results.get(h.id)
        note = f" (a result already existed, from {after})" if after else ""
        lines.append(f"locked     {h.id}: {new['content_sha256'][:12]}{note}")
    text = json.dumps({"version": 1, "hypotheses": entries}, indent=2, sort_keys=True)
    atomic_write_text(lock_path, text)
    return lines


@dataclass(frozen=True)
class PreRegistration:
    status: str  # PRE-REGISTERED | CHANGED AFTER LOCK | LOCKED AFTER RESULTS | NOT LOCKED
    detail: str
    changed: tuple[tuple[str, Any, Any], ...] = ()  # (field, locked value, current value)


def preregistration(
    hf: HypothesisFile, lock_path: Path, first_result_at: str | None
) -> PreRegistration:
    """The pre-registration status of ``hf`` (with its overrides applied) against the lock."""
    entry = _read(lock_path).get(hf.hypothesis.id)
    if entry is None:
        return PreRegistration("NOT LOCKED", f"no entry for this hypothesis in {lock_path}")
    locked: dict[str, Any] = entry["content"]
    current = decision_content(hf.hypothesis)
    changed = tuple(
        (k, locked.get(k), current.get(k))
        for k in sorted(locked.keys() | current.keys())
        if locked.get(k) != current.get(k)
    )
    when = entry["locked_at"]
    if changed:
        fields = ", ".join(k for k, _, _ in changed)
        return PreRegistration(
            "CHANGED AFTER LOCK", f"locked at {when} in {lock_path}; changed: {fields}", changed
        )
    if first_result_at is not None and first_result_at < when:
        return PreRegistration(
            "LOCKED AFTER RESULTS",
            f"locked at {when}, after the first result ({first_result_at})",
        )
    return PreRegistration(
        "PRE-REGISTERED", f"locked at {when} in {lock_path}, before the first result"
    )
