"""A worker keeps the memory its training steps free (tuner.memory): the pages of the large
tensors a step frees and allocates again are not faulted in again at every step."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT, tiny_study, write_study

# 30 training steps of the word-level LM of benchmarks/bench_overhead.py (10,000 words, 2x200
# LSTM, batch 20 x 20 steps): each frees and allocates again its 16 MB of logits and gradients.
CHURN = """
import resource
import torch
from torch import nn

torch.set_num_threads(1)
torch.manual_seed(0)
emb, rnn = nn.Embedding(10_000, 200), nn.LSTM(200, 200, 2, batch_first=True)
head = nn.Linear(200, 10_000)
params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
opt = torch.optim.SGD(params, lr=1.0)
x = torch.randint(0, 10_000, (20, 21))


def step():
    out, _ = rnn(emb(x[:, :20]))
    loss = nn.functional.cross_entropy(head(out).flatten(0, 1), x[:, 1:].flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()


for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    step()
print("faults", resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(code: str, **env: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + CHURN],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return int(done.stdout.rsplit("faults", 1)[1])


def test_after_a_run_the_worker_process_reuses_freed_memory(workdir: Path):
    study = write_study(workdir / "s.yaml", tiny_study(budget={"n_trials": 1, "max_epochs": 1}))
    ran_a_study = f"""
        from tuner.cli import main

        try:
            main(["run", {str(study)!r}, "--workers", "1"])
        except SystemExit as e:
            assert e.code == 0, e.code
    """
    kept = faults(ran_a_study)  # in the worker's process: the freed pages are used again
    # glibc's defaults (measured: 107k-176k faults against 6k-7k kept), and the user's own
    # malloc settings, which win
    fresh = faults("")
    assert fresh > 10 * kept, (fresh, kept)
    user = faults(ran_a_study, MALLOC_TRIM_THRESHOLD_="131072")
    assert user > 10 * kept, (user, kept)
