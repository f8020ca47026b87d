"""The layer registry: which weights of a model are sparsified, tied parameters, the summary."""

import logging

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

import sparsetrain as st
from sparsetrain.backends.sparse import SparseLayer
from sparsetrain.errors import UserError
from sparsetrain.sparse import choose_weights, register_layer, registered_weights
from sparsetrain.sparse.layers import LAYERS


def gpt2(layers=1, dim=32):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=layers, n_embd=dim, n_head=2, vocab_size=40, n_positions=16,
                                      bos_token_id=0, eos_token_id=0))


def bert():
    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, max_position_embeddings=16, pad_token_id=0))


def encoder():
    torch.manual_seed(0)
    return nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2,
                                 enable_nested_tensor=False)


def _masks(model):
    return {n[: -len("_mask")]: b for n, b in model.named_buffers() if n.endswith("_mask")}


def test_gpt2_conv1d_layers_get_the_density_exactly_and_the_tied_embedding_keeps_its_values():
    model = gpt2()
    embedding = model.transformer.wte.weight.detach().clone()
    st.Static(model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.25, distribution="uniform")
    masks = _masks(model)
    # the four Conv1D weights of the block, each sparse at exactly 1/4 (every size is a multiple of 4)
    assert sorted(masks) == sorted(f"transformer.h.0.{n}.weight" for n in ("attn.c_attn", "attn.c_proj",
                                                                           "mlp.c_fc", "mlp.c_proj"))
    for name, mask in masks.items():
        assert int(mask.sum()) == mask.numel() // 4
        assert int((model.get_parameter(name) != 0).sum()) <= mask.numel() // 4
    assert torch.equal(model.transformer.wte.weight, embedding)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_conv1d_allocation_uses_the_logical_out_in_shape():
    conv = registered_weights(gpt2())[2]
    assert isinstance(conv.module, Conv1D) and conv.shape == (32, 96)  # stored (in, out)
    assert conv.logical_shape == (96, 32)


def test_bert_linear_layers_sparse_decoder_tied_to_the_embedding_stays_dense():
    model = bert()
    words = model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.weight is words
    before = words.detach().clone()
    sp = st.Static(model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.25, distribution="uniform")
    assert "cls.predictions.decoder.weight (tied to bert.embeddings.word_embeddings.weight" in sp.coverage
    masks = _masks(model)
    assert len(masks) == 7  # q, k, v, attention out, intermediate, output, prediction transform
    assert all(int(m.sum()) == m.numel() // 4 for m in masks.values())
    assert torch.equal(words, before)


def test_attention_in_proj_is_three_logical_layers_with_exact_counts():
    model = encoder()
    sp = st.Static(model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.25, distribution="uniform")
    masks = _masks(model)
    assert len(masks) == 8  # per layer: in_proj, out_proj, linear1, linear2
    for i in range(2):
        q, k, v = masks[f"layers.{i}.self_attn.in_proj_weight"].chunk(3)
        assert [int(b.sum()) for b in (q, k, v)] == [64, 64, 64]  # 16x16 blocks at 1/4
        assert sp.part_targets[f"layers.{i}.self_attn.in_proj_weight"] == [64, 64, 64]
        assert int(masks[f"layers.{i}.self_attn.out_proj.weight"].sum()) == 64


def test_erk_allocates_q_k_v_as_square_layers():
    model = encoder()
    sp = st.Static(model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.2, distribution="erk")
    # ERK raw density (out + in) / (out * in): a 16x16 part gets 32/256, linear1/2 (32x16) get 48/512
    q = sp.part_targets["layers.0.self_attn.in_proj_weight"][0]
    lin = sp.targets["layers.0.linear1.weight"]
    assert q / 256 == pytest.approx((32 / 256) / (48 / 512) * lin / 512, abs=2 / 256)


def test_tied_sparsify_uses_one_mask_for_both_names():
    model = gpt2()
    sp = st.Static(model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.5, distribution="uniform",
                   tied="sparsify", include=("lm_head.weight",))
    assert [w.name for w in sp.weights] == ["lm_head.weight"]
    assert list(_masks(model)) == ["lm_head.weight"]
    assert int((model.transformer.wte.weight == 0).sum()) == 40 * 32 // 2
    rows = {r["name"]: r for r in st.summary(model)}
    assert rows["transformer.wte.weight"]["state"].startswith("sparse (tied to lm_head.weight")
    assert rows["transformer.wte.weight"]["active"] == 640


def test_recurrent_and_embedding_weights_are_opt_in():
    def net():
        torch.manual_seed(0)
        return nn.ModuleDict({"emb": nn.Embedding(10, 8), "rnn": nn.LSTM(8, 16), "head": nn.Linear(16, 4)})
    assert choose_weights(net()).names == ["head.weight"]
    model = net()
    sp = st.Static(model, None, density=0.25, distribution="uniform", layer_types=("recurrent", "embedding"))
    assert [w.name for w in sp.weights] == ["emb.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "head.weight"]
    gates = _masks(model)["rnn.weight_hh_l0"].chunk(4)  # i, f, g, o: four 16x16 logical layers
    assert [int(g.sum()) for g in gates] == [64] * 4
    assert choose_weights(net(), include=("rnn.*",)).names == ["rnn.weight_ih_l0", "rnn.weight_hh_l0"]
    with pytest.raises(UserError, match="layer_types: unknown layer type 'lstm'; choose from: embedding, recurrent"):
        choose_weights(net(), layer_types=("lstm",))


def test_a_request_that_sparsifies_nothing_is_an_error():
    with pytest.raises(UserError, match=r"nothing to sparsify.*emb.weight: embedding: opt-in"):
        choose_weights(nn.ModuleDict({"emb": nn.Embedding(10, 8)}))
    with pytest.raises(UserError, match="nothing to sparsify.*lm_head.weight: tied to transformer.wte.weight"):
        choose_weights(gpt2(), include=("lm_head.*",))


def test_coverage_line_and_summary_count_by_hand(caplog):
    model = gpt2()
    with caplog.at_level(logging.INFO, logger="sparsetrain"):
        sp = st.Static(model, None, density=0.25, distribution="uniform", exclude=("*mlp.c_proj*",))
    # sparsified: c_attn 32*96 + attn c_proj 32*32 + c_fc 32*128 = 8192; model: 18,280 parameters
    total = sum(p.numel() for p in model.parameters())
    assert total == 40 * 32 + 16 * 32 + 4 * 32 + (32 * 96 + 96) + (32 * 32 + 32) + (32 * 128 + 128) + (128 * 32 + 32) + 2 * 32
    assert sp.coverage.startswith(f"sparsified 8,192 of {total:,} parameters ({100 * 8192 / total:.1f}% of the "
                                  "model) in 3 layers; left dense: transformer.wte.weight (embedding: opt-in")
    assert "transformer.h.0.mlp.c_proj.weight (exclude)" in sp.coverage
    assert sp.coverage in caplog.text
    rows = st.summary(model)
    assert [r["state"] for r in rows] == ["dense (tied to lm_head.weight)", "dense", "sparse", "sparse", "sparse",
                                          "dense", "dense (tied to transformer.wte.weight)"]
    assert [r["active"] for r in rows if r["state"] == "sparse"] == [768, 256, 1024]
    assert "3 of 7 registered weights sparse; density of the sparse ones 0.2500" in str(rows)


def test_sparse_backend_refuses_attention_out_proj_conv1d_and_ties_before_changing_anything():
    for model, options, message in (
            (encoder(), {"exclude": ("*in_proj*",)}, "its MultiheadAttention reads the weight directly"),
            (gpt2(), {}, "Conv1D.*the sparse backend supports Linear"),
            (gpt2(), {"tied": "sparsify", "include": ("lm_head.*",)}, "tied to transformer.wte.weight and replacing")):
        with pytest.raises(UserError, match=message):
            st.Static(model, None, density=0.25, backend="sparse", **options)
        assert not any(isinstance(m, SparseLayer) for m in model.modules())
        assert not _masks(model)


def test_sparse_backend_holds_the_encoders_feed_forward_layers():
    model = encoder()
    st.Static(model, None, density=0.25, distribution="uniform", backend="sparse", include=("*linear*",))
    assert sum(isinstance(m, SparseLayer) for m in model.modules()) == 4
    loss = model(torch.randn(2, 3, 16)).square().sum()
    loss.backward()
    assert model.layers[0].linear1.values.grad is not None


def test_register_layer_makes_a_new_type_sparsifiable():
    class Bilinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.kernel = nn.Parameter(torch.randn(4, 6))

    model = nn.Sequential(Bilinear(), nn.Linear(4, 2))
    assert choose_weights(model).names == ["1.weight"]
    register_layer("test-bilinear", Bilinear, ("kernel",), help="test only")
    try:
        assert choose_weights(model).names == ["0.kernel", "1.weight"]
    finally:
        LAYERS._entries.pop("test-bilinear")
        LAYERS._info.pop("test-bilinear")
