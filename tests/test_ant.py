"""The Ant families (ant-vel, ant-dir, ant-goal): physics, reward and termination against the MAML code's formulas
recomputed from raw simulator state, and the batched form against single envs step for step."""

from __future__ import annotations

from pathlib import Path

import gymnasium.envs.mujoco
import metarl.envs as envs
import mujoco
import numpy as np
import pytest
from metarl.envs import AntBatch, AntDirTask, AntGoalTask, AntVelTask
from metarl.envs.ant import INIT_QPOS, ant_model, healthy
from metarl.envs.contract import check_family

NAMES = ["ant-vel", "ant-dir", "ant-goal"]
TASKS = {"ant-vel": [AntVelTask(0.3), AntVelTask(2.7), AntVelTask(1.2)],
         "ant-dir": [AntDirTask(1.0), AntDirTask(-1.0), AntDirTask(-1.0)],
         "ant-goal": [AntGoalTask((2.0, -1.0)), AntGoalTask((-3.0, 0.5)), AntGoalTask((0.25, 2.9))]}
BAD = {"ant-vel": AntVelTask(3.5), "ant-dir": AntDirTask(0.5), "ant-goal": AntGoalTask((0.0, -3.2))}


def _subtree_com_velocity(model, data) -> np.ndarray:
    """rllab's body_comvels[torso], written out: the mass-weighted mean of every body's COM velocity
    (mj_objectVelocity, world frame) over the torso's subtree (the whole ant)."""
    momentum, mass = np.zeros(3), 0.0
    velocity = np.zeros(6)
    for body in range(1, model.nbody):
        mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, body, velocity, 0)
        momentum += model.body_mass[body] * velocity[3:]
        mass += model.body_mass[body]
    return momentum / mass


def test_model_has_the_reference_physics():
    m = ant_model()
    assert m.opt.timestep == 0.02 and m.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
    np.testing.assert_allclose(m.geom_solimp[:, :3], np.tile([0.8, 0.8, 0.01], (m.ngeom, 1)))
    np.testing.assert_allclose(m.geom_solref, np.tile([0.02, 1.0], (m.ngeom, 1)))
    # gear 150 on controls in [-1, 1]: the reference's torques in [-150, 150] behind rllab's normalize
    np.testing.assert_allclose(m.actuator_gear[:, 0], 150.0)
    np.testing.assert_allclose(m.actuator_ctrlrange, np.tile([-1.0, 1.0], (8, 1)))
    assert (m.nbody, m.nq, m.nv, m.nu) == (14, 15, 14, 8)
    assert ant_model() is not ant_model()  # each caller gets its own copy to edit


def test_the_models_sensors_make_a_plain_forward_pass_compute_contact_forces_and_change_no_physics():
    with_sensors = ant_model()
    spec = mujoco.MjSpec.from_file(str(Path(gymnasium.envs.mujoco.__file__).parent / "assets" / "ant.xml"))
    spec.option.timestep = 0.02
    for geom in spec.geoms:
        geom.solimp[:3] = [0.8, 0.8, 0.01]
    bare = spec.compile()
    datas = [mujoco.MjData(m) for m in (with_sensors, bare)]
    rng = np.random.default_rng(0)
    for d in datas:
        d.qpos[:] = INIT_QPOS
    touched = False
    for _ in range(60):
        ctrl = rng.uniform(-1, 1, 8)
        for m, d in zip((with_sensors, bare), datas):
            d.ctrl[:] = ctrl
            mujoco.mj_step(m, d)
            mujoco.mj_forward(m, d)
        np.testing.assert_array_equal(datas[0].qpos, datas[1].qpos)  # the same trajectory, bit for bit
        mujoco.mj_rnePostConstraint(bare, datas[1])
        mujoco.mj_subtreeVel(bare, datas[1])
        np.testing.assert_array_equal(datas[0].cfrc_ext, datas[1].cfrc_ext)  # computed by mj_forward alone
        np.testing.assert_array_equal(datas[0].subtree_linvel, datas[1].subtree_linvel)
        touched |= bool(np.any(datas[0].cfrc_ext[1:] != 0))
    assert touched


@pytest.mark.parametrize("name", NAMES)
def test_reward_is_the_reference_formula_on_raw_simulator_state(name):
    env = envs.make(name)
    task = TASKS[name][1]
    obs, _ = env.reset(seed=4, options={"task": task})
    u = env.unwrapped
    np.testing.assert_allclose(obs[:15], INIT_QPOS, atol=0.05)  # the reference's initial pose plus 0.01 noise
    rng = np.random.default_rng(2)
    saw_contact = False
    for _ in range(30):
        action = rng.uniform(-1.5, 1.5, 8)  # partly outside the action space: the costs charge the clipped one
        obs, reward, terminated, truncated, info = env.step(action)
        d = u.data
        clipped = np.clip(action, -1.0, 1.0)
        contact = np.clip(d.cfrc_ext, -1.0, 1.0)
        velocity = _subtree_com_velocity(u.model, d)[0]
        com_xy = d.subtree_com[1, :2]
        if name == "ant-vel":
            forward = -abs(velocity - task.velocity) + 1.0
        elif name == "ant-dir":
            forward = task.direction * velocity
        else:
            forward = -np.abs(com_xy - np.array(task.goal)).sum() + 4.0
        expected = forward - 0.005 * np.sum(clipped ** 2) - 0.0005 * np.sum(contact ** 2) + 0.05
        assert reward == pytest.approx(expected, rel=1e-10, abs=1e-10)
        assert info["reward_forward"] == pytest.approx(forward, rel=1e-10, abs=1e-10)
        np.testing.assert_allclose(d.ctrl, clipped)
        # The observation: qpos, qvel, clipped contact forces, torso rotation, torso subtree's centre of mass.
        np.testing.assert_array_equal(obs, np.concatenate([d.qpos, d.qvel, contact.ravel(), d.xmat[1],
                                                           d.subtree_com[1]]))
        saw_contact |= bool(np.any(contact[1:] != 0.0))
        assert not terminated and not truncated
    assert saw_contact  # the contact forces are computed (a bare mj_step leaves them zero)


def test_termination_is_a_non_finite_state_or_a_torso_height_outside_the_band():
    qpos = np.tile(np.array(INIT_QPOS), (6, 1))
    qpos[:, 2] = [0.55, 0.2, 1.0, 0.19, 1.01, 0.5]
    qvel = np.zeros((6, 14))
    qvel[5, 3] = np.inf
    np.testing.assert_array_equal(healthy(qpos, qvel), [True, True, True, False, False, False])


def test_an_ant_thrown_above_the_band_ends_its_episode_there():
    env = envs.make("ant-dir")
    env.reset(seed=0)
    u = env.unwrapped
    qvel = np.zeros(u.model.nv)
    qvel[2] = 6.0
    u.set_state(u.data.qpos.copy(), qvel)
    heights = []
    for _ in range(30):
        _, _, terminated, _, _ = env.step(np.zeros(8))
        heights.append(u.data.qpos[2])
        if terminated:
            break
    # It ends at the first step whose torso height is above 1.0, and not before.
    assert terminated and heights[-1] > 1.0 and all(0.2 <= z <= 1.0 for z in heights[:-1]), heights


@pytest.mark.parametrize("name", NAMES)
def test_family_passes_the_contract_checker_and_samples_its_distribution(name):
    check_family(envs.get_family(name).env_cls, name)
    env = envs.make(name).unwrapped
    tasks = env.sample_tasks(np.random.default_rng(0), 2000)
    assert tasks == env.sample_tasks(np.random.default_rng(0), 2000)
    if name == "ant-vel":
        v = np.array([t.velocity for t in tasks])
        assert v.min() >= 0 and v.max() <= 3 and abs(v.mean() - 1.5) < 0.1
    elif name == "ant-dir":
        d = np.array([t.direction for t in tasks])
        assert set(d) == {-1.0, 1.0} and abs(d.mean()) < 0.1
    else:
        g = np.array([t.goal for t in tasks])
        assert g.min() >= -3 and g.max() <= 3 and np.all(np.abs(g.mean(0)) < 0.2)
    with pytest.raises(ValueError, match=name):
        env.reset(options={"task": BAD[name]})


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_batched_ant_equals_single_envs_step_for_step_through_terminations(name, num_threads):
    tasks = TASKS[name] * 2
    n = len(tasks)
    batch = envs.make_batched(name, n, num_threads=num_threads)
    assert isinstance(batch, AntBatch)
    batch.set_attr("task", tasks)
    obs, _ = batch.reset(seed=9)
    singles = [envs.make(name) for _ in range(n)]
    single_obs = [env.reset(seed=9 + i, options={"task": tasks[i]})[0] for i, env in enumerate(singles)]
    np.testing.assert_array_equal(obs, np.stack(single_obs))
    # Copies 1 and 4 are thrown upwards at different speeds: they terminate (torso above 1.0) at different steps.
    for i, speed in ((1, 4.0), (4, 7.0)):
        batch.qvel[i, 2] = speed
        singles[i].unwrapped.data.qvel[2] = speed
    rng = np.random.default_rng(1)
    ended = [None] * n
    for t in range(40):
        actions = rng.uniform(-1.2, 1.2, (n, 8)).astype(np.float32)
        obs, rewards, terminated, truncated, info = batch.step(actions)
        for i, env in enumerate(singles):
            if ended[i] is not None:  # frozen after its end: reward 0, still terminated
                assert rewards[i] == 0.0 and terminated[i] and info["reward_survive"][i] == 0.0
                continue
            o, r, te, tr, si = env.step(actions[i])
            # rollout starts each step's solver cold where the single env warm-starts: round-off differences only
            np.testing.assert_allclose(obs[i], o, rtol=0, atol=1e-9)
            assert rewards[i] == pytest.approx(r, abs=1e-9)
            for key in ("reward_forward", "reward_ctrl", "reward_contact", "reward_survive"):
                assert info[key][i] == pytest.approx(si[key], abs=1e-9), key
            assert (terminated[i], truncated[i]) == (te, tr)
            if te:
                ended[i] = t
    assert ended[1] is not None and ended[4] is not None and ended[1] != ended[4], ended
    assert [ended[i] for i in (0, 2, 3, 5)] == [None] * 4
