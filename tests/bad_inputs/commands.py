"""Bad URLs, flags and environments given to `run`, `status`, `best`, `report` and `retrain`.

Connection failures are the environment's (exit 1); a URL, path or flag that can never work is
the user's (exit 2). No case may create a database or an MLflow experiment, or print a password.
"""

from __future__ import annotations

from tests.bad_inputs import Case, base_study, dump, edited, run_case, study_case

SECRET = "pw-Zq81"  # must not appear in any output (tests/test_bad_inputs.py checks every case)
STORE_DB = "sqlite:///{store}/rnn_tuner.db"

STORAGE_URLS = [
    run_case(
        "storage-unknown-scheme",
        r"--storage: .*'mongodb'.*sqlite:///",
        "--storage",
        "mongodb://db/x",
    ),
    run_case(
        "storage-not-a-url",
        r"--storage: 'rnn\.db' is not a database URL.*sqlite:///rnn\.db",
        "--storage",
        "rnn.db",
    ),
    run_case("storage-empty", r"--storage: .*empty", "--storage", ""),
    run_case(
        "storage-missing-dir",
        r"--storage: .*no/such/dir does not exist",
        "--storage",
        "sqlite:///no/such/dir/x.db",
    ),
    run_case(
        "storage-read-only-dir",
        r"--storage: .*/proc.*cannot (be )?writ",
        "--storage",
        "sqlite:////proc/x.db",
    ),
    run_case(
        "storage-not-sqlite",
        r"--storage: .*notes\.txt.*not an SQLite database",
        "--storage",
        "sqlite:///notes.txt",
    ),
    run_case("storage-memory", r"--storage: .*in-memory", "--storage", "sqlite://"),
    run_case(
        "storage-unreachable-pg",
        r"cannot open the study database postgresql\+psycopg://u:\*\*\*@127\.0\.0\.1:1/db",
        "--storage",
        f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db",
        code=1,
    ),
    run_case(
        "storage-bad-port",
        r"--storage: .*port",
        "--storage",
        f"postgresql+psycopg://u:{SECRET}@localhost:notaport/db",
    ),
    run_case(
        "storage-missing-driver",
        r"--storage: .*driver.*postgresql\+psycopg://",
        "--storage",
        f"postgresql+nodriver://u:{SECRET}@localhost/db",
    ),
    run_case(
        "storage-is-directory", r"--storage: .*is a directory", "--storage", "sqlite:///{store}"
    ),
    study_case(
        "file-storage-scheme", r"study\.storage: .*'mongodb'", {"study.storage": "mongodb://db/x"}
    ),
    study_case(
        "file-storage-not-url",
        r"study\.storage: 'studies\.db' is not a database URL",
        {"study.storage": "studies.db"},
    ),
    study_case(
        "file-tracking-scheme",
        r"tracking\.uri: unknown tracking URI scheme 'foo'",
        {"tracking.uri": "foo://x"},
    ),
    study_case(
        "file-same-database",
        r"tracking\.uri: .*same database as study\.storage",
        {"study.storage": "sqlite:///one.db", "tracking.uri": "sqlite:///one.db"},
    ),
]

TRACKING_URIS = [
    run_case(
        "tracking-unknown-scheme",
        r"--tracking-uri: unknown tracking URI scheme 'foo'.*sqlite:///",
        "--tracking-uri",
        "foo://bar",
    ),
    run_case(
        "tracking-read-only-dir",
        r"--tracking-uri: .*/proc.*cannot (be )?writ",
        "--tracking-uri",
        "sqlite:////proc/mlflow.db",
    ),
    run_case(
        "tracking-missing-dir",
        r"--tracking-uri: .*/no/such/dir.*does not exist",
        "--tracking-uri",
        "sqlite:///no/such/dir/mlflow.db",
    ),
    run_case(
        "tracking-file-store-read-only",
        r"--tracking-uri: .*/proc.*cannot (be )?writ",
        "--tracking-uri",
        "file:///proc/mlruns",
    ),
    run_case(
        "tracking-same-as-storage",
        r"same database",
        "--tracking-uri",
        STORE_DB,
    ),
    run_case(
        "tracking-unreachable",
        r"cannot use the MLflow tracking store at http://127\.0\.0\.1:9",
        "--tracking-uri",
        "http://127.0.0.1:9",
        code=1,
    ),
    run_case(
        "tracking-unreachable-password",
        r"http://bob:\*\*\*@127\.0\.0\.1:9",
        "--tracking-uri",
        f"http://bob:{SECRET}@127.0.0.1:9",
        code=1,
    ),
    run_case("tracking-empty", r"--tracking-uri: .*empty", "--tracking-uri", ""),
    run_case(
        "tracking-not-sqlite",
        r"--tracking-uri: .*notes\.txt.*not an SQLite database",
        "--tracking-uri",
        "sqlite:///notes.txt",
    ),
]

FLAGS = [
    run_case("study-name-empty", r"--study-name: .*empty", "--study-name", ""),
    run_case("study-name-newline", r"--study-name: .*printable", "--study-name", "a\nb"),
    run_case("study-name-too-long", r"--study-name: .*at most 128", "--study-name", "n" * 200),
    run_case("n-trials-zero", r"--n-trials.*0 is not in the range x>=1", "--n-trials", "0"),
    run_case("n-trials-word", r"--n-trials.*'many' is not a valid integer", "--n-trials", "many"),
    run_case("timeout-negative", r"--timeout.*-1", "--timeout", "-1"),
    run_case("timeout-zero", r"--timeout.*0", "--timeout", "0"),
    run_case("workers-zero", r"--workers.*0 is not in the range", "--workers", "0"),
    run_case(
        "workers-sqlite", r"--workers 2 needs a storage that several processes", "--workers", "2"
    ),
    run_case("max-trials-zero", r"--max-trials.*0 is not in the range", "--max-trials", "0"),
    run_case("unknown-flag", r"No such option '--ntrials'.*--n-trials", "--ntrials", "3"),
    run_case("extra-argument", r"unexpected extra argument", "other.yaml"),
    Case("run-no-file", r"Missing argument 'STUDY_FILE'", args=("run",)),
    Case("validate-no-file", r"Missing argument 'STUDY_FILE'", args=("validate",)),
    Case("unknown-command", r"No such command 'tune'", args=("tune", "study.yaml")),
    Case(
        "status-missing-db",
        r"no study database at .*missing\.db",
        args=("status", "--storage", "sqlite:///missing.db"),
    ),
    Case(
        "best-missing-db",
        r"no study database at .*missing\.db",
        args=("best", "kept", "--storage", "sqlite:///missing.db"),
    ),
    Case(
        "report-missing-db",
        r"no study database at .*missing\.db",
        args=("report", "kept", "--storage", "sqlite:///missing.db"),
    ),
    Case(
        "retrain-missing-db",
        r"no study database at .*missing\.db",
        args=("retrain", "kept", "--storage", "sqlite:///missing.db"),
    ),
    Case("status-unknown-study", r"no study 'nope'.*kept", args=("status", "nope")),
    Case("best-unknown-study", r"no study 'nope'.*kept", args=("best", "nope")),
    Case("best-empty-name", r"study name.*empty", args=("best", "")),
    Case(
        "status-bad-scheme",
        r"--storage: .*'mongodb'",
        args=("status", "--storage", "mongodb://x/y"),
    ),
    Case(
        "report-missing-tracking",
        r"no MLflow tracking store at .*missing-mlflow\.db",
        args=("report", "kept", "--tracking-uri", "sqlite:///missing-mlflow.db"),
    ),
    Case(
        "retrain-bad-study-file",
        r"nope\.yaml: .*no such file",
        args=("retrain", "kept", "--study-file", "nope.yaml"),
    ),
    Case(
        "schema-missing-dir",
        r"'/no/such/docs' does not exist",
        args=("schema", "--write-docs", "/no/such/docs"),
    ),
]

ENVIRONMENTS = [
    run_case(
        "env-storage-scheme",
        r"RNN_TUNER_STORAGE: .*'mongodb'",
        env={"RNN_TUNER_STORAGE": "mongodb://db/x"},
    ),
    run_case(
        "env-storage-read-only",
        r"RNN_TUNER_STORAGE: .*/proc.*cannot (be )?writ",
        env={"RNN_TUNER_STORAGE": "sqlite:////proc/x.db"},
    ),
    run_case(
        "env-tracking-scheme",
        r"MLFLOW_TRACKING_URI: unknown tracking URI scheme 'foo'",
        env={"MLFLOW_TRACKING_URI": "foo://x"},
    ),
    run_case(
        "env-tracking-missing-dir",
        r"MLFLOW_TRACKING_URI: .*does not exist",
        env={"MLFLOW_TRACKING_URI": "sqlite:///no/such/dir/m.db"},
    ),
    run_case("env-same-database", r"same database", env={"MLFLOW_TRACKING_URI": STORE_DB}),
    run_case(
        "env-storage-password-unreachable",
        r"postgresql\+psycopg://u:\*\*\*@127\.0\.0\.1:1",
        env={"RNN_TUNER_STORAGE": f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db"},
        code=1,
    ),
    run_case(
        "env-file-storage-password",
        r"study\.storage: .*'mongodb'",
        study=edited({"study.storage": f"mongodb://u:{SECRET}@db/x"}),
    ),
    Case(
        "deleted-experiment",
        r"MLflow experiment 'gone' is deleted.*restore.*another name",
        args=("run", "study.yaml"),
        files={"study.yaml": dump(edited({"study.name": "gone"}, base_study("gone")))},
        env={},
    ),
]

CASES: list[Case] = STORAGE_URLS + TRACKING_URIS + FLAGS + ENVIRONMENTS
