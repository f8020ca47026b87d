"""Sup-tickets: cyclic learning rate, superposition (CAA, EMA), exact budget, BN recalibration."""

import pytest
import torch
from torch import nn

import sparsetrain as st
from sparsetrain.data import DatasetSplits, TensorData
from sparsetrain.engine import Callback, TrainConfig, Trainer
from sparsetrain.errors import UserError

SPE, EPOCHS = 4, 6  # 3 epochs of RigL, then 3 cycles of 1 epoch: boundaries after steps 12, 16, 20, 24
OPTIONS = dict(density=0.25, distribution="uniform", update_interval=5, cycle_epochs=1,
               cycle_fraction=0.5, cycle_lr_1=0.01, cycle_lr_2=0.05)


def _net(norm=False):
    torch.manual_seed(0)
    layers = [nn.BatchNorm1d(5)] if norm else []
    return nn.Sequential(*layers, nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 5))  # 40 + 40 weights


def _run(model, **options):
    """Train EPOCHS * SPE steps; returns the method, the lr of every optimizer step and the
    network right after every optimizer step (before the method acts on it)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    method = st.create("sup-tickets", model, opt, total_steps=EPOCHS * SPE, steps_per_epoch=SPE,
                       **{**OPTIONS, **options})
    lrs, after = [], []
    plain_step = opt.step

    def step():
        plain_step()
        lrs.append(opt.param_groups[0]["lr"])
        after.append({k: v.detach().clone() for k, v in model.named_parameters()})

    opt.step = step
    g = torch.Generator().manual_seed(2)
    inputs = []
    for _ in range(EPOCHS * SPE):
        x, y = torch.randn(8, 5, generator=g) * 3 + 1, torch.randint(0, 5, (8,), generator=g)
        inputs.append(x)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        method.step()
    return method, lrs, after, inputs


def test_cyclic_learning_rate_is_the_triangle_in_each_cycle():
    _, lrs, _, _ = _run(_net())
    for s, lr in enumerate(lrs):
        if s < 12:
            assert lr == 0.1  # the user's own rate before the cycles
        else:
            t = ((s - 12) % SPE) / SPE
            assert lr == pytest.approx(0.01 + (0.05 - 0.01) * (1 - abs(1 - 2 * t)))
    assert lrs[12] == pytest.approx(0.01) and lrs[14] == pytest.approx(0.05)


def _prune(state, names, budget):
    """Independent global magnitude pruning: a stable descending sort over all sparse weights."""
    flat = torch.cat([state[n].abs().reshape(-1) for n in names])
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[torch.argsort(flat, descending=True, stable=True)[:budget]] = True
    out, start = dict(state), 0
    for n in names:
        out[n] = state[n] * keep[start:start + state[n].numel()].view_as(state[n])
        start += state[n].numel()
    return out


@pytest.mark.parametrize("superpose", ["caa", "ema"])
def test_superposed_network_matches_the_formula_and_keeps_the_budget_exactly(superpose):
    model = _net()
    method, _, after, _ = _run(model, superpose=superpose)
    names = ["0.weight", "2.weight"]
    budget = 20  # 0.25 * 80
    expected = after[11]  # the network at the end of the first phase (ticket 0)
    for k, end in enumerate([15, 19, 23], start=1):
        f = 1 / (k + 1) if superpose == "caa" else 0.5
        expected = _prune({n: (1 - f) * expected[n] + f * after[end][n] for n in expected}, names, budget)
    for name, value in model.named_parameters():
        assert torch.allclose(value, expected[name], atol=1e-6), name
    assert sum(w.active for w in method.weights) == budget
    assert method.current_targets() == {w.name: w.active for w in method.weights}
    for w in method.weights:
        assert torch.equal(w.mask, expected[w.name] != 0)
    assert method.tickets == 3


def test_each_cycle_starts_with_a_large_re_exploration():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    method = st.create("sup-tickets", model, opt, total_steps=EPOCHS * SPE, steps_per_epoch=SPE,
                       **{**OPTIONS, "update_interval": 1000})  # no regular update before the cycles
    g = torch.Generator().manual_seed(0)
    changed = []
    for _ in range(EPOCHS * SPE - 1):
        before = [w.mask.clone() for w in method.weights]
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 5, generator=g)), torch.randint(0, 5, (8,), generator=g)).backward()
        method.step()
        dropped = [int((b & ~w.mask).sum()) for b, w in zip(before, method.weights)]
        if any(dropped):
            changed.append((method.step_count, dropped))
    # at the start of each cycle, half of each layer's 10 weights are dropped (some may regrow at once)
    assert [s for s, _ in changed] == [12, 16, 20]
    assert all(0 < d <= 5 for _, dropped in changed for d in dropped)


def test_batch_norm_statistics_are_recomputed_on_the_last_epochs_inputs():
    model = _net(norm=True)
    _, _, _, inputs = _run(model)
    last = inputs[-SPE:]
    bn = model[0]
    assert torch.allclose(bn.running_mean, torch.stack([x.mean(0) for x in last]).mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, torch.stack([x.var(0) for x in last]).mean(0), atol=1e-5)


def test_no_cycles_when_the_cycle_budget_is_below_one_cycle():
    method, lrs, _, _ = _run(_net(), cycle_epochs=8, cycle_fraction=0.1)
    assert method.cycles == 0 and set(lrs) == {0.1} and method.superposed is None


class _Interrupt(Callback):
    def on_epoch_end(self, trainer):
        if trainer.epoch == 2:
            raise KeyboardInterrupt


def test_trainer_resumes_inside_the_cycles_identically(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    y = (x.sum(1) > 0).long()
    data = DatasetSplits("toy", TensorData(x[:48], y[:48]), TensorData(x[:0], y[:0]), TensorData(x[48:], y[48:]), 2, (5,))
    config = TrainConfig(epochs=4, batch_size=16, lr=0.05, device="cpu")
    method_config = st.algorithms.SupTicketsConfig(density=0.25, update_interval=2, cycle_epochs=1, cycle_fraction=0.5)

    def trainer(path, callbacks=()):
        return Trainer(_net(norm=True), data, config, method="sup-tickets", method_config=method_config,
                       seed=1, callbacks=callbacks, checkpoint_path=path)

    straight = trainer(tmp_path / "a.pt")
    straight.fit()
    assert straight.method.installed and straight.method.tickets == 2
    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path / "b.pt", [_Interrupt()]).fit()
    resumed = trainer(tmp_path / "b.pt")
    resumed.fit(resume=True)
    assert [h["test_acc"] for h in resumed.history] == [h["test_acc"] for h in straight.history]
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_sup_tickets_over_granet_prunes_on_the_cubic_schedule_then_superposes_at_the_budget():
    spe, epochs = 4, 10  # 5 cycles of 1 epoch from step 20; pruning every 2 steps until step 16
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    method = st.create("sup-tickets-granet", model, opt, total_steps=epochs * spe, steps_per_epoch=spe,
                       density=0.25, initial_density=0.5, distribution="uniform", update_interval=2,
                       prune_stop_fraction=0.4, cycle_epochs=1, cycle_fraction=0.5)
    assert method.cycle_start == 20 and sum(w.active for w in method.weights) == 40  # initial_density 0.5
    g = torch.Generator().manual_seed(2)
    counts, masks = [], []
    for _ in range(epochs * spe):
        x, y = torch.randn(8, 5, generator=g), torch.randint(0, 5, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        method.step()
        counts.append(sum(w.active for w in method.weights))
        masks.append(torch.cat([w.mask.reshape(-1) for w in method.weights]))
    for t in range(2, 17, 2):  # an independent cubic: d_t = d_f + (d_i - d_f)(1 - t / 16)^3 of 80 weights
        assert counts[t - 1] == round((0.25 + 0.25 * (1 - t / 16) ** 3) * 80), t
    assert counts[15:] == [20] * 25  # at the budget from the end of pruning to the end
    assert any(not torch.equal(masks[t - 2], masks[t - 1]) for t in range(18, 21))  # regrowth after pruning
    assert method.tickets == 5 and method.installed
    assert sum(int(w.mask.sum()) for w in method.weights) == 20


def test_sup_tickets_over_granet_refuses_pruning_into_the_cycles():
    with pytest.raises(UserError, match="after the cycles begin"):
        st.create("sup-tickets-granet", _net(), torch.optim.SGD(_net().parameters(), lr=0.1), total_steps=40,
                  steps_per_epoch=4, density=0.25, update_interval=2, prune_stop_fraction=0.8, cycle_epochs=1,
                  cycle_fraction=0.5)
