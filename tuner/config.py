"""Study file (YAML) -> a validated `StudyConfig`, or one `StudyFileError` listing every problem.

A study file has these top-level blocks (docs/study-files.md documents each key):

    study:     name, storage
    task:      the data (models.data.config: one `source` and its keys)
    fixed:     settings that every trial uses (models.config.Settings field names)
    search:    settings the sampler chooses, each a float / int / categorical distribution
    objective: the validation metric(s) to optimise and their direction
    sampler, pruner, budget, enqueue, tracking

Checks run in two passes: the shape of every block (pydantic), then what needs more than one
block (names in `search` exist and do not clash with `fixed`, ranges give valid settings,
truncation fits the sequences, the batch fits the training set, data files exist). Both passes
collect every problem before raising, so a file with three mistakes gets one message naming three.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from models.config import MAPPING_FORMS, Settings, expand_setting, is_user_setting
from models.data import FILE_SOURCES, data_shape, task_data
from models.data.config import SOURCES, DataConfig, naive_baselines
from models.data.files import named_files
from models.errors import DataError
from models.metrics import METRIC_MODES, metric, val_metric_names
from tuner.constraints import RECORDED
from tuner.constraints import parse as parse_constraint
from tuner.default_space import DataSize, default_space
from tuner.errors import BadInput
from tuner.plugins import MULTI_OBJECTIVE_SAMPLERS, PRUNERS, SAMPLERS, option_problems
from tuner.urls import (
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_URI,
    redact,
    same_database,
    storage_problem,
    tracking_problem,
)
from tuner.yaml_file import YamlProblems, read_yaml

SOURCE_TASK = {
    "adding": "regression",
    "copy": "tagging",
    "sine": "regression",
    "csv": "regression",
    "text": "language_model",
    "tagged": "tagging",
}
# The operators of a `when:` condition (condition_holds applies them).
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "in": lambda a, b: a in b,
}
# How far a tie-break may move an objective's value: less than any accuracy step 1/N (Objective).
TIE_BREAK_WEIGHT = 1e-8
TOKEN_SOURCES = ("copy", "text", "tagged")  # token inputs: an embedding is searched too
# Why cross-validation is refused, by source (only npz folds independent sequences).
CV_REFUSED = {
    "csv": "csv series are time-ordered: a fold would validate on the past with a model "
    "trained on the future; keep one validation split (the last rows of each series)",
    "text": "a text is one time-ordered stream: a fold would validate on the past with a model "
    "trained on the future; keep one validation split (val_fraction)",
    "tagged": "cross-validation is for many-to-one tasks (source npz); a tagged corpus has "
    "tokens enough to validate on: raise val_fraction",
    "built in": "built-in data is generated to any size: raise n_val for a steadier "
    "validation value",
}
# Settings the budget block owns, so a study has one place to look for how long trials run.
BUDGET_KEYS = ("max_epochs",)


class StudyFileError(BadInput, ValueError):
    """A study file that cannot run; `problems` holds one `key.path: what is wrong` per mistake.

    The message is bounded whatever the file holds: the first `MAX_SHOWN` problems, each cut to
    `MAX_PROBLEM_CHARS`, then how many more; `lines` (key path -> line) adds where each is."""

    MAX_SHOWN, MAX_PROBLEM_CHARS = 50, 300

    def __init__(
        self, path: str | Path, problems: list[str], lines: dict[str, int] | None = None
    ) -> None:
        self.path, self.problems = str(path), problems
        shown = [_located(p, lines or {}, path) for p in problems[: self.MAX_SHOWN]]
        listed = "\n".join(f"  - {p}" for p in shown)
        more = len(problems) - len(shown)
        if more:
            listed += f"\n  ... and {more} more"
        super().__init__(f"{path}: {len(problems)} problem(s) in the study file:\n{listed}")


def _located(problem: str, lines: dict[str, int], path: str | Path) -> str:
    """`search.lr.step: ...` -> `search.lr.step: ... (x.yaml:12)`, cut to a readable length."""
    problem = shorten(problem, StudyFileError.MAX_PROBLEM_CHARS)
    key = problem.split(": ", 1)[0]
    while key and key not in lines:
        key = key.rpartition(".")[0]
    return f"{problem} ({path}:{lines[key]})" if key else problem


def shorten(text: str, limit: int) -> str:
    """`text`, or its start and `... (N characters)` when longer than `limit`."""
    return text if len(text) <= limit else f"{text[: limit - 30]}... ({len(text)} characters)"


MAX_NAME = 128  # study and experiment names: Optuna and MLflow accept longer, terminals do not


def name_problem(name: str) -> str | None:
    """What is wrong with a study or experiment name, if anything."""
    if not name.strip():
        return "is empty; give a name (letters, digits, - and _ read best)"
    if len(name) > MAX_NAME:
        return f"is {len(name)} characters long; at most {MAX_NAME}"
    bad = next((c for c in name if not c.isprintable()), None)
    if bad is not None:
        return f"holds the unprintable character {bad!r}; use printable characters only"
    return None


def _checked_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class _Strict(BaseModel):
    # NaN and infinity are YAML values (.nan, .inf) that no range or setting can use.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StudyBlock(_Strict):
    """The study: its name and where it is stored."""

    name: Annotated[str, AfterValidator(_checked_name)] = Field(
        description="The Optuna study's name, and the MLflow experiment's unless "
        f"`tracking.experiment` is set; printable, at most {MAX_NAME} characters.",
    )
    storage: str | None = Field(
        default=None,
        description="Study storage URL: `journal:///file.log` (a journal file: several workers "
        "on this machine), `sqlite:///file.db` (one worker) or "
        "`postgresql+psycopg://user:pass@host:5432/db`; `--storage` and `RNN_TUNER_STORAGE` "
        f"override it; null: `{DEFAULT_STORAGE}`.",
    )
    heartbeat_interval: int = Field(
        default=10, ge=1, description="Seconds between a running trial's heartbeats."
    )
    grace_period: int = Field(
        default=60,
        ge=1,
        description="Seconds without a heartbeat after which a trial belongs to a dead worker: "
        "it fails and is queued again. Longer than `heartbeat_interval`.",
    )

    @model_validator(mode="after")
    def _grace_after_heartbeat(self) -> StudyBlock:
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                f"grace_period ({self.grace_period}) must be longer than heartbeat_interval "
                f"({self.heartbeat_interval}), or live workers would be declared dead"
            )
        return self


_WHEN = Field(
    default=None,
    description="Sample this parameter only when every condition on parameters searched above "
    "it holds, e.g. `{num_layers: {gt: 1}}`; comparisons: " + ", ".join(COMPARISONS) + ".",
)


class FloatDist(_Strict):
    """A real number from a range."""

    type: Literal["float"] = Field(description="`float`.")
    low: float = Field(description="Lowest value.")
    high: float = Field(description="Highest value.")
    log: bool = Field(default=False, description="Sample on a log scale (`low` > 0).")
    step: float | None = Field(default=None, description="Discretisation step; null: none.")
    when: dict[str, Any] | None = _WHEN


class IntDist(_Strict):
    """An integer from a range."""

    type: Literal["int"] = Field(description="`int`.")
    low: int = Field(description="Lowest value.")
    high: int = Field(description="Highest value.")
    log: bool = Field(default=False, description="Sample on a log scale (`low` > 0).")
    step: int = Field(default=1, description="Spacing of the values.")
    when: dict[str, Any] | None = _WHEN


class CategoricalDist(_Strict):
    """One of listed values."""

    type: Literal["categorical"] = Field(description="`categorical`.")
    choices: list[Any] = Field(
        min_length=1, description="The values to choose from (null is a value, e.g. no truncation)."
    )
    when: dict[str, Any] | None = _WHEN


Distribution = Annotated[FloatDist | IntDist | CategoricalDist, Field(discriminator="type")]


class Objective(_Strict):
    """A validation metric to optimise."""

    metric: str = Field(
        description="A metric the task measures (`val_loss`, `val_mse`, `val_acc`, ...) or "
        "`n_params`."
    )
    direction: Literal["minimize", "maximize"] | None = Field(
        default=None,
        description="null: the metric's natural one (`maximize` for `val_acc`, else `minimize`).",
    )
    tie_break: str | None = Field(
        default=None,
        description="A second metric that orders trials with equal values of `metric` (an "
        "accuracy takes few values on a small validation set), e.g. `val_loss`. Optuna sees "
        "`metric` +- 1e-8 x t / (1 + |t|), t the tie-break's value in the same epoch, signed so "
        "that a better t is a better number: it never reorders different values of `metric` "
        "that differ by more than 2e-8 (any accuracy on fewer than 5 x 10^7 validation items). "
        "MLflow records both metrics as they are; null: none.",
    )

    @property
    def resolved_direction(self) -> str:
        return self.direction or _natural_direction(self.metric)

    def score(self, row: Mapping[str, float]) -> float:
        """The number Optuna sees for one epoch's metrics: the metric, nudged by the tie-break."""
        value = float(row[self.metric])
        if self.tie_break is None or math.isnan(row.get(self.tie_break, math.nan)):
            return value
        t = float(row[self.tie_break])
        agree = self.resolved_direction == _natural_direction(self.tie_break)
        return value + (1 if agree else -1) * TIE_BREAK_WEIGHT * t / (1 + abs(t))


class NamedPlugin(_Strict):
    """An Optuna sampler or pruner by name."""

    name: str = Field(description="Which one; the tables below list the names.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments passed to Optuna's class."
    )


class SamplerBlock(NamedPlugin):
    """The sampler: a NamedPlugin with constraints on the trials it may pick as best."""

    constraints: list[str] = Field(
        default_factory=list,
        description="Sampler only: `NAME <= NUMBER` or `NAME >= NUMBER` each (e.g. "
        "`n_params <= 1e5`); trials that break one are infeasible, never the best.",
    )
    history: int | None = Field(
        default=None,
        ge=1,
        description="`tpe` only: it reads the N best complete trials and the N most recently "
        "finished ones instead of every trial (a long study's ask costs O(N), not O(trials)); "
        "null: every trial, each taken in once (Optuna's draws; only TPE's numpy work grows "
        "with the study).",
    )


class Budget(_Strict):
    """How many trials, how long, how many epochs each."""

    n_trials: int | None = Field(
        default=None,
        ge=1,
        description="Trials one `rnn-tuner run` adds (`--n-trials` overrides); null: until "
        "`timeout`, `max_trials` or Ctrl-C.",
    )
    max_trials: int | None = Field(
        default=None,
        ge=1,
        description="The study's total across every worker on every machine "
        "(`--max-trials` overrides); null: no cap.",
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="Seconds after which this run starts no new trial (`--timeout` overrides); "
        "null: none.",
    )
    max_epochs: int = Field(default=20, ge=1, description="Epochs per trial at most.")
    # Rules that stop the whole study (tuner.stop_rules), decided from the study database.
    stop_after_no_improvement: int | None = Field(
        default=None,
        ge=1,
        description="Stop the study after N finished trials in a row (complete or pruned, in "
        "the order they ended) without a better best trial; every worker honours it. null: "
        "never.",
    )
    target: float | None = Field(
        default=None,
        description="Stop the study once its best value reaches this (<= when minimising, >= "
        "when maximising); one objective only. null: never.",
    )
    wall_time: float | None = Field(
        default=None,
        description="Stop the study once this long has passed since its first trial started, "
        "across every run and machine (`timeout` is per run): seconds, or `30m`, `2h`, "
        "`1h30m`, `1d`. null: never.",
    )
    max_failures: int = Field(
        default=3,
        ge=1,
        description="Consecutive failed trials after which a run stops with an error (a trial "
        "that fails before its first training step stops it at once: that error would recur).",
    )

    @field_validator("stop_after_no_improvement", mode="before")
    @classmethod
    def _patience(cls, value: Any) -> Any:
        if value is None or (type(value) is int and value >= 1):
            return value
        raise ValueError(
            f"{value!r} is not a number of trials; give a whole number N >= 1 (stop after N "
            "finished trials in a row without a better best), or null for no such rule"
        )

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> Any:
        if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
            return value
        raise ValueError(
            f"{shorten(repr(value), 60)} is not a number; give the objective's value to stop "
            "at (e.g. `target: 0.01` for a loss, `target: 0.95` for an accuracy), or null"
        )

    @field_validator("wall_time", mode="before", json_schema_input_type=str | float | None)
    @classmethod
    def _wall_time(cls, value: Any) -> Any:
        return None if value is None else duration_seconds(value)


_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([dhms])")


def duration_seconds(value: Any) -> float:
    """`7200`, `"7200"`, `"2h"`, `"30m"`, `"1h30m"`, `"1.5d"` -> seconds (> 0)."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        parts = _DURATION.findall(text)
        if _DURATION.sub("", text).strip() == "" and parts:
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
        else:
            try:
                seconds = float(text)
            except ValueError:
                seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(
            f"{shorten(repr(value), 60)} is not a duration; give seconds (7200) or a number with "
            "a unit d, h, m or s (`2h`, `30m`, `1h30m`), more than 0, or null"
        )
    return seconds


class Tracking(_Strict):
    """Where trials are recorded in MLflow."""

    experiment: Annotated[str, AfterValidator(_checked_name)] | None = Field(
        default=None, description="MLflow experiment name; null: the study name."
    )
    uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; `--tracking-uri` and `MLFLOW_TRACKING_URI` override "
        "it; null: `sqlite:///mlflow.db`.",
    )
    keep_best: int = Field(
        default=1,
        ge=0,
        description="A trial that ranks among the study's best k (by the primary objective) "
        "when it ends logs its best epoch's network to its MLflow run as a model; 0: keep none.",
    )


class RayBlock(_Strict):
    """The Ray cluster that runs the workers (`rnn-tuner run FILE --ray`, docs/scale.md)."""

    address: str | None = Field(
        default=None,
        description="`auto`: the cluster this machine joined with `ray start`; `HOST:PORT`: "
        "its head node's address; null: a Ray on this machine, started for the run and "
        "stopped after it. `--ray ADDRESS` and `RAY_ADDRESS` override it.",
    )
    max_restarts: int = Field(
        default=2,
        ge=0,
        description="Times Ray starts again a worker whose process died; the trial it was "
        "running fails after `study.grace_period` and is queued again.",
    )


class Resources(_Strict):
    """What each worker reserves on a cluster node (Ray places the workers by it)."""

    cpus: int = Field(
        default=1,
        ge=1,
        description="CPU cores per worker; also the most torch threads one of its trials uses.",
    )
    gpus: float = Field(
        default=0,
        ge=0,
        description="GPUs per worker (a fraction shares one); 0: trains on CPU.",
    )


class Cluster(_Strict):
    """Where the workers run when a cluster starts them."""

    ray: RayBlock | None = Field(
        default=None,
        description="Run the workers as Ray actors, as `--ray` does; null: only with `--ray`.",
    )
    resources: Resources = Field(
        default_factory=Resources, description="Per worker: `{cpus: 1, gpus: 0}`."
    )


class StudyConfig(_Strict):
    """An rnn-tuner study file: `rnn-tuner run FILE` searches it, `rnn-tuner validate FILE`
    checks it."""

    study: StudyBlock = Field(description="The study's name and storage.")
    task: Annotated[DataConfig, Field(discriminator="source")] = Field(
        description="The data; `source` picks the kind and so the task (docs/data.md)."
    )
    fixed: dict[str, Any] = Field(
        default_factory=dict, description="Settings every trial uses, by name."
    )
    search: dict[str, Distribution] | Literal["default"] = Field(
        default="default",
        description="Settings the sampler chooses, each a float, int or categorical "
        "distribution; in file order. `default` (also when omitted): the recommended space "
        "for the task and the data's size, less the settings in `fixed`; `{}`: none.",
    )
    objective: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="val_loss")],
        min_length=1,
        description="The metric(s) to optimise: a name, one `{metric, direction}` or a list "
        "(multi-objective); default `val_loss`.",
    )
    sampler: SamplerBlock = Field(
        default_factory=lambda: SamplerBlock(name="tpe"), description="Default: `tpe`."
    )
    pruner: NamedPlugin | None = Field(
        default=None, description="null: `median` for one objective, `none` for several."
    )
    budget: Budget = Field(default_factory=Budget, description="Trials, time and epochs.")
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Parameter sets (names from `search`) that run first, when the study is "
        "created.",
    )
    tracking: Tracking = Field(default_factory=Tracking, description="The MLflow side.")
    cluster: Cluster = Field(
        default_factory=Cluster,
        description="Workers on a Ray cluster and what each reserves (docs/scale.md).",
    )
    seed: int = Field(default=0, description="Seeds the sampler.")
    # The data size the default space was chosen for, when `search` is the default space.
    _default_search: DataSize | None = PrivateAttr(default=None)

    @field_validator("task", mode="before")
    @classmethod
    def _loader_options(cls, value: Any) -> Any:
        """A python loader's task keys other than source, loader and cv_folds are its keyword
        arguments."""
        if isinstance(value, dict) and value.get("source") == "python":
            own = {k: value[k] for k in ("source", "loader", "cv_folds") if k in value}
            return {**own, "options": {k: v for k, v in value.items() if k not in own}}
        return value

    @field_validator(
        "objective", mode="before", json_schema_input_type=str | Objective | list[Objective]
    )
    @classmethod
    def _objective_list(cls, value: Any) -> Any:
        """`objective: val_mse` and `objective: {metric: ...}` are one-item lists."""
        if isinstance(value, str):
            return [{"metric": value}]
        if isinstance(value, dict):
            return [value]
        return value

    @field_validator("fixed", mode="before")
    @classmethod
    def _flat_fixed(cls, value: Any) -> Any:
        """`scheduler: {name, options}` and `init: {uniform: a}` become flat settings; a mapping
        of another shape, or one that sets a key written beside it, is kept for the checks to
        report."""
        if not isinstance(value, dict):
            return value
        flat: dict[str, Any] = {}
        for name, given in value.items():
            try:
                parts = expand_setting(name, given)
            except ValueError:
                parts = {name: given}
            if any(key != name and key in value for key in parts):
                parts = {name: given}
            flat.update(parts)
        return flat

    @property
    def default_search(self) -> DataSize | None:
        """What the default space was chosen for; None when the study file gives `search`."""
        return self._default_search

    @property
    def cv_folds(self) -> int | None:
        """Folds of cross-validation (`task.cv_folds`), None for one validation split."""
        return getattr(self.task, "cv_folds", None)

    @property
    def objectives(self) -> list[Objective]:
        return self.objective

    @property
    def directions(self) -> list[str]:
        return [o.resolved_direction for o in self.objectives]

    @property
    def primary_index(self) -> int:
        """The objective that pruning, plots, the best trial and retraining go by."""
        return primary_index([o.metric for o in self.objectives])

    @property
    def primary_metric(self) -> str:
        return self.objectives[self.primary_index].metric

    @property
    def pruner_name(self) -> str:
        if self.pruner is not None:
            return self.pruner.name
        return "median" if len(self.objectives) == 1 else "none"

    @property
    def task_kind(self) -> str:
        if self.task.source == "npz":
            return self.task.target  # type: ignore[union-attr]
        if self.task.source == "python":  # the loader says; it runs once per process
            return task_data(self.task).info.task
        return SOURCE_TASK[self.task.source]

    @property
    def task_level(self) -> str | None:
        """A language model's token level (char or word), else None."""
        if self.task.source == "python":
            return task_data(self.task).info.level
        return getattr(self.task, "level", None)

    def base_settings(self) -> Settings:
        """Settings shared by every trial: defaults, then `fixed`, then the budget."""
        return replace(Settings().with_values(self.fixed), max_epochs=self.budget.max_epochs)

    def experiment_name(self) -> str:
        return self.tracking.experiment or self.study.name


def primary_index(metrics: Sequence[str]) -> int:
    """The primary objective: the first that is not n_params (a network's size is a trade-off
    to weigh, not what it learned), else the first."""
    return next((i for i, m in enumerate(metrics) if m != "n_params"), 0)


def condition_holds(when: dict[str, Any], values: dict[str, Any]) -> bool:
    """`{optimizer: sgd}` or `{num_layers: {gt: 1}}` or `{cell: {in: [lstm, gru]}}`: all must
    hold for the values given (a parameter's `when:`)."""
    for name, cond in when.items():
        value = values.get(name)
        tests = cond.items() if isinstance(cond, dict) else [("eq", cond)]
        if not all(COMPARISONS[op](value, ref) for op, ref in tests):
            return False
    return True


def _natural_direction(name: str) -> str:
    """The direction of the metric table (models.metrics); n_params is minimised."""
    return "maximize" if METRIC_MODES.get(name) == "max" else "minimize"


def load_study_file(path: str | Path, read_test: bool = False) -> StudyConfig:
    """Read and fully validate a study file. Raises StudyFileError listing every problem.

    `read_test` also checks a separate test file (`task.test`): `validate` and `retrain` do,
    `run` does not, since no trial may depend on the test file."""
    path = Path(path)
    try:
        raw, lines = read_yaml(path)
    except YamlProblems as e:
        raise StudyFileError(path, e.problems) from None
    try:
        return parse_study(raw, path, read_test)
    except StudyFileError as e:
        raise StudyFileError(path, e.problems, lines) from None


def parse_study(raw: Any, path: str | Path = "<study>", read_test: bool = False) -> StudyConfig:
    if not isinstance(raw, dict):
        raise StudyFileError(path, ["the file must be a mapping with `study:` and `task:` blocks"])
    problems: list[str] = []
    failed: set[str] = set()
    try:
        cfg = StudyConfig.model_validate(raw)
    except ValidationError as e:
        problems = [_describe(err) for err in e.errors() if not _other_branch(err, raw)]
        failed = {str(err["loc"][0]) for err in e.errors() if err["loc"]}
        # Check the rest without the broken blocks, so one run reports every mistake.
        placeholders = {"study": {"name": "_"}, "task": {"source": "adding"}}
        partial = {k: v for k, v in raw.items() if k not in failed}
        task = _known_keys_only(raw.get("task"))
        if "task" in failed and task is not None:  # unknown keys were reported; check the rest
            partial["task"] = task
            failed.discard("task")
        partial |= {k: v for k, v in placeholders.items() if k not in partial}
        failed |= {k for k in placeholders if k not in raw}
        try:
            cfg = StudyConfig.model_validate(partial)
        except ValidationError:
            raise StudyFileError(path, problems) from None
    cfg = _with_search_space(cfg, failed)
    problems += _cross_checks(cfg, failed, read_test)
    if problems:
        raise StudyFileError(path, problems)
    return cfg


def _with_search_space(cfg: StudyConfig, failed: set[str]) -> StudyConfig:
    """`search: default` (or none given) made concrete: the recommended space for the task and
    the data's size (tuner.default_space). Data that cannot be read gives an empty space here;
    the data checks report why."""
    if cfg.search != "default":
        return cfg
    space: dict[str, Any] = {}
    size = None
    if not failed & {"task", "fixed", "budget"}:
        try:
            max_len, n_train = training_shape(cfg.task)
            if math.isinf(n_train):  # a text: known only once read, which validate avoids
                n_train = _estimated_tokens(cfg.task)
            tokens = cfg.task.source in TOKEN_SOURCES or (
                cfg.task.source == "python" and task_data(cfg.task).info.vocab_size is not None
            )
            size = DataSize(
                cfg.task_kind, n_train, max_len, tokens, cfg.budget.max_epochs,
                characters=cfg.task.source == "tagged",
            )  # fmt: skip
            space = default_space(size, cfg.fixed)
        except (DataError, OSError):
            pass
    chosen = cfg.model_copy(update={"search": _space_adapter().validate_python(space)})
    chosen._default_search = size
    return chosen


@functools.cache
def _space_adapter() -> TypeAdapter[dict[str, Any]]:
    return TypeAdapter(dict[str, Distribution])


def _known_keys_only(task: Any) -> dict[str, Any] | None:
    """The task block without its unknown keys, if that much of it is valid."""
    if not isinstance(task, dict) or task.get("source") not in SOURCES:
        return None
    known = {k: v for k, v in task.items() if k in SOURCES[task["source"]].__dataclass_fields__}
    try:
        _adapter(SOURCES[task["source"]]).validate_python(known)
    except ValidationError:
        return None
    return known


def _other_branch(err: dict[str, Any], raw: dict[str, Any]) -> bool:
    """The `search: default` branch's complaint about a `search:` mapping: not the user's."""
    loc = [str(p) for p in err["loc"]]
    return (
        loc[:1] == ["search"]
        and len(loc) > 1
        and loc[1].startswith("literal[")
        and (isinstance(raw.get("search"), dict))
    )


def _describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    # drop pydantic's union tags (`task.npz.path` -> `task.path`, `search.lr.float.low` -> ...)
    if len(loc) >= 2 and loc[0] == "task" and loc[1] in SOURCES:
        loc.pop(1)
    if len(loc) >= 2 and loc[0] == "search" and loc[1].startswith("dict["):
        loc.pop(1)  # `search:` is `default` or a mapping: a mapping's errors are its own
    if len(loc) >= 3 and loc[0] == "search" and loc[2] in ("float", "int", "categorical"):
        loc.pop(2)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        msg = "unknown key"
        if loc[:2] == ["task", "cv_folds"]:
            source = err["loc"][1]
            msg = CV_REFUSED.get(str(source), CV_REFUSED["built in"])
    elif err["type"] == "missing":
        msg = "missing: this key is required"
    where = ".".join(loc) or "(top level)"
    got = err.get("input")
    quiet = ("missing", "extra_forbidden", "unexpected_keyword_argument", "union_tag_invalid")
    if err["type"] not in quiet and not isinstance(got, dict):
        msg += f" (got {shorten(repr(got), 80)})"
    return f"{where}: {msg}"


# ---------------------------------------------------------------- checks across blocks


def _cross_checks(cfg: StudyConfig, failed: set[str], read_test: bool = False) -> list[str]:
    """Checks that need several blocks; blocks named in `failed` were already reported."""
    problems: list[str] = []
    bad = _misplaced_names(cfg, problems)
    # The checks below assume every remaining name is a setting.
    cfg = cfg.model_copy(
        update={
            "fixed": {k: v for k, v in cfg.fixed.items() if k not in bad},
            "search": {k: v for k, v in cfg.search.items() if k not in bad},
        }
    )
    base = _checked_fixed(cfg, problems)
    problems += _check_schedule(cfg, base)
    for name, dist in cfg.search.items():
        problems += _check_distribution(name, dist, base, cfg)
    problems += _check_enqueued(cfg, base) + _check_clashes(cfg, base)
    if not failed & {"task", "objective"}:
        problems += _check_objectives(cfg)
    if not failed & {"objective", "sampler", "pruner"}:
        problems += _check_plugins(cfg)
    if not failed & {"task", "sampler"}:
        problems += _check_constraints(cfg)
    if "task" not in failed:
        data_problems = _check_data(cfg, base, read_test)
        problems += data_problems + _check_char_features(cfg, base)
        if base.network is not None and not data_problems:  # it runs on the data
            problems += _check_network(cfg, base)
    if not failed & {"study", "tracking"}:
        problems += _check_urls(cfg)
    return problems


def _misplaced_names(cfg: StudyConfig, problems: list[str]) -> set[str]:
    """Names in `fixed` or `search` that are no setting, belong to the budget, or are in both;
    each is reported under its key."""
    known = set(Settings.names())
    bad: set[str] = set()
    for block, names in (("fixed", cfg.fixed), ("search", cfg.search)):
        for name in names:
            if name in BUDGET_KEYS:
                problems.append(f"{block}.{name}: set it as budget.{name}")
            elif name == "network" and block == "search":
                problems.append("search.network: one network per study; set it in fixed")
            elif name not in known and not is_user_setting(name):
                problems.append(
                    f"{block}.{name}: unknown setting; valid: {', '.join(sorted(known))}, "
                    "or user.NAME for your own network"
                )
            else:
                continue
            bad.add(name)
    for name in cfg.search:
        if name in cfg.fixed:
            problems.append(f"search.{name}: also in fixed; keep it in one of the two")
            bad.add(name)
    return bad


def _check_urls(cfg: StudyConfig) -> list[str]:
    """The file's storage and tracking URLs, as far as they can be checked without a server."""
    storage, tracking = cfg.study.storage, cfg.tracking.uri
    problems = [
        f"{key}: {problem}"
        for key, problem in (
            ("study.storage", storage is not None and storage_problem(storage)),
            ("tracking.uri", tracking is not None and tracking_problem(tracking)),
        )
        if problem
    ]
    if not problems and storage and tracking and same_database(storage, tracking):
        problems.append(
            f"tracking.uri: the same database as study.storage ({redact(storage)}); Optuna's "
            f"and MLflow's tables cannot share one: give MLflow its own, e.g. {DEFAULT_TRACKING_URI}"
        )
    return problems


def _checked_fixed(cfg: StudyConfig, problems: list[str]) -> Settings:
    """Settings from `fixed`, with each invalid value reported under its own key and dropped."""
    good: dict[str, Any] = {}
    user = {k: v for k, v in cfg.fixed.items() if is_user_setting(k)}  # free: build reads them
    for name, value in cfg.fixed.items():
        if name in user:
            continue
        err = _kept_mapping(name, value) or _settings_error({**good, name: value})
        if err:
            problems.append(f"fixed.{name}: {err}")
        else:
            good[name] = value
    return Settings().with_values({**good, **user})


def _kept_mapping(name: str, value: Any) -> str | None:
    """Why `fixed` kept a setting in its mapping form (see `StudyConfig._flat_fixed`), if it did."""
    if name not in MAPPING_FORMS or not isinstance(value, dict):
        return None
    try:
        flat = expand_setting(name, value)
    except ValueError as e:
        return str(e)
    return f"it sets {', '.join(k for k in flat if k != name)}, which fixed sets too; keep one"


@functools.cache
def _adapter(kind: type) -> TypeAdapter[Any]:
    """One validator per dataclass: building one reads the class's source for its field
    docstrings, and `validate` checks every fixed value and search bound with it."""
    return TypeAdapter(kind)


def _settings_error(values: dict[str, Any]) -> str | None:
    """Types strictly (a trial's settings are built from these values as they are, never
    converted), then the settings' own rules."""
    errors = []
    for name, value in values.items():
        if name not in _SETTING_TYPES:  # a user network's own setting: its network checks it
            continue
        try:
            _field_adapter(name).validate_python(value, strict=True)
        except ValidationError as e:
            errors += e.errors()
    try:
        if not errors:
            _adapter(Settings).validate_python(values)
    except ValidationError as e:
        errors = e.errors()
    return "; ".join(err["msg"].removeprefix("Value error, ") + _got(err) for err in errors) or None


_SETTING_TYPES = typing.get_type_hints(Settings)


@functools.cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    return TypeAdapter(_SETTING_TYPES[name])


def _got(err: dict[str, Any]) -> str:
    if err["type"] == "value_error":
        return ""
    got = err.get("input")
    shown = f" (got {shorten(repr(got), 80)})"
    if isinstance(got, str) and _is_number(got):
        # YAML reads `1e-3` (no dot) as text, and quotes make any number text
        number = got if "." in got or "e" not in got.lower() else got.lower().replace("e", ".0e", 1)
        return f"{shown}: a number in quotes or without a dot is text in YAML; write {number}"
    return shown


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_clashes(cfg: StudyConfig, base: Settings) -> list[str]:
    """Settings that the task cannot use."""
    try:
        if cfg.task_kind != "language_model":
            return []
    except DataError:  # a loader that fails: the data check reports it
        return []
    return [
        f"{where}: a bidirectional network would read the very token a language model must "
        "predict; set bidirectional: false"
        for where, value in _values_of(cfg, base, "bidirectional")
        if value is True
    ]


def _check_distribution(name: str, dist: Any, base: Settings, cfg: StudyConfig) -> list[str]:
    where = f"search.{name}"
    if isinstance(dist, CategoricalDist):
        samples = {f"{where}.choices.{i}": v for i, v in enumerate(dist.choices)}
        problems = [  # what Optuna can store as a parameter
            f"{key}: a choice is null, a bool, a number or a string (got {value!r}); a mapping "
            "or list is set in fixed, or searched through the settings it stands for"
            for key, value in samples.items()
            if isinstance(value, dict | list)
        ]
        samples = {k: v for k, v in samples.items() if not isinstance(v, dict | list)}
    else:
        problems = _check_range(where, dist)
        samples = {f"{where}.low": dist.low, f"{where}.high": dist.high}
    for key, value in samples.items():
        err = not is_user_setting(name) and _settings_error({**_known_fields(base), name: value})
        if err and not problems:
            problems.append(f"{key}: {err}")
    return problems + _when_problems(name, dist.when or {}, cfg)


def _check_range(where: str, dist: FloatDist | IntDist) -> list[str]:
    """Bounds and step of a float or int range, as Optuna would read them."""
    low, high, step = dist.low, dist.high, dist.step
    if low > high:
        return [f"{where}: low ({low}) is above high ({high}); swap them"]
    if low == high:
        return [f"{where}: low and high are both {low}; set it in fixed: instead"]
    if dist.log and low <= 0:
        return [f"{where}: a log range needs a positive low bound (got low={low}, high={high})"]
    if dist.log and step not in (None, 1):
        return [f"{where}: step cannot be combined with log: true"]
    if step is None:
        return []
    if step <= 0:
        return [f"{where}.step: must be positive (got {step})"]
    n_steps = (high - low) / step
    if abs(n_steps - round(n_steps)) > 1e-9 * max(1.0, n_steps):
        top = low + int(n_steps) * step
        return [
            f"{where}.step: {step} does not divide the range [{low}, {high}]; Optuna would "
            f"silently shrink it to [{low}, {top:.6g}]: make high - low a multiple of step"
        ]
    return []


def _when_problems(name: str, when: dict[str, Any], cfg: StudyConfig) -> list[str]:
    """A `when:` condition's comparisons exist and it names a parameter searched above."""
    where, problems = f"search.{name}.when", []
    for cond, test in when.items():
        ops = test.keys() if isinstance(test, dict) else []
        problems += [
            f"{where}.{cond}.{op}: unknown comparison; valid: {', '.join(COMPARISONS)}"
            for op in ops
            if op not in COMPARISONS
        ]
        if cond not in cfg.search or list(cfg.search).index(cond) >= list(cfg.search).index(name):
            problems.append(
                f"{where}.{cond}: a condition must name a parameter searched above {name}"
            )
    return problems


def _check_schedule(cfg: StudyConfig, base: Settings) -> list[str]:
    """The schedule of `fixed` and of each searched scheduler: a torch class exists, takes the
    options given, and runs for the budget's epochs (see models.schedules)."""
    if not {"scheduler", "scheduler_options"} & (cfg.fixed.keys() | cfg.search.keys()):
        return []  # the default schedule needs no check (nor torch)
    from models.schedules import scheduler_problems

    base = replace(base, max_epochs=cfg.budget.max_epochs)
    dist = cfg.search.get("scheduler")
    if not isinstance(dist, CategoricalDist):
        return [f"fixed.{key}: {message}" for key, message in scheduler_problems(base)]
    return [
        f"search.scheduler.choices.{i}: {message}"
        for i, choice in enumerate(dist.choices)
        if isinstance(choice, str)
        for _, message in scheduler_problems(replace(base, scheduler=choice))
    ]


def _check_enqueued(cfg: StudyConfig, base: Settings) -> list[str]:
    """Each enqueued value: a searched parameter, inside its range or among its choices."""
    problems = []
    for i, params in enumerate(cfg.enqueue):
        for key, value in params.items():
            where, dist = f"enqueue.{i}.{key}", cfg.search.get(key)
            if dist is None:
                searched = ", ".join(cfg.search) or "nothing"
                problems.append(f"{where}: not a searched parameter; searched: {searched}")
                continue
            err = _value_problem(value, dist) or (
                not is_user_setting(key) and _settings_error({**_known_fields(base), key: value})
            )
            if err:
                problems.append(f"{where}: {err}")
    return problems


def _value_problem(value: Any, dist: Any) -> str | None:
    if isinstance(dist, CategoricalDist):
        if value not in dist.choices or type(value) not in {type(c) for c in dist.choices}:
            return f"{shorten(repr(value), 60)} is not one of the choices {dist.choices}"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{shorten(repr(value), 60)} is not a number"
    if isinstance(dist, IntDist) and value != int(value):
        return f"{value} is not an integer"
    if not dist.low <= value <= dist.high:
        return f"{value} is outside [{dist.low}, {dist.high}]"
    n_steps = (value - dist.low) / (dist.step or 1) if dist.step else 0
    if dist.step and not dist.log and abs(n_steps - round(n_steps)) > 1e-9:
        return f"{value} is not on the step {dist.step} grid from {dist.low}"
    return None


def _known_fields(s: Settings) -> dict[str, Any]:
    return {f.name: getattr(s, f.name) for f in fields(s)}


def _check_objectives(cfg: StudyConfig) -> list[str]:
    try:
        kind = cfg.task_kind
    except DataError:  # a loader that fails: the data check reports it
        return []
    valid = (*val_metric_names(kind, baselines=naive_baselines(cfg.task)), "n_params")
    problems = []
    for i, obj in enumerate(cfg.objectives):
        where = "objective" if len(cfg.objectives) == 1 else f"objective.{i}"
        problems += _metric_problems(f"{where}.metric", obj.metric, valid, cfg)
        if obj.tie_break == obj.metric:
            problems.append(f"{where}.tie_break: the metric itself; name another one, or null")
        elif obj.tie_break is not None:
            problems += _metric_problems(f"{where}.tie_break", obj.tie_break, valid, cfg)
    metrics = [o.metric for o in cfg.objectives]
    problems += [
        f"objective.{i}.metric: {m!r} is already objective.{metrics.index(m)}; "
        "name each metric once"
        for i, m in enumerate(metrics)
        if metrics.index(m) < i
    ]
    if len(cfg.objectives) > 1 and cfg.budget.target is not None:
        problems.append(
            f"budget.target: {len(metrics)} objectives ({', '.join(metrics)}) have no one best "
            "value to reach; remove budget.target (budget.stop_after_no_improvement and "
            "budget.wall_time work with several objectives), or optimise one objective"
        )
    if len(cfg.objectives) == 1 and cfg.objectives[0].metric == "n_params":
        problems.append(
            "objective.metric: n_params alone needs no training; pair it with a val_ metric"
        )
    return problems


def _check_constraints(cfg: StudyConfig) -> list[str]:
    """Each of `sampler.constraints` well formed, and naming a figure every trial records or a
    validation metric the task logs (with cross-validation, no one best value: figures only)."""
    if not cfg.sampler.constraints:
        return []
    try:
        kind = cfg.task_kind
    except DataError:  # a loader that fails: the data check reports it
        return []
    valid = (*val_metric_names(kind, baselines=naive_baselines(cfg.task)), *RECORDED)
    problems = []
    for i, text in enumerate(cfg.sampler.constraints):
        where = f"sampler.constraints.{i}"
        try:
            name = parse_constraint(text).name
        except ValueError as e:
            problems.append(f"{where}: {e}")
            continue
        if name in RECORDED:
            continue
        if cfg.cv_folds and name in valid:
            problems.append(f"{where}: with task.cv_folds name one of {', '.join(RECORDED)}")
        else:
            problems += _metric_problems(where, name, valid, cfg)
    return problems


def _metric_problems(where: str, name: str, valid: tuple[str, ...], cfg: StudyConfig) -> list[str]:
    """Why the task does not measure the metric `name`, if it does not."""
    baseline = name in METRIC_MODES and metric(name).baseline
    if name not in valid and baseline and cfg.task_kind == "regression":
        needs = "task.season" if baseline == "snaive" else "a forecast (source csv or sine)"
        return [f"{where}: {name} needs {needs}"]
    if name not in valid:
        return [
            f"{where}: {name!r} is not measured for a {cfg.task_kind} task; "
            f"valid: {', '.join(valid)}"
        ]
    level = None if name == "n_params" else metric(name).level
    if level is not None and cfg.task_level != level:
        return [f"{where}: {name} needs task.level: {level}"]
    return []


def _check_plugins(cfg: StudyConfig) -> list[str]:
    problems = []
    if cfg.sampler.name not in SAMPLERS:
        problems.append(
            f"sampler.name: unknown sampler {cfg.sampler.name!r}; valid: {', '.join(SAMPLERS)}"
        )
    if cfg.pruner is not None and cfg.pruner.name not in PRUNERS:
        problems.append(
            f"pruner.name: unknown pruner {cfg.pruner.name!r}; valid: {', '.join(PRUNERS)}"
        )
    multi = len(cfg.objectives) > 1
    if multi and cfg.pruner_name != "none":
        problems.append("pruner.name: Optuna cannot prune multi-objective studies; use `none`")
    if multi and cfg.sampler.name not in MULTI_OBJECTIVE_SAMPLERS:
        problems.append(
            f"sampler.name: {cfg.sampler.name} handles one objective; use nsgaii or tpe"
        )
    problems += _history_problems(cfg)
    if cfg.sampler.name == "grid" and cfg.default_search is not None:
        problems.append(
            "sampler.name: the grid sampler needs categorical choices, and the default search "
            "space has ranges; write a `search:` block of categorical choices"
        )
    elif cfg.sampler.name == "grid":
        for name, dist in cfg.search.items():
            if not isinstance(dist, CategoricalDist):
                problems.append(
                    f"search.{name}: the grid sampler needs `type: categorical` choices"
                )
    return problems or _check_plugin_options(cfg)


def _history_problems(cfg: StudyConfig) -> list[str]:
    history = cfg.sampler.history
    if history is None:
        return []
    if cfg.sampler.name != "tpe":
        return [f"sampler.history: only the tpe sampler takes it (sampler is {cfg.sampler.name})"]
    if len(cfg.objectives) > 1:
        return ["sampler.history: for one objective only; remove it or keep one objective"]
    startup = cfg.sampler.options.get("n_startup_trials", 10)
    if isinstance(startup, int) and history < startup:
        return [
            f"sampler.history: {history} is fewer than n_startup_trials ({startup}): TPE would "
            f"never leave its random start; use at least {startup}"
        ]
    return []


def _check_plugin_options(cfg: StudyConfig) -> list[str]:
    """The file's sampler and pruner options, against the Optuna class that gets them (this
    imports Optuna: only for a file that sets a sampler or pruner)."""
    chosen = [
        (kind, table, block)
        for kind, table, block in (
            ("sampler", SAMPLERS, cfg.sampler if "sampler" in cfg.model_fields_set else None),
            ("pruner", PRUNERS, cfg.pruner),
        )
        if block is not None
    ]
    if not chosen:
        return []
    from tuner.study import plugin_defaults

    defaults = plugin_defaults(cfg, cfg.seed)
    return [
        problem
        for kind, table, block in chosen
        for problem in option_problems(kind, table[block.name], dict(block.options), defaults)
    ]


def _estimated_tokens(task: Any) -> float:
    """A text's training tokens from its file size: a byte a character, six a word."""
    path = getattr(task, "path", None) or getattr(task, "train", None)
    share = 1 - task.val_fraction - task.test_fraction
    return Path(path).stat().st_size / (1 if task.level == "char" else 6) * share


def training_shape(task: DataConfig, with_test: bool = False) -> tuple[int, float]:
    """(longest sequence, sequences a trial trains on): with `cv_folds`, the smallest fold's
    training part. Read from the settings where they tell (built-in data: no data is made; a
    text's size is unknown, so infinite), else from the data."""
    shape = data_shape(task)
    if shape is not None:
        return shape
    data = task_data(task, with_test)
    folds = getattr(task, "cv_folds", None)
    if not folds:
        return data.info.max_len, data.info.n_train
    pooled = data.info.n_train + len(data.val.inputs)
    return data.info.max_len, pooled - math.ceil(pooled / max(folds, 1))


def _check_data(cfg: StudyConfig, base: Settings, read_test: bool) -> list[str]:
    """Data files exist, folds fit the data, truncation fits the sequences, batches fit the
    training set."""
    task = cfg.task
    missing = _missing_files(task, read_test)
    if missing:
        return missing
    try:
        if task.source in FILE_SOURCES:  # only a loader sees inside a file: run it
            task_data(task, read_test)
        problems = _check_folds(task, read_test)
        if problems:
            return problems
        max_len, n_train = training_shape(task, read_test)
    except DataError as e:  # messages that start with a key path keep it as theirs
        return [str(e) if str(e).startswith("task.") else f"task: {e}"]
    except Exception as e:  # noqa: BLE001 - a file no check foresaw: name it, no traceback
        return [f"task: cannot load the data: {type(e).__name__}: {e}"]
    for key, limit, what in (
        ("truncation", max_len, f"longer than the sequences ({max_len} steps)"),
        (
            "batch_size",
            n_train,
            f"larger than the training set ({n_train} sequences)"
            + (" of a fold" if getattr(task, "cv_folds", None) else ""),
        ),
    ):
        for where, value in _values_of(cfg, base, key):
            if value is not None and value > limit:
                problems.append(f"{where}: {key} {value} is {what}")
    return problems


def _check_network(cfg: StudyConfig, base: Settings) -> list[str]:
    """The user's network imports, builds with the first value of every searched setting, and
    runs on one training batch with the right output shape; a stateless one has no truncation."""
    from models.user_network import network_problems

    first = {
        name: dist.choices[0] if isinstance(dist, CategoricalDist) else dist.low
        for name, dist in cfg.search.items()
        if not dist.when
    }
    probe = replace(base.with_values(first), truncation=None, max_epochs=1)
    problems, stateful = network_problems(probe, task_data(cfg.task))
    if stateful is False:
        problems += [
            f"{where}: network {base.network} returns no state, so it trains with full "
            "backpropagation; truncation must be null"
            for where, value in _values_of(cfg, base, "truncation")
            if value is not None
        ]
    return problems


def _check_char_features(cfg: StudyConfig, base: Settings) -> list[str]:
    """Character features need each token's characters, which only tagged token files carry."""
    if cfg.task.source == "tagged":
        return []
    return [
        f"{where}: needs the characters of tagged tokens (task.source: tagged), "
        f"which task.source {cfg.task.source} has not; set it to false"
        for where, value in _values_of(cfg, base, "char_features")
        if value is True
    ]


def _check_folds(task: DataConfig, with_test: bool) -> list[str]:
    folds = getattr(task, "cv_folds", None)
    if folds is None:
        return []
    if folds < 2:
        return [f"task.cv_folds: at least 2 folds (got {folds}); null: one validation split"]
    data = task_data(task, with_test)
    if data.info.task not in ("classification", "regression"):  # a python loader's choice
        return [
            f"task.cv_folds: cross-validation is for classification and regression; the "
            f"loader returns a {data.info.task} task: keep its validation split"
        ]
    pooled = data.info.n_train + len(data.val.inputs)
    if folds > pooled:
        return [
            f"task.cv_folds: {folds} folds need at least {folds} sequences outside the test "
            f"split; the data has {pooled}"
        ]
    return []


def _values_of(cfg: StudyConfig, base: Settings, key: str) -> list[tuple[str, Any]]:
    dist = cfg.search.get(key)
    if dist is None:
        return [(f"fixed.{key}", getattr(base, key))]
    if isinstance(dist, CategoricalDist):
        return [(f"search.{key}.choices.{i}", v) for i, v in enumerate(dist.choices)]
    return [(f"search.{key}.high", dist.high)]


def _missing_files(task: DataConfig, read_test: bool) -> list[str]:
    """A file source's choice of files (path, or train/val/test), and each file it reads exists."""
    if task.source not in FILE_SOURCES:
        return []
    try:
        files = named_files(task)
    except DataError as e:
        return [f"task: {e}"]
    return [
        f"task.{key}: {'not a file' if Path(name).exists() else 'data file not found'}: {name} "
        f"(resolved to {Path(name).resolve()})"
        for key, name in files.items()
        if (key != "test" or read_test) and not Path(name).is_file()
    ]


def data_warning(cfg: StudyConfig, with_test: bool = False) -> str | None:
    """One line about validation/test labels that training never saw, or None. Only sources
    with class labels or tags can have them; their data was read by validation already."""
    if cfg.task.source not in ("npz", "tagged"):
        return None
    from models.data.base import unseen_warning

    return unseen_warning(task_data(cfg.task, with_test).unseen)
