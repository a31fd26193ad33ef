"""Tests of medmtl.weighting: loss-weighting strategies on a toy shared-encoder model."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from medmtl.errors import ConfigError
from medmtl.weighting import (
    TABLE2_VARIANTS,
    WEIGHTINGS,
    build_weighting,
    parse_weighting_spec,
    pcgrad_project,
    table2_variant,
)

TASKS = ("seg", "cls", "det")
LOSS_ONLY = ("equal", "static", "pflp", "itw", "uncertainty", "dwa")
GRADIENT_BASED = ("gradnorm", "pcgrad", "famo")
# Parameters that make every strategy's schedule move within a few steps.
PARAMS = {
    "static": {"weights": "3:1:2"},
    "pflp": {"period": 1, "unit": "step", "base_weights": "3:1:1"},
    "itw": {"central": "cls", "switch_at": 7, "unit": "step", "warmup_pflp": True},
}


class ToyNet(nn.Module):
    """Shared two-layer encoder (4 -> 8 -> 8) and one linear head (8 -> 1) per task."""

    def __init__(self, tasks=TASKS, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
        self.heads = nn.ModuleDict({t: nn.Linear(8, 1) for t in tasks})

    def shared_parameters(self):
        return list(self.encoder.parameters())

    def losses(self, tasks, step: int, scale: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(1000 + step)
        out = {}
        for i, t in enumerate(tasks):
            x = torch.randn(6, 4, generator=gen)
            y = torch.randn(6, 1, generator=gen) + i
            loss = nn.functional.mse_loss(self.heads[t](self.encoder(x)), y)
            out[t] = loss * (scale or {}).get(t, 1.0)
        return out


def make(name: str, tasks=TASKS, **extra):
    return build_weighting(name, tasks, **{**PARAMS.get(name, {}), **extra})


def grads_of(params):
    return [None if p.grad is None else p.grad.clone() for p in params]


# ---------------------------------------------------------------- all strategies
@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_backward_populates_grads_of_shared_and_heads(name):
    net = ToyNet()
    weighting = make(name)
    used = weighting.backward(net.losses(TASKS, 0), net.shared_parameters())
    assert set(used) == set(TASKS)
    assert all(math.isfinite(w) and w >= 0 for w in used.values())
    for p in net.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert set(weighting.weights()) == set(TASKS)


@pytest.mark.parametrize("name", LOSS_ONLY + ("famo",))
def test_gradients_are_the_returned_weights_times_task_gradients(name):
    net = ToyNet()
    weighting = make(name)
    for step in range(4):  # let the schedules / learned weights move first
        losses = net.losses(TASKS, step)
        weighting.backward(losses, net.shared_parameters())
        weighting.step_end()
    losses = net.losses(TASKS, 10)
    params = list(net.parameters())
    expected = [torch.zeros_like(p) for p in params]
    task_grads = {t: torch.autograd.grad(losses[t], params, retain_graph=True, allow_unused=True) for t in TASKS}
    net.zero_grad(set_to_none=True)
    used = weighting.backward(losses, net.shared_parameters())
    for t in TASKS:
        for e, g in zip(expected, task_grads[t]):
            if g is not None:
                e += used[t] * g
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e)


@pytest.mark.parametrize("name", LOSS_ONLY)
def test_loss_only_strategies_take_one_task_per_step(name):
    net = ToyNet()
    weighting = make(name)
    assert not weighting.requires_all_tasks
    used = weighting.backward(net.losses(["cls"], 0), net.shared_parameters())
    assert list(used) == ["cls"]
    assert net.heads["cls"].weight.grad is not None
    assert net.heads["seg"].weight.grad is None and net.heads["det"].weight.grad is None
    assert all(p.grad is not None for p in net.shared_parameters())
    weighting.step_end()
    assert weighting.step == 1


@pytest.mark.parametrize("name", GRADIENT_BASED)
def test_gradient_based_strategies_refuse_a_single_task_step(name):
    net = ToyNet()
    weighting = make(name)
    assert weighting.requires_all_tasks
    with pytest.raises(ConfigError, match=rf"{name}.*requires_all_tasks.*\['seg', 'det'\]"):
        weighting.backward(net.losses(["cls"], 0), net.shared_parameters())


def test_unknown_task_or_empty_losses_raise():
    weighting = make("equal")
    with pytest.raises(ConfigError, match="unknown tasks"):
        weighting.backward({"nope": torch.ones((), requires_grad=True)})
    with pytest.raises(ConfigError, match="no loss"):
        weighting.backward({})


# ---------------------------------------------------------------- registry and parameters
def test_build_weighting_errors_name_strategy_and_parameter():
    with pytest.raises(ConfigError, match="unknown weighting 'adaptive'"):
        build_weighting("adaptive", TASKS)
    with pytest.raises(ConfigError, match=r"'pflp'.*unknown parameter.*'perio'"):
        build_weighting("pflp", TASKS, perio=3)
    with pytest.raises(ConfigError, match=r"'itw'.*missing.*'central'"):
        build_weighting("itw", TASKS)
    with pytest.raises(ConfigError, match=r"'itw'.*'central'.*'liver'"):
        build_weighting("itw", TASKS, central="liver")
    with pytest.raises(ConfigError, match=r"'pflp'.*'period'"):
        build_weighting("pflp", TASKS, period=0)
    with pytest.raises(ConfigError, match=r"'pflp'.*'unit'"):
        build_weighting("pflp", TASKS, unit="iteration")
    with pytest.raises(ConfigError, match=r"'pflp'.*'factor'"):
        build_weighting("pflp", TASKS, factor=2.0)
    with pytest.raises(ConfigError, match=r"'dwa'.*'temperature'"):
        build_weighting("dwa", TASKS, temperature=0)
    with pytest.raises(ConfigError, match=r"'gradnorm'.*'norm_on'"):
        build_weighting("gradnorm", TASKS, norm_on="first")
    with pytest.raises(ConfigError, match="duplicates"):
        build_weighting("equal", ["a", "a"])


def test_static_weights_from_string_list_and_mapping():
    tasks = ["a", "b", "c", "d"]
    expected = {"a": 3.0, "b": 1.0, "c": 1.0, "d": 1.0}
    assert build_weighting("static", tasks, weights="3:1:1:1").weights() == expected
    assert build_weighting("static", tasks, weights=[3, 1, 1, 1]).weights() == expected
    assert build_weighting("static", tasks, weights={"d": 1, "c": 1, "b": 1, "a": 3}).weights() == expected
    assert build_weighting("static", tasks).weights() == dict.fromkeys(tasks, 1.0)
    for bad in ("3:1", "3:x:1:1", "3:-1:1:1", "0:0:0:0", "3:nan:1:1", {"a": 3}):
        with pytest.raises(ConfigError, match=r"'static'.*'weights'"):
            build_weighting("static", tasks, weights=bad)


def test_spec_string_parameters():
    assert parse_weighting_spec("pflp:period=10,factor=0.1,unit=step") == ("pflp", {"period": 10, "factor": 0.1, "unit": "step"})
    assert parse_weighting_spec("static:weights=3:1:1") == ("static", {"weights": "3:1:1"})
    assert parse_weighting_spec("equal") == ("equal", {})
    weighting = build_weighting("static:weights=3:1:2", TASKS)
    assert weighting.weights() == {"seg": 3.0, "cls": 1.0, "det": 2.0}
    with pytest.raises(ConfigError, match="key=value"):
        parse_weighting_spec("pflp:period")


# ---------------------------------------------------------------- PFLP and ITW
def test_pflp_rotates_focus_every_period_steps():
    weighting = build_weighting("pflp", TASKS, base_weights="3:1:2", period=2, unit="step", factor=0.1)
    base = {"seg": 3.0, "cls": 1.0, "det": 2.0}
    focuses = []
    for _ in range(8):
        w = weighting.weights()
        focus = weighting.focus()
        focuses.append(focus)
        assert w == {t: b if t == focus else b * 0.1 for t, b in base.items()}
        weighting.epoch_end()  # epochs do not move a step-unit schedule
        weighting.step_end()
    assert focuses == ["seg", "seg", "cls", "cls", "det", "det", "seg", "seg"]


def test_pflp_epoch_unit_and_custom_order():
    weighting = build_weighting("pflp", TASKS, unit="epoch", period=1, order=["det", "seg"], factor=0.5)
    seen = []
    for _ in range(4):
        for _ in range(3):
            weighting.step_end()  # steps do not move an epoch-unit schedule
            seen.append(weighting.focus())
        weighting.epoch_end()
    assert seen == ["det"] * 3 + ["seg"] * 3 + ["det"] * 3 + ["seg"] * 3
    assert weighting.weights() == {"seg": 0.5, "cls": 0.5, "det": 1.0}  # cls is never in focus


def test_pflp_scales_the_single_present_loss():
    net = ToyNet()
    weighting = build_weighting("pflp", TASKS, unit="step", factor=0.1)
    assert weighting.backward(net.losses(["cls"], 0), net.shared_parameters()) == {"cls": pytest.approx(0.1)}
    weighting.step_end()  # focus moves to "cls"
    assert weighting.backward(net.losses(["cls"], 0), net.shared_parameters()) == {"cls": 1.0}


@pytest.mark.parametrize("warmup_pflp", [False, True])
def test_itw_switches_and_suppresses_auxiliary_tasks(warmup_pflp):
    weighting = build_weighting(
        "itw", TASKS, central="cls", base_weights="3:3:3", switch_at=4, unit="step", suppress=0.01, warmup_pflp=warmup_pflp, pflp_factor=0.1
    )
    for step in range(4):
        assert weighting.stage == "warmup"
        focus = TASKS[step % 3]
        expected = {t: 3.0 if (t == focus or not warmup_pflp) else 3.0 * 0.1 for t in TASKS}
        assert weighting.weights() == pytest.approx(expected)
        weighting.step_end()
    for _ in range(5):  # final stage: fixed, no rotation
        assert weighting.stage == "final"
        assert weighting.weights() == pytest.approx({"seg": 0.03, "cls": 3.0, "det": 0.03})
        weighting.step_end()


def test_itw_epoch_unit_switch():
    weighting = build_weighting("itw", TASKS, central="det", switch_at=2)  # unit="epoch" by default
    for _ in range(10):
        weighting.step_end()
    assert weighting.weights() == {"seg": 1.0, "cls": 1.0, "det": 1.0}
    weighting.epoch_end()
    assert weighting.stage == "warmup"
    weighting.epoch_end()
    assert weighting.weights() == pytest.approx({"seg": 0.01, "cls": 0.01, "det": 1.0})


def test_table2_variants_give_the_listed_weights():
    tasks = ["cancer", "asthma", "bronchitis", "copd", "emphysema"]
    # variant: (strategy, auxiliary weight next to the central 3, PFLP during training/warm-up)
    listed = {
        "MTL": ("static", 3, False),
        "MTL0": ("pflp", 0.01, True),
        "MTL1": ("pflp", 0.1, True),
        "MTL2": ("pflp", 1, True),
        "MTL3": ("pflp", 3, True),
        "MTL4": ("pflp", 6, True),
        "ITW1": ("itw", 3, False),
        "ITW2": ("itw", 1, True),
        "ITW3": ("itw", 3, True),
    }
    assert set(listed) == set(TABLE2_VARIANTS)
    for variant, (expected_strategy, aux, pflp) in listed.items():
        strategy, params = table2_variant(variant.lower(), "cancer", tasks)
        assert strategy == expected_strategy
        weighting = build_weighting(strategy, tasks, **params)
        base = {t: 3.0 if t == "cancer" else float(aux) for t in tasks}
        if pflp:  # the central task is in focus first: the auxiliary weights are scaled by 0.1
            assert weighting.weights() == pytest.approx({t: 3.0 if t == "cancer" else aux * 0.1 for t in tasks})
        else:
            assert weighting.weights() == base
        if strategy == "itw":
            assert params["warmup_pflp"] == pflp
            for _ in range(weighting.switch_at):
                weighting.epoch_end()
            assert weighting.weights() == pytest.approx({t: 3.0 if t == "cancer" else aux * 0.01 for t in tasks})
    strategy, params = table2_variant("ITW2", "cancer", tasks, switch_at=5, suppress=0.1)
    assert (params["switch_at"], params["suppress"]) == (5, 0.1)
    with pytest.raises(ConfigError, match="Table 2 variant"):
        table2_variant("ITW9", "cancer", tasks)
    with pytest.raises(ConfigError, match="central task 'lung'"):
        table2_variant("ITW1", "lung", tasks)


# ---------------------------------------------------------------- learned / adaptive strategies
def test_uncertainty_loss_matches_hand_computation_and_is_learned():
    weighting = build_weighting("uncertainty", ["a", "b"])
    with torch.no_grad():
        for s, value in zip(weighting.log_vars, (0.5, -1.0)):
            s.fill_(value)
    la = torch.tensor(2.0, requires_grad=True)
    lb = torch.tensor(0.3, requires_grad=True)
    used = weighting.backward({"a": la, "b": lb})
    assert used == pytest.approx({"a": math.exp(-0.5), "b": math.exp(1.0)})
    # d/ds (exp(-s) L + s) = 1 - exp(-s) L ; d/dL = exp(-s)
    grads = torch.stack([s.grad for s in weighting.log_vars])
    torch.testing.assert_close(grads, torch.tensor([1 - math.exp(-0.5) * 2.0, 1 - math.exp(1.0) * 0.3]))
    torch.testing.assert_close(la.grad, torch.tensor(math.exp(-0.5)))

    net = ToyNet()
    weighting = build_weighting("uncertainty", TASKS)
    assert weighting.optimizer_parameters() == list(weighting.log_vars)
    opt = torch.optim.Adam([{"params": net.parameters()}, {"params": weighting.optimizer_parameters(), "weight_decay": 0.0}], lr=0.05)
    start = weighting.log_variances()
    for step in range(5):
        opt.zero_grad()
        weighting.backward(net.losses(TASKS, step), net.shared_parameters())
        opt.step()
        weighting.step_end()
    assert not torch.allclose(weighting.log_variances(), start)


def test_uncertainty_absent_task_keeps_its_log_variance():
    net = ToyNet()
    weighting = build_weighting("uncertainty", TASKS)
    opt = torch.optim.Adam(weighting.optimizer_parameters(), lr=0.1)
    for step in range(3):
        opt.zero_grad()
        weighting.backward(net.losses(["seg"], step), net.shared_parameters())
        opt.step()
    s = weighting.log_variances()
    assert s[0] != 0 and s[1] == 0 and s[2] == 0


def test_uncertainty_task_absent_after_a_step_does_not_move_under_adamw():
    """A task seen once and then absent keeps its s_t: no zero gradient for momentum to act on."""
    net = ToyNet()
    weighting = build_weighting("uncertainty", TASKS)
    opt = torch.optim.AdamW([{"params": net.parameters()}, {"params": weighting.optimizer_parameters(), "weight_decay": 0.0}], lr=0.1)
    opt.zero_grad()
    weighting.backward(net.losses(TASKS, 0), net.shared_parameters())
    opt.step()
    after_first = weighting.log_variances()
    for step in range(1, 4):
        opt.zero_grad()
        weighting.backward(net.losses(["seg"], step), net.shared_parameters())
        opt.step()
    now = weighting.log_variances()
    assert now[0] != after_first[0]
    torch.testing.assert_close(now[1:], after_first[1:], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["uncertainty", "famo", "gradnorm", "pcgrad", "equal"])
def test_loss_scale_gives_scaled_gradients_of_the_unscaled_objective(name):
    """What a float16 GradScaler needs: every gradient (the regularisers' too) times the scale,
    so that unscaling gives back exactly the gradients of the unscaled step."""
    grads = {}
    for scale in (1.0, 1024.0):
        torch.manual_seed(0)
        net = ToyNet()
        weighting = build_weighting(name, TASKS, **({"min_losses": {"seg": 0.1}} if name == "famo" else {}))
        weighting.backward(net.losses(TASKS, 0), net.shared_parameters(), loss_scale=scale)
        params = [*net.parameters(), *weighting.optimizer_parameters()]
        grads[scale] = [p.grad / scale for p in params]
        if name == "uncertainty":
            assert all(s.grad is not None for s in weighting.optimizer_parameters())
    for unscaled, rescaled in zip(grads[1.0], grads[1024.0]):
        torch.testing.assert_close(rescaled, unscaled, rtol=1e-5, atol=1e-7)


def test_uncertainty_loads_a_checkpoint_with_one_log_variance_tensor():
    weighting = build_weighting("uncertainty", ["a", "b"])
    weighting.load_state_dict({"log_vars": torch.tensor([0.25, -0.5]), "_extra_state": {"step": 3, "epoch": 1}})
    torch.testing.assert_close(weighting.log_variances(), torch.tensor([0.25, -0.5]))
    assert weighting.step == 3


def test_dwa_follows_the_formula_after_two_epochs():
    weighting = build_weighting("dwa", ["a", "b", "c"], temperature=2.0)
    assert weighting.weights() == {"a": 1.0, "b": 1.0, "c": 1.0}
    weighting.epoch_end({"a": 1.0, "b": 2.0, "c": 4.0})
    assert weighting.weights() == {"a": 1.0, "b": 1.0, "c": 1.0}
    weighting.epoch_end({"a": 0.5, "b": 1.9, "c": 1.0})
    r = torch.tensor([0.5 / 1.0, 1.9 / 2.0, 1.0 / 4.0])
    expected = (3 * torch.softmax(r / 2.0, dim=0)).tolist()
    assert list(weighting.weights().values()) == pytest.approx(expected)
    assert sum(weighting.weights().values()) == pytest.approx(3.0)


def test_dwa_accumulates_per_task_means_over_steps_where_the_task_appeared():
    weighting = build_weighting("dwa", ["a", "b", "c"])
    param = nn.Parameter(torch.ones(()))

    def epoch(values):
        for task, value in values:
            weighting.backward({task: param * value})
            weighting.step_end()
        weighting.epoch_end()

    epoch([("a", 1.0), ("b", 4.0), ("a", 3.0)])  # means a=2, b=4, c absent
    epoch([("b", 2.0), ("a", 1.0), ("c", 5.0)])  # means a=1, b=2, c=5
    r = {"a": 0.5, "b": 0.5, "c": 1.0}  # c was absent in epoch 0 -> neutral ratio
    exps = {t: math.exp(v / 2.0) for t, v in r.items()}
    assert weighting.weights() == pytest.approx({t: 3 * e / sum(exps.values()) for t, e in exps.items()})


def test_gradnorm_weights_move_against_the_larger_gradient_and_stay_normalised():
    net = ToyNet()
    weighting = build_weighting("gradnorm", TASKS, alpha=1.5, lr=0.05)
    assert weighting.optimizer_parameters() == []  # owns its optimizer
    assert weighting.backward(net.losses(TASKS, 0, {"seg": 20.0}), net.shared_parameters()) == dict.fromkeys(TASKS, 1.0)
    for step in range(1, 8):
        weighting.backward(net.losses(TASKS, step, {"seg": 20.0}), net.shared_parameters())
        w = weighting.weights()
        assert sum(w.values()) == pytest.approx(3.0)
        assert min(w.values()) > 0
    assert w["seg"] < 1.0 < min(w["cls"], w["det"])


def test_gradnorm_all_shared_parameters_mode():
    net = ToyNet()
    weighting = build_weighting("gradnorm", TASKS, norm_on="all")
    for step in range(3):
        weighting.backward(net.losses(TASKS, step, {"det": 10.0}), net.shared_parameters())
    assert weighting.weights()["det"] < 1.0
    with pytest.raises(ConfigError, match="norm_on"):
        weighting.backward(net.losses(TASKS, 0), [])


def test_pcgrad_projection_on_hand_made_pairs():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    projected = pcgrad_project([g1, g2], torch.Generator().manual_seed(0))
    torch.testing.assert_close(projected, torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    assert torch.dot(projected[0], g2) == 0 and torch.dot(projected[1], g1) == 0
    # non-conflicting gradients pass unchanged
    h = [torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.0, 2.0])]
    torch.testing.assert_close(pcgrad_project(h), torch.stack(h))


def test_pcgrad_visiting_order_is_random_and_restored_on_resume():
    # g0 conflicts with g1 and g2: its projection depends on the order they are visited in
    grads = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([-1.0, 1.0, 0.0]), torch.tensor([-1.0, 0.0, 1.0])]
    results = {tuple(pcgrad_project(grads, torch.Generator().manual_seed(s))[0].tolist()) for s in range(8)}
    assert len(results) == 2
    net = ToyNet()
    weighting = build_weighting("pcgrad", TASKS, seed=3)
    weighting.backward(net.losses(TASKS, 0), net.shared_parameters())
    restored = build_weighting("pcgrad", TASKS, seed=3)
    restored.load_state_dict(weighting.state_dict())
    assert torch.equal(restored.generator.get_state(), weighting.generator.get_state())
    assert not torch.equal(restored.generator.get_state(), torch.Generator().manual_seed(3).get_state())


def test_pcgrad_backward_sets_projected_sum_on_shared_and_plain_grads_on_heads():
    net = ToyNet()
    tasks = ("seg", "cls")
    weighting = build_weighting("pcgrad", tasks)
    losses = net.losses(tasks, 3)
    shared = net.shared_parameters()
    per_task = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[t], shared, retain_graph=True)]) for t in tasks]
    head_grads = {t: torch.autograd.grad(losses[t], net.heads[t].weight, retain_graph=True)[0] for t in tasks}
    expected = pcgrad_project(per_task).sum(0)  # two tasks: the visiting order does not matter
    previous = [torch.full_like(p, 0.25) for p in shared]
    for p, g in zip(shared, previous):
        p.grad = g.clone()  # accumulated earlier (gradient accumulation)
    weighting.backward(losses, shared)
    got = torch.cat([(p.grad - g).reshape(-1) for p, g in zip(shared, previous)])
    torch.testing.assert_close(got, expected)
    for t in tasks:
        torch.testing.assert_close(net.heads[t].weight.grad, head_grads[t])


def _famo_losses(param, a, b):
    return {"fast": param * a, "slow": param * b}


def test_famo_moves_weight_to_the_slower_task():
    weighting = build_weighting("famo", ["fast", "slow"], lr=0.1)
    assert weighting.optimizer_parameters() == []
    param = nn.Parameter(torch.ones(()))
    for k in range(10):
        used = weighting.backward(_famo_losses(param, 0.5**k, 1.0 - 0.01 * k))
        assert sum(used.values()) == pytest.approx(1.0)
    z = weighting.weights()
    assert z["slow"] > 0.5 > z["fast"]


def test_famo_explicit_update_replaces_the_deferred_one():
    weighting = build_weighting("famo", ["fast", "slow"])
    param = nn.Parameter(torch.ones(()))
    with pytest.raises(ConfigError, match="before any backward"):
        weighting.update({"fast": 1.0, "slow": 1.0})
    weighting.backward(_famo_losses(param, 1.0, 1.0))
    weighting.update({"fast": 0.5, "slow": 0.99})
    after_update = weighting.logits.detach().clone()
    assert after_update[1] > after_update[0]
    weighting.backward(_famo_losses(param, 0.4, 0.98))  # nothing pending: no second update
    torch.testing.assert_close(weighting.logits.detach(), after_update)


# ---------------------------------------------------------------- exact resume
def _train(net, opt, weighting, steps, start):
    history = []
    for step in range(start, start + steps):
        opt.zero_grad(set_to_none=True)
        tasks = TASKS if weighting.requires_all_tasks else [TASKS[step % 3]]
        used = weighting.backward(net.losses(tasks, step), net.shared_parameters())
        opt.step()
        weighting.step_end()
        if step % 2 == 1:
            weighting.epoch_end()
        history.append((used, weighting.weights()))
    return history


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_state_dict_round_trip_resumes_exactly(name):
    def setup(seed):
        net = ToyNet(seed=seed)
        weighting = make(name)
        opt = torch.optim.SGD([*net.parameters(), *weighting.optimizer_parameters()], lr=0.05)
        return net, opt, weighting

    net, opt, weighting = setup(0)
    _train(net, opt, weighting, 5, 0)
    buffer = io.BytesIO()
    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "weighting": weighting.state_dict()}, buffer)
    uninterrupted = _train(net, opt, weighting, 5, 5)

    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    net2, opt2, weighting2 = setup(1)
    net2.load_state_dict(state["net"])
    opt2.load_state_dict(state["opt"])
    weighting2.load_state_dict(state["weighting"])
    assert (weighting2.step, weighting2.epoch) == (5, 2)
    resumed = _train(net2, opt2, weighting2, 5, 5)
    assert resumed == uninterrupted
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(weighting.parameters(), weighting2.parameters()):
        assert torch.equal(a, b)
    assert len({str(h[1]) for h in uninterrupted}) > 1 or name in ("equal", "static", "pcgrad")


def test_famo_same_batch_variant_needs_the_update_each_step():
    weighting = build_weighting("famo", ["fast", "slow"], update="same_batch")
    assert weighting.wants_losses_after and not build_weighting("famo", ["fast", "slow"]).wants_losses_after
    param = nn.Parameter(torch.ones(()))
    weighting.backward(_famo_losses(param, 1.0, 1.0))
    with pytest.raises(ConfigError, match="update\\(\\) was not called"):
        weighting.backward(_famo_losses(param, 0.5, 0.99))
    with pytest.raises(ConfigError, match="'next_batch' or 'same_batch'"):
        build_weighting("famo", ["a", "b"], update="later")
