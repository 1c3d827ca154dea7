"""Read a study back: trials by state, the best trial, its parameters as a study-file block."""

from __future__ import annotations

from collections import Counter

import optuna
import yaml

from tuner.errors import BadInput
from tuner.stop_rules import stop_record
from tuner.study import best_trial, best_trials, make_storage
from tuner.urls import redact


class NoSuchStudy(BadInput, LookupError):
    """The storage holds no study of that name."""


def load_study(storage_url: str, name: str) -> optuna.Study:
    storage = make_storage(storage_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if name not in names:
        listed = ", ".join(names) or "none"
        raise NoSuchStudy(f"no study {name!r} in {redact(storage_url)}; studies there: {listed}")
    return optuna.load_study(study_name=name, storage=storage)


def status_text(storage_url: str, name: str | None) -> str:
    if name is None:
        summaries = optuna.get_all_study_summaries(make_storage(storage_url))
        if not summaries:
            return f"no studies in {redact(storage_url)}"
        return "\n\n".join(status_text(storage_url, s.study_name) for s in summaries)
    study = load_study(storage_url, name)
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    lines = [
        f"study {name!r}: {len(trials)} trial(s): "
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())),
        f"directions: {', '.join(d.name.lower() for d in study.directions)}",
    ]
    stopped = stop_record(study)
    if stopped is not None:
        lines.append(f"stopped: {stopped.line()}")
    for t in best_trials(study):
        values = ", ".join(f"{v:.6g}" for v in t.values)
        lines.append(f"best: trial {t.number} value {values}")
        lines += [f"  {k}: {v}" for k, v in t.params.items()]
    return "\n".join(lines)


def best_yaml(storage_url: str, name: str) -> str:
    study = load_study(storage_url, name)
    t = best_trial(study)
    if t is None:
        raise NoSuchStudy(
            f"study {name!r} has no complete trial yet; see `rnn-tuner status {name}`"
        )
    values = ", ".join(f"{v:.6g}" for v in t.values)
    head = (
        f"# best trial of study {name!r}: trial {t.number}, value {values}\n"
        "# paste into a study file; remove these names from its `search:` block\n"
    )
    return head + yaml.safe_dump({"fixed": t.params}, sort_keys=False)
