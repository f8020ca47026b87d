"""The embedded datasets (mnist1d, digits), `load`'s checks, and `batches`."""

import math

import numpy as np
import pytest
import torch

import sparsetrain.data.mnist1d as mnist1d
from sparsetrain.data import DATASETS, TensorData, batches, list_datasets, load
from sparsetrain.errors import UserError


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache folder per module, so the default MNIST-1D is generated once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cache(monkeypatch, shared_cache):
    monkeypatch.setenv("SPARSETRAIN_CACHE", str(shared_cache))
    return shared_cache


def counts(t):
    return torch.bincount(t, minlength=10).tolist()


# --- mnist1d -----------------------------------------------------------------------------


def test_mnist1d_shapes(cache):
    s = load("mnist1d", seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (3600, 400, 1000)  # val = 10% of 4000
    assert s.input_shape == (1, 40) and s.num_classes == 10 and s.name == "mnist1d"
    for part in (s.train, s.val, s.test):
        assert part.x.shape[1:] == (1, 40) and part.x.dtype == torch.float32
        assert part.y.dtype == torch.int64
        assert torch.isfinite(part.x).all()
        assert min(counts(part.y)) > 0
    # stratified: each class gets a tenth of its train+val samples, up to rounding
    total = torch.tensor(counts(torch.cat([s.train.y, s.val.y])))
    assert (torch.tensor(counts(s.val.y)) - total * 0.1).abs().max() <= 1


def test_mnist1d_seeds(cache):
    a, b, c = load("mnist1d", seed=0), load("mnist1d", seed=0), load("mnist1d", seed=1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert torch.equal(a.test.x, c.test.x) and torch.equal(a.test.y, c.test.y)
    assert not torch.equal(a.val.x, c.val.x)
    # the same 4000 samples, shared differently between train and val
    assert counts(torch.cat([a.train.y, a.val.y])) == counts(torch.cat([c.train.y, c.val.y]))
    assert torch.allclose(torch.cat([a.train.x, a.val.x]).sum(0), torch.cat([c.train.x, c.val.x]).sum(0))


def test_mnist1d_matches_reference(cache):
    """Golden values read once from the reference generator's output (greydanus/mnist1d,
    default args, seed 42; identical to its published mnist1d_data.pkl)."""
    s = load("mnist1d", seed=0)
    assert counts(s.test.y) == [102, 104, 89, 106, 106, 98, 99, 96, 98, 102]
    assert counts(torch.cat([s.train.y, s.val.y])) == [398, 396, 411, 394, 394, 402, 401, 404, 402, 398]

    (path,) = cache.glob("mnist1d-*.npz")  # the generator's float64 output, as cached by load
    with np.load(path) as data:
        x, y = data["x"], data["y"]
    assert x.shape == (5000, 40)
    assert y[:20].tolist() == [2, 6, 4, 5, 6, 6, 6, 0, 3, 1, 6, 9, 4, 3, 4, 5, 1, 9, 0, 3]
    np.testing.assert_allclose(
        x[0, :6],
        [-0.3320056673693902, -0.4719103656557236, -0.778697076293495,
         -1.0097408265367047, -0.8823525654053074, 0.10393481264623418],
        rtol=0, atol=1e-10,
    )
    np.testing.assert_allclose(
        x[-1, -6:],
        [-0.39591055084416954, -0.09864609258520216, 0.4472328851428726,
         0.6598756470890784, 0.8777343497528006, 1.193151836835276],
        rtol=0, atol=1e-10,
    )
    assert x[:4000].sum() == pytest.approx(-51.78746787509556, abs=1e-8)
    assert np.abs(x[:4000]).sum() == pytest.approx(118338.29510719894, rel=1e-12)
    assert x.mean() == pytest.approx(0, abs=1e-12) and x.std() == pytest.approx(1)


def test_mnist1d_templates():
    t = mnist1d.templates()
    assert t.shape == (10, 12)
    assert np.allclose(t[:, 0], 0) and np.allclose(t[:, -1], 0)  # every digit starts and ends at 0
    assert np.allclose(t.std(axis=1), 1 / 6)
    # digit 0 is a bump above the baseline, digit 6 a dip below it (reference outlines)
    assert (t[0, 1:-1] > 0).all() and (t[6, 1:-1] < 0).all()


def test_mnist1d_cache_written_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSETRAIN_CACHE", str(tmp_path))
    first = load("mnist1d", num_samples=200)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].startswith("mnist1d-") and files[0].endswith(".npz")

    def fail(*args, **kwargs):
        raise AssertionError("regenerated despite the cache")

    monkeypatch.setattr(mnist1d, "generate", fail)
    again = load("mnist1d", num_samples=200)
    assert torch.equal(first.test.x, again.test.x) and torch.equal(first.train.y, again.train.y)
    with pytest.raises(AssertionError, match="regenerated"):
        load("mnist1d", num_samples=300)  # other args, other cache key


def test_mnist1d_unreadable_cache_is_rebuilt(tmp_path):
    load("mnist1d", num_samples=100, data_dir=str(tmp_path))  # data_dir overrides the cache folder
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"not an npz")
    s = load("mnist1d", num_samples=100, data_dir=str(tmp_path))
    assert len(s.test) == 20 and len(s.train) + len(s.val) == 80
    assert list(tmp_path.iterdir()) == [path] and path.stat().st_size > 100


@pytest.mark.parametrize("bad", [5, 0, "100", 10.5])
def test_mnist1d_bad_num_samples(bad, tmp_path):
    with pytest.raises(UserError, match="num_samples"):
        load("mnist1d", num_samples=bad, data_dir=str(tmp_path))


# --- digits ------------------------------------------------------------------------------


def test_digits_splits():
    s = load("digits", seed=0)
    class_counts = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert counts(torch.cat([s.train.y, s.val.y, s.test.y])) == class_counts
    # ceil(1797 * 0.2) = 360: floors of n_c * 0.2 give 355, the 5 largest remainders
    # (.8 for digits 7 and 8, .6 for 0 and 3, then .4 for the lowest of 1, 2, 5) get one more
    expected = [math.floor(n * 0.2) for n in class_counts]
    for digit in (7, 8, 0, 3, 1):
        expected[digit] += 1
    assert expected == [36, 37, 35, 37, 36, 36, 36, 36, 35, 36]
    assert counts(s.test.y) == expected and len(s.test) == 360
    assert len(s.val) == math.ceil(1437 * 0.1) == 144
    assert s.input_shape == (1, 8, 8) and s.num_classes == 10
    for part in (s.train, s.val, s.test):
        assert part.x.shape[1:] == (1, 8, 8) and part.x.dtype == torch.float32
        assert part.x.min() >= 0 and part.x.max() <= 1
    assert s.train.x.max() == 1 and s.train.x.min() == 0


def test_digits_test_split_fixed_across_seeds():
    a, b = load("digits", seed=0), load("digits", seed=7)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.val.x, b.val.x)


def test_zero_val_fraction():
    s = load("digits", val_fraction=0.0)
    assert len(s.val) == 0 and s.val.x.shape == (0, 1, 8, 8)
    assert len(s.train) == 1437


# --- load: names and options -------------------------------------------------------------


def test_registry_lists_datasets():
    assert {"digits", "mnist1d"} <= set(list_datasets())
    assert "MNIST-1D" in DATASETS.info("mnist1d")["help"]


def test_unknown_dataset():
    with pytest.raises(UserError, match="choose one of:.*digits.*mnist1d"):
        load("cifar1000")


def test_unknown_option_names_it_and_the_allowed():
    with pytest.raises(UserError, match="'noise'.*allowed options: num_samples"):
        load("mnist1d", noise=True)
    with pytest.raises(UserError, match="'num_samples'.*allowed options: none"):
        load("digits", num_samples=10)


@pytest.mark.parametrize("bad", [1.0, -0.1, 2])
def test_bad_val_fraction(bad):
    with pytest.raises(UserError, match="val_fraction"):
        load("digits", val_fraction=bad)


# --- batches -----------------------------------------------------------------------------


@pytest.fixture
def tiny():
    y = torch.arange(10)
    return TensorData(x=y.float()[:, None] * 10, y=y)


def test_batches_cover_each_sample_once(tiny):
    got = list(batches(tiny, 3, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in got] == [3, 3, 3, 1]
    ys = torch.cat([y for _, y in got])
    assert sorted(ys.tolist()) == list(range(10)) and ys.tolist() != list(range(10))
    for x, y in got:  # inputs stay paired with their labels
        assert torch.equal(x[:, 0], y.float() * 10)


def test_batches_drop_last(tiny):
    got = list(batches(tiny, 3, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in got] == [3, 3, 3]
    assert len(set(torch.cat([y for _, y in got]).tolist())) == 9
    assert len(list(batches(tiny, 5, shuffle=False, drop_last=True))) == 2


def test_batches_order(tiny):
    def order(seed):
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([y for _, y in batches(tiny, 4, shuffle=True, generator=gen)]).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)
    plain = torch.cat([y for _, y in batches(tiny, 4, shuffle=False, device="cpu")])
    assert plain.tolist() == list(range(10))


def test_batches_bad_size(tiny):
    with pytest.raises(UserError, match="batch_size"):
        next(batches(tiny, 0, shuffle=False))
