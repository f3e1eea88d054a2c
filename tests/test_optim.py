import torch

from metarl.algorithm.optim import (
    backtracking_line_search,
    conjugate_gradient,
    flat_params,
    unflatten_like,
)


def _counting(A):
    calls = []

    def matvec(v):
        calls.append(1)
        return A @ v

    return matvec, calls


def test_conjugate_gradient_solves_random_spd_system():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(10, 10, generator=g, dtype=torch.float64)
    A = M @ M.T + 10 * torch.eye(10, dtype=torch.float64)
    b = torch.randn(10, generator=g, dtype=torch.float64)
    b_copy = b.clone()
    matvec, calls = _counting(A)
    x = conjugate_gradient(matvec, b, iters=12)
    x_true = torch.linalg.solve(A, b)
    assert torch.linalg.norm(x - x_true) / torch.linalg.norm(x_true) < 1e-6
    assert len(calls) <= 12
    assert torch.equal(b, b_copy)


def test_conjugate_gradient_product_equals_matvec_of_solution_for_partial_solves():
    # After fewer iterations than the dimension x is far from the solution; A x must still be exact.
    g = torch.Generator().manual_seed(1)
    M = torch.randn(12, 12, generator=g, dtype=torch.float64)
    A = M @ M.T + torch.eye(12, dtype=torch.float64)
    b = torch.randn(12, generator=g, dtype=torch.float64)
    for iters in (1, 3, 12):
        matvec, calls = _counting(A)
        x, ax = conjugate_gradient(matvec, b, iters=iters, return_product=True)
        assert len(calls) == iters
        torch.testing.assert_close(ax, A @ x, rtol=1e-10, atol=1e-10)


def test_conjugate_gradient_stops_early_on_exactly_solvable_system():
    A = torch.diag(torch.tensor([2.0, 5.0], dtype=torch.float64))
    b = torch.tensor([1.0, -3.0], dtype=torch.float64)
    matvec, calls = _counting(A)
    x = conjugate_gradient(matvec, b, iters=10)
    torch.testing.assert_close(x, torch.tensor([0.5, -0.6], dtype=torch.float64))
    assert len(calls) <= 2  # CG is exact in n = 2 steps, then the residual check stops it

    matvec, calls = _counting(3 * torch.eye(4, dtype=torch.float64))
    conjugate_gradient(matvec, torch.ones(4, dtype=torch.float64), iters=10)
    assert len(calls) == 1


def test_conjugate_gradient_zero_rhs_returns_zero_without_matvec():
    matvec, calls = _counting(torch.eye(3))
    x = conjugate_gradient(matvec, torch.zeros(3))
    assert torch.equal(x, torch.zeros(3)) and not calls


def test_flat_unflatten_roundtrip_preserves_order_and_shapes():
    params = {"w": torch.arange(6.0).view(2, 3), "b": torch.tensor([10.0, 11.0]), "s": torch.tensor(7.0)}
    flat = flat_params(params)
    assert torch.equal(flat, torch.tensor([0.0, 1, 2, 3, 4, 5, 10, 11, 7]))
    back = unflatten_like(flat, params)
    assert list(back) == ["w", "b", "s"]
    for name in params:
        assert back[name].shape == params[name].shape
        assert torch.equal(back[name], params[name])
    # A different flat vector goes to the right places.
    other = unflatten_like(flat * 2, params)
    assert torch.equal(other["b"], torch.tensor([20.0, 22.0]))


def _quadratic_problem(step_scale):
    """loss = ||x - 1||^2 starting at x = 0; kl = ||candidate - start||^2 / 2."""
    params = {"x": torch.zeros(3), "y": torch.zeros(2, 2)}
    step = {"x": step_scale * torch.ones(3), "y": torch.zeros(2, 2)}
    start = {k: v.clone() for k, v in params.items()}
    log = []

    def evaluate(p):
        loss = ((p["x"] - 1) ** 2).sum() + (p["y"] ** 2).sum()
        kl = 0.5 * sum(((p[k] - start[k]) ** 2).sum() for k in p)
        log.append(float(loss))
        return float(loss), float(kl)

    return params, step, evaluate, log


def test_line_search_accepts_full_step():
    params, step, evaluate, log = _quadratic_problem(1.0)
    new, info = backtracking_line_search(params, step, evaluate, max_kl=10.0)
    assert info["accepted"] and info["steps"] == 1 and info["step_fraction"] == 1.0
    assert info["loss_before"] == 3.0 and info["loss_after"] == 0.0
    assert info["kl"] == 1.5
    torch.testing.assert_close(new["x"], torch.ones(3))
    assert len(log) == 2  # original once, then one candidate
    assert torch.equal(params["x"], torch.zeros(3))


def test_line_search_backtracks_when_full_step_overshoots():
    # Full step lands at x = 2.5 (loss 6.75 > 3); 0.8 * 2.5 = 2.0 still has loss 3 (not <);
    # 0.64 * 2.5 = 1.6 has loss 1.08 and is the first accepted candidate.
    params, step, evaluate, _ = _quadratic_problem(2.5)
    new, info = backtracking_line_search(params, step, evaluate, max_kl=10.0, backtrack_ratio=0.8)
    assert info["accepted"] and info["steps"] == 3
    assert abs(info["step_fraction"] - 0.64) < 1e-12
    torch.testing.assert_close(new["x"], torch.full((3,), 1.6))
    assert info["loss_after"] < info["loss_before"]


def test_line_search_backtracks_to_satisfy_kl():
    params, step, evaluate, _ = _quadratic_problem(1.0)
    # kl(fraction) = 1.5 * fraction^2 <= 0.5 first holds at 0.5^1 -> fraction 0.5, kl 0.375.
    _, info = backtracking_line_search(params, step, evaluate, max_kl=0.5, backtrack_ratio=0.5)
    assert info["accepted"] and info["steps"] == 2 and info["kl"] <= 0.5


def _assert_rejected(params, originals, new, info, max_steps):
    assert not info["accepted"]
    assert info["steps"] == max_steps and info["step_fraction"] == 0.0
    assert info["loss_after"] == info["loss_before"]
    for k in params:
        assert torch.equal(new[k], originals[k])
        assert torch.equal(params[k], originals[k])


def test_line_search_restores_params_when_no_candidate_improves():
    params, _, evaluate, _ = _quadratic_problem(1.0)
    originals = {k: v.clone() for k, v in params.items()}
    step = {"x": -torch.ones(3), "y": torch.ones(2, 2)}  # uphill direction
    new, info = backtracking_line_search(params, step, evaluate, max_kl=10.0, max_steps=5)
    _assert_rejected(params, originals, new, info, 5)


def test_line_search_restores_params_when_every_kl_too_large():
    params, step, evaluate, _ = _quadratic_problem(1.0)
    originals = {k: v.clone() for k, v in params.items()}
    new, info = backtracking_line_search(params, step, evaluate, max_kl=1e-9, max_steps=4)
    _assert_rejected(params, originals, new, info, 4)


def test_line_search_rejects_non_finite_and_does_not_mutate_inputs():
    params = {"x": torch.zeros(2, requires_grad=True)}
    step = {"x": torch.ones(2)}
    step_copy = step["x"].clone()

    def evaluate(p):
        # Full step reports a -inf loss (which would pass "loss < before") and must be skipped.
        if torch.all(p["x"] == 1):
            return float("-inf"), 0.0
        return float(((p["x"].detach() - 1) ** 2).sum()), 0.0

    new, info = backtracking_line_search(params, step, evaluate, max_kl=1.0, backtrack_ratio=0.5)
    assert info["accepted"] and info["steps"] == 2

    # A NaN kl is rejected as well.
    _, info = backtracking_line_search(params, step, lambda p: (evaluate(p)[0], float("nan")), 1.0)
    assert not info["accepted"]
    torch.testing.assert_close(new["x"], torch.full((2,), 0.5))
    assert torch.equal(params["x"].detach(), torch.zeros(2)) and torch.equal(step["x"], step_copy)
    assert params["x"].grad is None
    # The accepted candidate is a fresh leaf that still supports autograd (MAML inner steps).
    assert new["x"].requires_grad and new["x"].is_leaf and new["x"] is not params["x"]


def test_line_search_given_its_start_does_not_evaluate_it_again():
    params, step, evaluate, log = _quadratic_problem(2.5)
    new, info = backtracking_line_search(params, step, evaluate, max_kl=10.0, start=(3.0, 0.0))
    assert info["steps"] == 3 and info["loss_before"] == 3.0
    assert len(log) == 3  # the three candidates only: the start (loss 3 at x = 0) came from the caller
    reference, _ = backtracking_line_search(params, step, _quadratic_problem(2.5)[2], max_kl=10.0)
    assert all(torch.equal(new[k], reference[k]) for k in new)


def test_the_allocator_setting_takes_on_glibc():
    import platform

    from metarl.common.allocator import keep_freed_memory

    applied = keep_freed_memory()
    assert applied == keep_freed_memory()  # once per process, the same answer after
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied, "mallopt refused the settings"
