"""Bad study files: bytes and YAML, then each block's mistakes."""

from __future__ import annotations

from tests.bad_inputs import DELETE, Case, base_study, dump, study_case

GOOD = dump(base_study())


def _alias_bomb() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return GOOD + "\n".join(lines) + "\n"


def _ten_megabytes_of_unknown_keys() -> str:
    line = "unknown_key_{:07d}: some value that nobody asked for\n"
    return GOOD + "".join(line.format(i) for i in range(200_000))


def _many_unknown_keys() -> str:
    return GOOD + "".join(f"bogus_{i}: 1\n" for i in range(300))


FILE_LEVEL = [
    study_case(
        "not-utf8",
        r"study\.yaml.*line 1: not valid UTF-8",
        text="# caf\xe9\n".encode("latin-1") + GOOD.encode(),
    ),
    study_case("binary", r"study\.yaml: .*binary", text=bytes(range(256)) * 8),
    study_case("utf16", r"UTF-16.*UTF-8", text=GOOD.encode("utf-16")),
    study_case("empty-file", r"study\.yaml: .*the file is empty", text=""),
    study_case("only-comments", r"study\.yaml: .*the file is empty", text="# nothing here\n\n"),
    study_case("top-level-list", r"must be a mapping", text="- study\n- task\n"),
    study_case("top-level-scalar", r"must be a mapping", text="just words\n"),
    study_case("unclosed-bracket", r"line 2.*not valid YAML", text="study: {name: kept\ntask: [\n"),
    study_case("tab-indent", r"line 2: not valid YAML", text="study:\n\tname: kept\n"),
    study_case(
        "duplicate-top-key",
        r"line \d+: duplicate key 'study'",
        text=GOOD + "study: {name: other}\n",
    ),
    study_case(
        "duplicate-nested-key",
        r"line \d+: duplicate key 'lr' in search",
        text=GOOD.replace("search:\n", "search:\n  lr: {type: float, low: 0.1, high: 0.2}\n", 1),
    ),
    study_case("alias-bomb", r"anchors and aliases", text=_alias_bomb),
    study_case("ten-megabytes", r"too large.*study file", text=_ten_megabytes_of_unknown_keys),
    study_case("many-unknown-keys", r"bogus_0: unknown key.*and 250 more", text=_many_unknown_keys),
    study_case("long-value", r"study\.name: .*(\.\.\.|…)", {"study.name": "x" * 100_000}),
    study_case("multi-document", r"one YAML document", text=GOOD + "---\nstudy: {name: b}\n"),
    study_case(
        "python-tag",
        r"not valid YAML",
        text=GOOD + "evil: !!python/object/apply:os.system ['true']\n",
    ),
    study_case("non-string-key", r"1: keys should be strings", text=GOOD + "1: one\n"),
    study_case("nul-in-text", r"binary|NUL", text=GOOD + "\x00\n"),
    Case("missing-file", r"no such file", args=("validate", "nope.yaml"), also_run=True),
    Case("directory", r"is a directory", args=("validate", "."), also_run=True),
]

STUDY_BLOCK = [
    study_case("no-study-block", r"study: .*missing", {"study": DELETE}),
    study_case("empty-name", r"study\.name: .*empty", {"study.name": ""}),
    study_case("name-control-char", r"study\.name: .*printable", {"study.name": "kept\x07"}),
    study_case("name-newline", r"study\.name: .*printable", {"study.name": "kept\nrm -rf"}),
    study_case("name-too-long", r"study\.name: .*at most 128", {"study.name": "n" * 300}),
    study_case("name-not-string", r"study\.name: .*string", {"study.name": ["a", "b"]}),
    study_case("heartbeat-zero", r"study\.heartbeat_interval", {"study.heartbeat_interval": 0}),
    study_case(
        "grace-too-short",
        r"grace_period",
        {"study.grace_period": 5, "study.heartbeat_interval": 10},
    ),
    study_case("study-unknown-key", r"study\.nmae: unknown key", {"study.nmae": "x"}),
    study_case("experiment-empty", r"tracking\.experiment: .*empty", {"tracking.experiment": ""}),
    study_case(
        "experiment-control", r"tracking\.experiment: .*printable", {"tracking.experiment": "a\tb"}
    ),
    study_case("seed-string", r"seed: .*integer", {"seed": "lucky"}),
]

TASK = [
    study_case("no-task", r"task: .*missing", {"task": DELETE}),
    study_case("unknown-source", r"task: .*'mnist'.*'adding'", {"task.source": "mnist"}),
    study_case(
        "adding-seq-len-1", r"task\.seq_len: .*greater than or equal to 2", {"task.seq_len": 1}
    ),
    study_case("adding-n-val-0", r"task\.n_val: .*greater than or equal to 1", {"task.n_val": 0}),
    study_case(
        "adding-n-train-0", r"task\.n_train: .*greater than or equal to 1", {"task.n_train": 0}
    ),
    study_case(
        "adding-n-test-negative", r"task\.n_test: .*greater than or equal to 1", {"task.n_test": -5}
    ),
    study_case(
        "sine-horizon-0",
        r"task\.horizon: .*greater than or equal to 1",
        {"task": {"source": "sine", "horizon": 0}},
    ),
    study_case("sine-noise-negative", r"task\.noise", {"task": {"source": "sine", "noise": -1.0}}),
    study_case(
        "copy-one-symbol",
        r"task\.n_symbols: .*greater than or equal to 2",
        {"task": {"source": "copy", "n_symbols": 1}},
    ),
    study_case(
        "copy-delay-negative",
        r"task\.delay: .*greater than or equal to 0",
        {"task": {"source": "copy", "delay": -1}},
    ),
    study_case("task-unknown-key", r"task\.seqlen: unknown key", {"task.seqlen": 20}),
    study_case("task-not-mapping", r"task: ", {"task": "adding"}),
]

FIXED = [
    study_case(
        "fixed-unknown", r"fixed\.hiden_size: unknown setting.*hidden_size", {"fixed.hiden_size": 8}
    ),
    study_case(
        "fixed-max-epochs",
        r"fixed\.max_epochs: set it as budget\.max_epochs",
        {"fixed.max_epochs": 3},
    ),
    study_case(
        "fixed-hidden-zero",
        r"fixed\.hidden_size: hidden_size must be >= 1",
        {"fixed.hidden_size": 0, "search.hidden_size": DELETE},
    ),
    study_case(
        "fixed-bad-cell",
        r"fixed\.cell: .*'rnn', 'lstm' or 'gru'",
        {"fixed.cell": "transformer", "search.cell": DELETE},
    ),
    study_case("fixed-lr-word", r"fixed\.lr: .*number", {"fixed.lr": "fast", "search.lr": DELETE}),
    study_case(
        "fixed-dropout-one", r"fixed\.dropout: dropout must be in \[0, 1\)", {"fixed.dropout": 1.0}
    ),
    study_case("fixed-not-mapping", r"fixed: .*dictionary", {"fixed": ["batch_size", 32]}),
    study_case("fixed-patience-zero", r"fixed\.patience", {"fixed.patience": 0}),
    study_case(
        "bidirectional-truncation",
        r"truncation needs a unidirectional",
        {"fixed.bidirectional": True, "fixed.truncation": 5},
    ),
    study_case("fixed-and-searched", r"search\.lr: also in fixed", {"fixed.lr": 0.01}),
]

SEARCH = [
    study_case(
        "float-step-zero",
        r"search\.dropout\.step: .*positive",
        {"search.dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0}},
    ),
    study_case(
        "float-step-negative",
        r"search\.dropout\.step: .*positive",
        {"search.dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": -0.1}},
    ),
    study_case(
        "int-step-zero", r"search\.hidden_size\.step: .*positive", {"search.hidden_size.step": 0}
    ),
    study_case(
        "int-step-negative",
        r"search\.hidden_size\.step: .*positive",
        {"search.hidden_size.step": -4},
    ),
    study_case(
        "float-step-not-dividing",
        r"search\.dropout\.step: .*does not divide",
        {"search.dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.4}},
    ),
    study_case(
        "float-step-not-dividing-2",
        r"search\.dropout\.step: 0\.25 does not divide",
        {"search.dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.25}},
    ),
    study_case(
        "int-step-not-dividing",
        r"search\.hidden_size\.step: 5 does not divide",
        {"search.hidden_size": {"type": "int", "low": 4, "high": 16, "step": 5}},
    ),
    study_case(
        "low-above-high",
        r"search\.hidden_size: low \(16\) is above high \(4\)",
        {"search.hidden_size": {"type": "int", "low": 16, "high": 4}},
    ),
    study_case(
        "log-low-zero", r"search\.lr: a log range needs a positive low", {"search.lr.low": 0.0}
    ),
    study_case(
        "log-with-step", r"search\.lr: step cannot be combined with log", {"search.lr.step": 0.001}
    ),
    study_case("empty-choices", r"search\.cell\.choices", {"search.cell.choices": []}),
    study_case(
        "numeric-strings",
        r"search\.hidden_size\.choices\.0: .*'16'.*write 16",
        {"search.hidden_size": {"type": "categorical", "choices": ["16", "32"]}},
    ),
    study_case(
        "list-choice",
        r"search\.cell\.choices\.0: .*(number|string|null)",
        {"search.cell.choices": [["rnn", "lstm"]]},
    ),
    study_case(
        "choice-wrong-type",
        r"search\.hidden_size\.choices\.0: ",
        {"search.hidden_size": {"type": "categorical", "choices": ["big", 8]}},
    ),
    study_case(
        "bool-for-int",
        r"search\.hidden_size\.choices\.0: ",
        {"search.hidden_size": {"type": "categorical", "choices": [True, 8]}},
    ),
    study_case(
        "unknown-type",
        r"search\.lr: .*'float', 'int', 'categorical'",
        {"search.lr.type": "uniform"},
    ),
    study_case("missing-type", r"search\.lr: .*type", {"search.lr.type": DELETE}),
    study_case("missing-low", r"search\.lr\.low: .*missing", {"search.lr.low": DELETE}),
    study_case(
        "search-unknown-name",
        r"search\.learning_rate: unknown setting",
        {"search.learning_rate": {"type": "float", "low": 0.1, "high": 0.2}},
    ),
    study_case(
        "search-out-of-range",
        r"search\.dropout\.high: dropout must be in \[0, 1\)",
        {"search.dropout": {"type": "float", "low": 0.0, "high": 1.5}},
    ),
    study_case(
        "when-later-param",
        r"search\.lr\.when\.cell: a condition must name a parameter searched above",
        {"search.lr.when": {"cell": "lstm"}},
    ),
    study_case(
        "when-unknown-op",
        r"search\.cell\.when\.hidden_size\.bigger: unknown comparison",
        {"search.cell.when": {"hidden_size": {"bigger": 4}}},
    ),
    study_case("nan-bound", r"search\.lr\.high: .*finite", {"search.lr.high": float("nan")}),
    study_case("inf-bound", r"search\.lr\.high: .*finite", {"search.lr.high": float("inf")}),
    study_case(
        "batch-too-big",
        r"search\.batch_size\.choices\.1: batch_size 500 is larger than the training set",
        {
            "fixed.batch_size": DELETE,
            "search.batch_size": {"type": "categorical", "choices": [32, 500]},
        },
    ),
    study_case(
        "truncation-too-long",
        r"search\.truncation\.choices\.1: truncation 50 is longer than the sequences",
        {"search.truncation": {"type": "categorical", "choices": [None, 50]}},
    ),
    study_case(
        "grid-with-float",
        r"search\.lr: the grid sampler needs `type: categorical`",
        {"sampler": {"name": "grid"}},
    ),
    study_case("search-not-mapping", r"search\.lr: ", {"search.lr": [0.1, 0.2]}),
    study_case(
        "int-bounds-float", r"search\.hidden_size\.low: .*integer", {"search.hidden_size.low": 4.5}
    ),
    study_case(
        "one-value-range",
        r"search\.hidden_size: low and high are both 8",
        {"search.hidden_size": {"type": "int", "low": 8, "high": 8}},
    ),
]

OBJECTIVE = [
    study_case(
        "unknown-metric",
        r"objective\.metric: 'val_accuracy' is not measured",
        {"objective": {"metric": "val_accuracy"}},
    ),
    study_case(
        "metric-wrong-task",
        r"objective\.metric: 'val_acc' is not measured for a regression task",
        {"objective": {"metric": "val_acc"}},
    ),
    study_case(
        "bad-direction",
        r"objective\.0\.direction: .*'minimize' or 'maximize'",
        {"objective": {"metric": "val_mse", "direction": "down"}},
    ),
    study_case("objective-empty-list", r"objective: .*at least 1", {"objective": []}),
    study_case(
        "n-params-alone", r"n_params alone needs no training", {"objective": {"metric": "n_params"}}
    ),
    study_case("objective-number", r"objective", {"objective": 5}),
]

PLUGINS = [
    study_case(
        "unknown-sampler",
        r"sampler\.name: unknown sampler 'bayes'; valid: tpe",
        {"sampler": {"name": "bayes"}},
    ),
    study_case(
        "unknown-sampler-option",
        r"sampler\.options\.n_startup: TPESampler takes no option 'n_startup'; valid: .*n_startup_trials",
        {"sampler": {"name": "tpe", "options": {"n_startup": 5}}},
    ),
    study_case(
        "sampler-option-type",
        r"sampler\.options\.n_startup_trials",
        {"sampler": {"name": "tpe", "options": {"n_startup_trials": "ten"}}},
    ),
    study_case(
        "unknown-pruner", r"pruner\.name: unknown pruner 'early'", {"pruner": {"name": "early"}}
    ),
    study_case(
        "unknown-pruner-option",
        r"pruner\.options\.warmup: MedianPruner takes no option 'warmup'; valid: .*n_warmup_steps",
        {"pruner": {"name": "median", "options": {"warmup": 2}}},
    ),
    study_case(
        "threshold-no-bound", r"pruner\.options: .*(lower|upper)", {"pruner": {"name": "threshold"}}
    ),
    study_case(
        "percentile-150",
        r"pruner\.options.*percentile",
        {"pruner": {"name": "percentile", "options": {"percentile": 150}}},
    ),
    study_case(
        "multi-objective-median",
        r"Optuna cannot prune multi-objective",
        {
            "objective": [{"metric": "val_mse"}, {"metric": "n_params"}],
            "pruner": {"name": "median"},
        },
    ),
    study_case(
        "multi-objective-cmaes",
        r"sampler\.name: cmaes handles one objective",
        {
            "objective": [{"metric": "val_mse"}, {"metric": "n_params"}],
            "sampler": {"name": "cmaes"},
        },
    ),
    study_case(
        "options-not-mapping",
        r"sampler\.options: .*dictionary",
        {"sampler": {"name": "tpe", "options": [1, 2]}},
    ),
    study_case(
        "sampler-seed-option-word",
        r"sampler\.options\.seed",
        {"sampler": {"name": "random", "options": {"seed": "x"}}},
    ),
    study_case(
        "hyperband-factor-word",
        r"pruner\.options\.reduction_factor: HyperbandPruner expects int \(got 'two'\)",
        {"pruner": {"name": "hyperband", "options": {"reduction_factor": "two"}}},
    ),
    study_case(
        "patient-wraps-unknown",
        r"pruner\.options\.wrapped\.name: unknown pruner 'medain'; valid: median, percentile",
        {"pruner": {"name": "patient", "options": {"patience": 3, "wrapped": {"name": "medain"}}}},
    ),
    study_case(
        "patient-wrapped-option",
        r"pruner\.options\.wrapped\.options\.warmup: MedianPruner takes no option 'warmup'; "
        r"valid: .*n_warmup_steps",
        {
            "pruner": {
                "name": "patient",
                "options": {"patience": 3, "wrapped": {"name": "median", "options": {"warmup": 1}}},
            }
        },
    ),
    study_case(
        "patient-wrapped-not-block",
        r"pruner\.options\.wrapped: a pruner block `\{name: \.\.\., options",
        {"pruner": {"name": "patient", "options": {"patience": 3, "wrapped": "median"}}},
    ),
    study_case(
        "patient-no-patience",
        r"pruner\.options\.patience: PatientPruner needs it",
        {"pruner": {"name": "patient", "options": {"wrapped": {"name": "median"}}}},
    ),
    study_case(
        "patient-negative",
        r"pruner\.options: PatientPruner refuses them: patience cannot be negative",
        {"pruner": {"name": "patient", "options": {"patience": -1}}},
    ),
    study_case(
        "wilcoxon-p-threshold",
        r"pruner\.options: WilcoxonPruner refuses them: p_threshold must be between 0 and 1",
        {"pruner": {"name": "wilcoxon", "options": {"p_threshold": 5}}},
    ),
    study_case(
        "history-on-random",
        r"sampler\.history: only the tpe sampler takes it \(sampler is random\)",
        {"sampler": {"name": "random", "history": 100}},
    ),
    study_case(
        "history-below-startup",
        r"sampler\.history: 5 is fewer than n_startup_trials \(10\).*use at least 10",
        {"sampler": {"name": "tpe", "history": 5}},
    ),
    study_case(
        "constraint-strict-inequality",
        r"sampler\.constraints\.0: 'n_params < 500' is not a constraint; write NAME <= NUMBER",
        {"sampler": {"name": "tpe", "constraints": ["n_params < 500"]}},
    ),
    study_case(
        "constraint-bound-word",
        r"sampler\.constraints\.0: 'n_params <= many' is not a constraint",
        {"sampler": {"name": "nsgaii", "constraints": ["n_params <= many"]}},
    ),
    study_case(
        "constraint-unknown-name",
        r"sampler\.constraints\.0: 'hidden_size' is not measured .*valid: .*n_params, epochs",
        {"sampler": {"name": "tpe", "constraints": ["hidden_size <= 8"]}},
    ),
    study_case(
        "constraint-not-text",
        r"sampler\.constraints\.0: .*string",
        {"sampler": {"name": "tpe", "constraints": [{"n_params": 500}]}},
    ),
]

BUDGET = [
    study_case(
        "budget-n-trials-zero",
        r"budget\.n_trials: .*greater than or equal to 1",
        {"budget.n_trials": 0},
    ),
    study_case(
        "budget-timeout-negative", r"budget\.timeout: .*greater than 0", {"budget.timeout": -5}
    ),
    study_case(
        "max-epochs-zero",
        r"budget\.max_epochs: .*greater than or equal to 1",
        {"budget.max_epochs": 0},
    ),
    study_case(
        "max-failures-zero",
        r"budget\.max_failures: .*greater than or equal to 1",
        {"budget.max_failures": 0},
    ),
    study_case("budget-unknown-key", r"budget\.trials: unknown key", {"budget.trials": 5}),
    study_case(
        "stop-after-negative",
        r"budget\.stop_after_no_improvement: -3 is not a number of trials; give a whole number "
        r"N >= 1",
        {"budget.stop_after_no_improvement": -3},
    ),
    study_case(
        "stop-after-fraction",
        r"budget\.stop_after_no_improvement: 2\.5 is not a number of trials",
        {"budget.stop_after_no_improvement": 2.5},
    ),
    study_case(
        "target-not-a-number",
        r"budget\.target: 'low' is not a number; give the objective's value to stop at",
        {"budget.target": "low"},
    ),
    study_case(
        "target-multi-objective",
        r"budget\.target: 2 objectives \(val_mse, n_params\) have no one best value.*remove "
        r"budget\.target",
        {"budget.target": 0.1, "objective": [{"metric": "val_mse"}, {"metric": "n_params"}]},
    ),
    study_case(
        "wall-time-unparsable",
        r"budget\.wall_time: '2 hours' is not a duration; give seconds \(7200\) or a number "
        r"with a unit",
        {"budget.wall_time": "2 hours"},
    ),
    study_case(
        "wall-time-zero",
        r"budget\.wall_time: '0m' is not a duration.*more than 0",
        {"budget.wall_time": "0m"},
    ),
]

ENQUEUE = [
    study_case(
        "enqueue-unknown",
        r"enqueue\.0\.dropout: not a searched parameter",
        {"enqueue": [{"dropout": 0.1}]},
    ),
    study_case(
        "enqueue-out-of-range",
        r"enqueue\.0\.lr: 0\.5 is outside \[0\.001, 0\.03\]",
        {"enqueue": [{"lr": 0.5}]},
    ),
    study_case("enqueue-wrong-type", r"enqueue\.0\.lr: .*number", {"enqueue": [{"lr": "fast"}]}),
    study_case(
        "enqueue-not-a-choice",
        r"enqueue\.0\.cell: 'transformer' is not one of",
        {"enqueue": [{"cell": "transformer"}]},
    ),
    study_case(
        "enqueue-float-for-int",
        r"enqueue\.0\.hidden_size: .*integer",
        {"enqueue": [{"hidden_size": 3.5}]},
    ),
    study_case("enqueue-not-list", r"enqueue: .*list", {"enqueue": {"lr": 0.01}}),
    study_case(
        "enqueue-off-step",
        r"enqueue\.0\.hidden_size: 5 is not on the step",
        {"search.hidden_size.step": 4, "enqueue": [{"hidden_size": 5}]},
    ),
    study_case(
        "enqueue-invalid-setting", r"enqueue\.0\.hidden_size", {"enqueue": [{"hidden_size": -1}]}
    ),
]

CASES: list[Case] = (
    FILE_LEVEL + STUDY_BLOCK + TASK + FIXED + SEARCH + OBJECTIVE + PLUGINS + BUDGET + ENQUEUE
)
