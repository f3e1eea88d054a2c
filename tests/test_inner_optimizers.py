"""Learned inner-loop rules (Meta-SGD, KFO): exactly SGD at initialisation, their step as defined, the meta-gradient
and the Fisher through their factors against finite differences and the brute-force Hessian, and training with them."""

import pytest
import torch
from test_metalearner import (
    brute_force_kl_hvp,
    fake_batch,
    fake_meta,
    leaf_params,
    surrogate_finite_difference,
    tiny_policy,
)

from metarl.algorithm.inner_optimizers import attach, precondition, rule_keys
from metarl.algorithm.metalearner import adapt, meta_gradient_and_fvp
from metarl.algorithm.policy import adapted_keys
from metarl.config import Config
from metarl.trainer import Trainer

RULES = [("meta-sgd", False), ("kfo", False), ("kfo", True)]
SMALL = dict(env="nav2d", meta_batch_size=2, episodes_per_task=2, horizon=10, eval_tasks=2,
             eval_episodes_per_task=2, eval_steps=2, hidden_sizes=[8, 8], sampler_threads=1, update_threads=1)


def ruled_policy(algo, kind, psd, perturb=0.0, seed=0):
    """The tiny float64 policy with a rule over its adapted keys, its factors moved off the identity by `perturb`."""
    policy = tiny_policy(seed)
    keys = adapted_keys(policy, algo)
    attach(policy, keys, kind, psd)
    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if name.startswith("inner_rule."):
                p.add_(perturb * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return policy, keys


@pytest.mark.parametrize("kind,psd", RULES)
@pytest.mark.parametrize("algo", ["anil", "maml"])
def test_a_learned_rule_at_initialisation_is_sgd_exactly(algo, kind, psd):
    sgd = tiny_policy()
    policy, keys = ruled_policy(algo, kind, psd)
    batch = fake_batch(0)
    plain = adapt(sgd, leaf_params(sgd), batch, keys, 0.3, create_graph=False)
    ruled = adapt(policy, leaf_params(policy), batch, keys, 0.3, create_graph=False)
    for k in plain:
        assert torch.equal(plain[k], ruled[k]), k
    assert set(rule_keys(ruled)) and not set(rule_keys(keys))  # factors ride along, never adapted


def test_the_rules_steps_are_their_definitions():
    policy, keys = ruled_policy("maml", "kfo", False, perturb=0.3)
    params = leaf_params(policy)
    g = torch.randn(3, 4, 5, dtype=torch.float64)  # a per-task gradient of body.2.weight (4 x 5)
    left, right = params["inner_rule.left.body__2__weight"], params["inner_rule.right.body__2__weight"]
    torch.testing.assert_close(precondition(policy, params, "body.2.weight", g), left @ g @ right)
    bias = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(precondition(policy, params, "body.2.bias", bias),
                               params["inner_rule.scale.body__2__bias"] * bias)
    policy.inner_rule.psd = True
    torch.testing.assert_close(precondition(policy, params, "body.2.weight", g), left.T @ left @ g @ right.T @ right)
    anil, _ = ruled_policy("anil", "meta-sgd", False, perturb=0.3)
    p = leaf_params(anil)
    assert torch.equal(precondition(anil, p, "body.0.weight", g), g)  # no factor: a layer adapted only at test time
    assert torch.equal(precondition(anil, p, "head.bias", bias[:, :2]), p["inner_rule.scale.head__bias"] * bias[:, :2])


@pytest.mark.parametrize("kind,psd", RULES)
@pytest.mark.parametrize("algo", ["anil", "maml"])
def test_meta_gradient_through_the_rules_factors_matches_finite_differences(algo, kind, psd):
    policy, keys = ruled_policy(algo, kind, psd, perturb=0.2)
    lrs = [0.3, 0.2]
    meta = fake_meta(policy, keys, lrs, old_offset=0.05)
    params = leaf_params(policy)
    _, g, _ = meta_gradient_and_fvp(policy, params, meta, keys, lrs, first_order=False)
    torch.testing.assert_close(g, surrogate_finite_difference(policy, meta, keys, lrs, params), rtol=1e-5, atol=1e-8)
    rule = [i for i, k in enumerate(k for k, v in params.items() for _ in range(v.numel())) if k.startswith("inner_")]
    assert g[rule].abs().max() > 1e-6  # the outer loop learns the factors


@pytest.mark.parametrize("kind,psd", RULES)
@pytest.mark.parametrize("algo", ["anil", "maml"])
def test_fisher_vector_product_with_the_rules_factors_equals_the_brute_force_kl_hessian(algo, kind, psd):
    policy, keys = ruled_policy(algo, kind, psd, perturb=0.2)
    lrs = [0.3]
    meta = fake_meta(policy, keys, lrs)  # old policy = the adapted one: the KL is minimal here
    _, _, fvp = meta_gradient_and_fvp(policy, leaf_params(policy), meta, keys, lrs, first_order=False, task_chunk=2)
    v, direct = brute_force_kl_hvp(policy, meta, keys, lrs)
    torch.testing.assert_close(fvp(v), direct, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("kind,outer", [("meta-sgd", "trpo"), ("kfo", "trpo"), ("kfo", "promp")])
def test_a_run_with_a_learned_rule_starts_as_sgd_learns_its_factors_and_checkpoints_them(kind, outer):
    base = {**SMALL, "algo": "maml", "outer": outer}
    sgd, ruled = Trainer(Config(**base)), Trainer(Config(**base, inner_optimizer=kind))
    try:
        first_sgd, first_ruled = sgd.step(), ruled.step()
        for key in ("returns/pre_adaptation", "returns/post_adaptation", f"{outer}/surrogate_before"):
            assert first_sgd[key] == first_ruled[key], key  # the same first iteration's data
        factors = {k: v.detach().clone() for k, v in ruled.policy.named_parameters() if k.startswith("inner_rule.")}
        start = {k: torch.ones_like(v) if ".scale." in k else torch.eye(v.shape[0], dtype=v.dtype)
                 for k, v in factors.items()}
        assert any(not torch.equal(factors[k], start[k]) for k in factors)  # the TRPO step moved them
        resumed = Trainer(Config(**base, inner_optimizer=kind))
        try:
            resumed.load_state_dict(ruled.state_dict())
            assert ruled.evaluate() == resumed.evaluate()  # the factors are in the checkpoint and the evaluation
        finally:
            resumed.close()
        assert ruled.evaluate() != sgd.evaluate()
    finally:
        sgd.close()
        ruled.close()


def test_an_unknown_inner_optimizer_is_a_clear_error():
    from metarl.config import ConfigError, load_config
    from metarl.runs import preset_path

    with pytest.raises(ConfigError, match="inner_optimizer.*'adam'.*'sgd', 'meta-sgd', 'kfo'"):
        load_config(preset_path("nav2d"), {"inner_optimizer": "adam"})
