"""The GCN propagates with D^-1/2 (A + I) D^-1/2 over the csbm graph; csbm draws what it says."""

import numpy as np
import torch

from sparsetrain.data import load
from sparsetrain.data.graph import csbm
from sparsetrain.models import create


def test_forward_is_two_dense_normalized_propagations_returning_the_batch_rows():
    g = csbm(nodes=40, classes=2, features=5, p_in=0.3, p_out=0.05, graph_seed=3)
    torch.manual_seed(0)
    model = create("gcn", num_classes=2, widths=[6], nodes=40, features=5, p_in=0.3, p_out=0.05, graph_seed=3)
    a = np.zeros((40, 40))
    a[g.edges[0], g.edges[1]] = 1.0
    a_hat = a + np.eye(40)
    d = a_hat.sum(1) ** -0.5
    norm = torch.tensor(d[:, None] * a_hat * d[None, :], dtype=torch.float32)
    w1, w2 = model.layers[0].weight, model.layers[1].weight
    x = torch.from_numpy(g.features)
    expected = norm @ torch.relu(norm @ x @ w1.T) @ w2.T
    batch = torch.tensor([[7.0], [0.0], [39.0]])
    torch.testing.assert_close(model(batch), expected[[7, 0, 39]])


def test_csbm_blocks_edges_and_node_splits():
    g = csbm()  # 600 nodes, 4 classes of 150, p_in 0.03, p_out 0.005
    assert np.bincount(g.labels).tolist() == [150] * 4
    src, dst = g.edges
    assert (src != dst).all()
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert all((b, a) in pairs for a, b in pairs)  # undirected
    same = g.labels[src] == g.labels[dst]
    # expected undirected edges: 4 * C(150, 2) * 0.03 = 1341 within, 135000 * 0.005 = 675 across (4 sd)
    assert abs(same.sum() / 2 - 1341) < 4 * 36 and abs((~same).sum() / 2 - 675) < 4 * 26
    a, b = load("csbm", seed=0, val_fraction=0.1), load("csbm", seed=1, val_fraction=0.1)
    nodes = [s.x[:, 0].long() for s in (a.train, a.val, a.test)]
    assert sorted(torch.cat(nodes).tolist()) == list(range(600)) and len(nodes[2]) == 300
    assert torch.equal(a.test.x, b.test.x) and not torch.equal(a.val.x, b.val.x)
    assert torch.equal(a.train.y, torch.from_numpy(g.labels)[nodes[0]])


def test_ugts_trains_the_gcn_scores_full_batch_through_the_trainer():
    from sparsetrain.algorithms import config_class
    from sparsetrain.config import from_dict
    from sparsetrain.engine import TrainConfig, Trainer

    opts = {"nodes": 48, "features": 6, "p_in": 0.2, "p_out": 0.02}
    data = load("csbm", seed=0, val_fraction=0.1, classes=3, **opts)
    torch.manual_seed(0)
    model = create("gcn", num_classes=3, widths=[8], **opts)  # 6*8 + 8*3 = 72 weights
    config = TrainConfig(epochs=4, batch_size=64, optimizer="adamw", lr=0.01, weight_decay=0.0)
    trainer = Trainer(model, data, config, method="ugts", method_config=from_dict(config_class("ugts"), {"density": 0.25}))
    method = trainer.method
    frozen = {w.name: method.frozen(w).clone() for w in method.weights}
    assert trainer.steps_per_epoch == 1 and sum(w.active for w in method.weights) == 72
    trainer.fit()
    assert sum(w.active for w in method.weights) == 18  # the target after 2 of 4 steps
    for w in method.weights:
        assert torch.equal(w.parameter.detach(), frozen[w.name] * w.mask)
