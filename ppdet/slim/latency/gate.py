"""Wait for a quiet machine before a timing: on a shared host a program runs 1.3-2x
slower for seconds at a time, and a timing taken then would count as the conv's cost."""
import time

from ppdet.slim.latency.timing import _exported, _predictor, _run_times

__all__ = ["QuietGate", "quiet_gate"]


class QuietGate:
    """Waits, before a timing, until the machine runs a small reference program (a 1x1
    conv, 64 channels, 40x40: about 0.2 ms) within ``tol`` of the fastest it has run it;
    after ``max_wait_s`` it lets the timing go (counted in ``gave_up``).

    When it gives up on ``rebase_after`` of the last ``window`` checks, the host has got
    slower for minutes: the fastest of that last wait becomes the reference (counted in
    ``rebased``) rather than every later timing waiting ``max_wait_s``; a faster run later
    lowers it again (bench/HISTORY.md, "Session 7: how far two builds of the tiny table
    agree"). ``sampler``: the reference timing (tests); by default the 1x1 conv above."""

    def __init__(self, threads=1, use_mkldnn=True, tol=1.15, max_wait_s=3.0, sampler=None,
                 window=5, rebase_after=3):
        self.tol, self.max_wait_s = tol, max_wait_s
        self.window, self.rebase_after = window, rebase_after
        self.best, self.checks, self.waited_s, self.gave_up = float("inf"), 0, 0.0, 0
        self.rebased, self._recent = 0, []
        self._sampler = sampler
        if sampler is None:
            spec = {"in": 64, "out": 64, "k": [1, 1], "stride": [1, 1], "padding": 0,
                    "dilation": [1, 1], "groups": 1, "bias": False, "bn": True,
                    "act": "relu", "hw": [40, 40]}
            with _exported([spec]) as (model_file, params_file, inputs):
                self.predictor = _predictor(model_file, params_file, inputs, threads,
                                            use_mkldnn)
        for _ in range(10):                  # a first idea of the fastest, over ~1 s
            self.best = min(self.best, self.sample())
            time.sleep(0.1 if sampler is None else 0)

    def sample(self):
        if self._sampler is not None:
            return self._sampler()
        return min(_run_times(self.predictor, 1, 5))

    def wait(self):
        self.checks += 1
        start = time.perf_counter()
        seen = float("inf")
        while True:
            t = self.sample()
            seen = min(seen, t)
            self.best = min(self.best, t)
            if t <= self.best * self.tol:
                gave_up = False
                break
            if time.perf_counter() - start > self.max_wait_s:
                self.gave_up += 1
                gave_up = True
                break
            time.sleep(0.2)
        self.waited_s += time.perf_counter() - start
        self._recent = (self._recent + [gave_up])[-self.window:]
        if sum(self._recent) >= self.rebase_after:
            self.best, self._recent = seen, []
            self.rebased += 1

    def summary(self):
        return (f"quiet gate: {self.checks} checks, {self.waited_s:.0f} s waited, "
                f"{self.gave_up} timings taken on a busy machine, reference reset "
                f"{self.rebased} times")


_GATES = {}


def quiet_gate(threads=1, use_mkldnn=True):
    """The process's :class:`QuietGate` for this target (one reference predictor)."""
    key = (int(threads), bool(use_mkldnn))
    if key not in _GATES:
        _GATES[key] = QuietGate(threads, use_mkldnn)
    return _GATES[key]
