"""The update's thread count follows what other processes leave free: one core taken, one thread fewer."""

from __future__ import annotations

import pytest

from metarl.common import threads


@pytest.fixture
def clock(monkeypatch):
    """A fake machine: system busy seconds, this process's CPU seconds and the wall clock, set by the test."""
    state = {"busy": 0.0, "own": 0.0, "wall": 0.0}
    monkeypatch.setattr(threads, "_system_busy_s", lambda: state["busy"])
    monkeypatch.setattr(threads, "_own_cpu_s", lambda: state["own"])
    monkeypatch.setattr(threads.time, "monotonic", lambda: state["wall"])
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    return state


def advance(state, wall, own, others):
    state["wall"] += wall
    state["own"] += own
    state["busy"] += own + others


def test_an_idle_machine_gets_every_thread_and_a_busy_core_takes_one_away(clock):
    budget = threads.UpdateThreads(limit=2)
    advance(clock, wall=10, own=19, others=0.5)  # we used both cores; others 0.05 of a core
    assert budget.others_cores() == pytest.approx(0.05)
    assert budget.now() == 2
    advance(clock, wall=10, own=10, others=10)  # another process held a whole core for the window
    assert budget.now() == 1
    advance(clock, wall=10, own=10, others=6)  # more than half a core counts as taken
    assert budget.now() == 1
    advance(clock, wall=10, own=10, others=4)
    assert budget.now() == 2


def test_the_limit_and_the_switch_are_respected(clock):
    advance(clock, wall=10, own=0, others=0)
    assert threads.UpdateThreads(limit=1).now() == 1
    fixed = threads.UpdateThreads(limit=2, adaptive=False)
    advance(clock, wall=10, own=10, others=20)
    assert fixed.now() == 2
    squeezed = threads.UpdateThreads(limit=2)
    advance(clock, wall=10, own=0, others=20)  # both cores taken: still one thread, never zero
    assert squeezed.now() == 1


def test_without_proc_stat_the_configured_count_is_kept(monkeypatch):
    monkeypatch.setattr(threads, "_system_busy_s", lambda: None)
    assert threads.UpdateThreads(limit=2).now() == 2


def test_the_real_counters_are_readable_here():
    budget = threads.UpdateThreads(limit=2)
    sum(i * i for i in range(200_000))  # some CPU time of our own
    others = budget.others_cores()
    assert others is None or others >= 0.0
