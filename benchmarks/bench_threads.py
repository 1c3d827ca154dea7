"""Threads per worker: one intra-op torch thread against two, on networks from the quickstart's
size up to the classic small word-level language model (Zaremba et al. 2014: 10,000 words, two
LSTM layers of 200 units, batches of 20 windows of 20 steps), where the softmax dominates; and
the quickstart study beside one and two busy processes, against its quiet time.

(a) `1 vs 2 threads`: training steps (forward, loss, backward, clipping, SGD) of a bare network,
    in a fresh process whose OpenMP wait policy is set before torch starts; rounds alternate
    one thread and two, and the figure is the median of the paired ratios t(2 threads) /
    t(1 thread): below 1, the second thread pays. `tuner.threads` draws its rule from these rows.
(b) `contention`: `rnn-tuner run studies/quickstart.yaml` as a user runs it (default threads),
    alone, then beside one and two `python -c 'while True: pass'` processes; the ratio is each
    run's wall time over the quiet run's. Only meaningful on an otherwise quiet machine.

    python -m benchmarks --only threads [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import paired_ratio, row

ROOT = Path(__file__).resolve().parent.parent
# (a): name, vocabulary (0: the adding problem's 2 inputs), hidden units, layers, batch, steps.
NETWORKS = [
    ("quickstart largest: LSTM 2x64, batch 128, T=30", 0, 64, 2, 128, 30),
    ("adding LSTM 1x256, batch 128, T=50", 0, 256, 1, 128, 50),
    ("adding LSTM 1x512, batch 128, T=50", 0, 512, 1, 128, 50),
    ("word LM 2k words, LSTM 2x200, batch 20, T=20", 2000, 200, 2, 20, 20),
    ("word LM 10k words, LSTM 2x200, batch 20, T=20", 10000, 200, 2, 20, 20),
    ("word LM 10k words, LSTM 2x650, batch 20, T=35", 10000, 650, 2, 20, 35),
]
CONTENTION_TARGETS = {1: 1.2, 2: 1.7}  # fair share: 1.0 with a core free, 1.5 for 3 on 2 cores


# ---------------------------------------------------------------- (a) 1 vs 2 threads


def _network(vocab: int, hidden: int, layers: int) -> Any:
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, hidden) if vocab else None
            self.rnn = nn.LSTM(hidden if vocab else 2, hidden, layers, batch_first=True)
            self.head = nn.Linear(hidden, vocab or 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(self.embed(x) if self.embed is not None else x)  # (batch, time, h)
            return self.head(out if self.embed is not None else out[:, -1])

    return Net()


def time_steps(vocab: int, hidden: int, layers: int, batch: int, steps: int, rounds: int) -> dict:
    """In this process: seconds per training step with 1 and with 2 threads, rounds interleaved."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = _network(vocab, hidden, layers)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    if vocab:
        x, y = torch.randint(vocab, (batch, steps)), torch.randint(vocab, (batch, steps))
    else:
        x, y = torch.rand(batch, steps, 2), torch.rand(batch, 1)

    def step() -> None:
        out = net(x)
        if vocab:
            loss = nn.functional.cross_entropy(out.flatten(0, 1), y.flatten())
        else:
            loss = nn.functional.mse_loss(out, y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()

    def per_step(n_threads: int, n: int) -> float:
        torch.set_num_threads(n_threads)
        started = time.perf_counter()
        for _ in range(n):
            step()
        return (time.perf_counter() - started) / n

    # about half a second per measurement, whatever the network
    n = max(3, int(0.5 / per_step(1, 3)))
    one, two = [], []
    for _ in range(rounds):
        one.append(per_step(1, n))
        two.append(per_step(2, n))
    n_params = sum(p.numel() for p in net.parameters())
    return {"one": one, "two": two, "n_params": n_params, "steps_timed": n}


def _in_fresh_process(policy: str, net: tuple, rounds: int) -> dict:
    """`time_steps` in a new interpreter whose OpenMP runtime starts with `policy`."""
    env = {**os.environ, "OMP_WAIT_POLICY": policy, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)
    args = json.dumps([*net[1:], rounds])
    code = f"import json; from benchmarks.bench_threads import time_steps as t; print(json.dumps(t(*json.loads({args!r}))))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def thread_rows(quick: bool) -> list[dict]:
    rows = []
    networks = [NETWORKS[i] for i in (0, 2, 4)] if quick else NETWORKS
    for net in networks:
        m = _in_fresh_process("PASSIVE", net, 3 if quick else 7)
        ratio = paired_ratio(m["one"], m["two"])
        one = sorted(m["one"])[len(m["one"]) // 2]
        two = sorted(m["two"])[len(m["two"]) // 2]
        rows.append(
            row(
                f"1 vs 2 threads: {net[0]}",
                ratio,
                "-",
                None,
                summary=f"{one * 1e3:.3g} ms vs {two * 1e3:.3g} ms per step, "
                f"{m['n_params']:,} parameters",
                ms_per_step_1_thread=one * 1e3,
                ms_per_step_2_threads=two * 1e3,
                n_params=m["n_params"],
                vocab=net[1],
                hidden=net[2],
                layers=net[3],
                batch=net[4],
                steps=net[5],
            )
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------- (b) contention


def quickstart_seconds(workdir: Path, tag: str, n_trials: int | None) -> float:
    """Wall time of `rnn-tuner run studies/quickstart.yaml` with its own fresh stores."""
    script = Path(sys.executable).with_name("rnn-tuner")
    tuner = [str(script)] if script.exists() else [sys.executable, "-m", "tuner"]
    cmd = [*tuner, "run", str(ROOT / "studies" / "quickstart.yaml")]
    cmd += ["--storage", f"sqlite:///{workdir}/{tag}-optuna.db"]
    cmd += ["--tracking-uri", f"sqlite:///{workdir}/{tag}-mlflow.db"]
    if n_trials:
        cmd += ["--n-trials", str(n_trials)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for var in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY"):  # as a user runs it: the defaults
        env.pop(var, None)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def beside_busy(workdir: Path, n_busy: int, tag: str, n_trials: int | None) -> float:
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n_busy)]
    try:
        return quickstart_seconds(workdir, tag, n_trials)
    finally:
        for p in busy:
            p.kill()
            p.wait()


def contention_rows(quick: bool) -> list[dict]:
    n_trials = 4 if quick else None  # the quickstart's own 12 otherwise
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        quiet = quickstart_seconds(workdir, "quiet", n_trials)
        rows = []
        for n_busy, target in CONTENTION_TARGETS.items():
            busy = beside_busy(workdir, n_busy, f"busy{n_busy}", n_trials)
            ratio = busy / quiet
            rows.append(
                row(
                    f"quickstart study beside {n_busy} busy process{'es' * (n_busy > 1)}",
                    ratio,
                    f"<= {target}",
                    ratio <= target,
                    summary=f"{busy:.1f} s vs {quiet:.1f} s quiet"
                    + (f" ({n_trials} trials)" if n_trials else ""),
                    busy_s=busy,
                    quiet_s=quiet,
                    n_trials=n_trials or 12,
                )
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def run(quick: bool) -> list[dict]:
    return thread_rows(quick) + contention_rows(quick)


if __name__ == "__main__":
    for r in thread_rows(quick=True):
        print(r)
