"""A small training loop (torch, CPU) for test_preemption: it saves its model's state every
``SAVE_EVERY`` steps, prints each finished step, and, once SIGTERM came, saves the state of the
step it is at through ``rackpoint.preemption`` and exits. Before the emergency save it writes
that step and that state to ``OUT/at-exit.pt``, so the test can compare what it restores.

Run as ``python preempt_loop.py CLUSTER_TOML JOB OUT_DIR MODE``; MODE ``safe-point`` checks
``requested()`` every step; ``stuck`` hangs in the main thread after step ``STUCK_AT`` (as a
loop stuck in a collective would) and relies on the fallback, which saves a copy of the state
taken at the last finished step.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import torch

import rackpoint
from rackpoint import preemption

SAVE_EVERY = 5
STUCK_AT = 12
DEADLINE_S = 20.0


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone().contiguous() for name, t in model.state_dict().items()}


def main() -> None:
    cluster, job, out, mode = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
    client = rackpoint.Client(cluster)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    last: dict = {"step": 0, "state": state_of(model)}
    lock = threading.Lock()

    def emergency(step: int, state: dict[str, torch.Tensor], how: str):
        torch.save({"step": step, "state": state, "how": how}, out / "at-exit.pt")

        def save(deadline_s: float):
            return client.save(job, step, 0, 1, state, meta={"preempted": how}, deadline_s=deadline_s)
        return save

    def fallback(deadline_s: float):
        with lock:
            step, state = last["step"], last["state"]
        return emergency(step, state, "fallback")(deadline_s=deadline_s)

    options = {"fallback": fallback, "fallback_after_s": 2.0} if mode == "stuck" else {}
    guard = preemption.install(deadline_s=DEADLINE_S, **options)
    step = 0
    while True:
        step += 1
        x = torch.randn(32, 64)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with lock:
            last["step"], last["state"] = step, state_of(model)
        # The safe point: the step is complete and not saved yet.
        if guard.requested():
            guard.save_and_exit(emergency(step, state_of(model), "safe-point"))
        if step % SAVE_EVERY == 0:
            client.save(job, step, 0, 1, state_of(model))
        print(f"step {step}", flush=True)
        if mode == "stuck" and step == STUCK_AT:
            threading.Event().wait()  # never returns: only the fallback can save now
        time.sleep(0.02)


if __name__ == "__main__":
    main()
