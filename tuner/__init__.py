"""rnn-tuner's tuning service: study files, Optuna studies, MLflow records. See tuner/cli.py."""
