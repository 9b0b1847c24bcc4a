import math

import pytest
import torch

from bgpt.checkpoint import CheckpointError, from_reference_state_dict, to_reference_state_dict
from bgpt.config import PRESETS, BGPTConfig, resolve_config
from bgpt.errors import BGPTError
from bgpt.model import BGPT, BGPTClassifier
from bgpt.stream import PAD, collate, encode

from .reference_bgpt import RefBGPT, RefClassifier


def random_batch(config: BGPTConfig, lengths=(23, 7, 40), seed=0):
    g = torch.Generator().manual_seed(seed)
    streams = [
        encode(
            torch.randint(0, 256, (n,), generator=g).numpy().astype("uint8"),
            "bin",
            config.patch_size,
        )
        for n in lengths
    ]
    return collate(streams)


def ref_model_for(config: BGPTConfig) -> RefBGPT:
    ref = RefBGPT(
        config.patch_size,
        config.max_patches,
        config.hidden_size,
        config.patch_layers,
        config.byte_layers,
    )
    for p in ref.parameters():  # random weights everywhere, LayerNorms included
        torch.nn.init.normal_(p, std=0.1)
    return ref.eval()


def test_presets_have_paper_size():
    paper = BGPT(resolve_config("paper"))
    assert paper.config.heads == 12
    assert 109e6 < paper.num_parameters() < 111e6  # "110 M parameters"
    small = resolve_config("small")
    assert (
        small.patch_size,
        small.max_patches,
        small.hidden_size,
        small.patch_layers,
        small.byte_layers,
    ) == (16, 256, 256, 4, 2)


def test_config_validation():
    with pytest.raises(BGPTError, match="unknown field"):
        BGPTConfig.from_dict({"hidden": 3})
    with pytest.raises(BGPTError, match="divisible"):
        BGPTConfig(hidden_size=100, heads=3)
    with pytest.raises(BGPTError, match="positive"):
        BGPTConfig(patch_size=0)
    with pytest.raises(BGPTError, match="dropout"):
        BGPTConfig(dropout=1.5)
    with pytest.raises(BGPTError, match="neither a preset"):
        resolve_config("huge")
    assert resolve_config("small", hidden_size=128).hidden_size == 128


def test_config_json_round_trip(tmp_path):
    c = BGPTConfig(**PRESETS["small"], dropout=0.0)
    (tmp_path / "c.json").write_text(c.to_json())
    assert resolve_config(tmp_path / "c.json") == c


def test_lookup_sum_equals_onehot_linear(tiny_config):
    model = BGPT(tiny_config)
    patches = random_batch(tiny_config).patches
    emb = model.patch_decoder.embed
    torch.testing.assert_close(emb(patches), emb.forward_onehot(patches), atol=1e-5, rtol=0)


def test_parity_with_hf_gpt2_reference(tiny_config):
    ref = ref_model_for(tiny_config)
    model = from_reference_state_dict(ref.state_dict()).eval()
    assert model.config.heads == 2 and model.config.patch_size == 4
    batch = random_batch(tiny_config)
    with torch.no_grad():
        # patch-level decoder: last hidden states on every real patch
        ref_feats = ref.patch_level_decoder(batch.patches, batch.mask.long())
        feats = model.patch_decoder(batch.patches)
        m = batch.mask
        assert (ref_feats[m] - feats[m]).abs().max() <= 1e-5
        # byte-level decoder: logits for the same features and targets
        f, t = feats[m][:10], batch.patches[m][1:11]
        ref_logits = ref.byte_level_decoder(f, t).logits[:, :-1]  # last of S+1 predicts nothing
        assert (ref_logits - model.byte_decoder(f, t)).abs().max() <= 1e-5
        # the reference loss
        ref_loss = ref(batch.patches, batch.mask).loss
        out = model(batch.patches, batch.mask)
    assert abs(ref_loss.item() - out.loss.item()) <= 1e-5
    assert out.nll.numel() == (batch.mask[:, 1:].sum() * tiny_config.patch_size).item()


def test_classifier_parity_with_reference(tiny_config):
    ref = RefClassifier(
        tiny_config.patch_size,
        tiny_config.max_patches,
        tiny_config.hidden_size,
        tiny_config.patch_layers,
        5,
    )
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.1)
    model = from_reference_state_dict({"model": ref.state_dict()})
    assert isinstance(model, BGPTClassifier) and model.config.num_classes == 5
    batch = random_batch(tiny_config)
    with torch.no_grad():
        diff = ref.eval()(batch.patches, batch.mask.float()) - model.eval()(
            batch.patches, batch.mask
        )
    assert diff.abs().max() <= 1e-5


def test_classifier_poolings(tiny_config):
    """ "last" reads the last real patch's feature, "attention" with its initial (zero) query is
    the mean, and no pooling looks at padding patches (a row's logits equal it alone)."""
    cfg = tiny_config.replace(num_classes=3, byte_layers=0)
    batch = random_batch(tiny_config)
    lengths = batch.mask.sum(1).tolist()
    assert len(set(lengths)) > 1  # rows of different lengths: the shorter ones padded
    models = {
        p: BGPTClassifier(cfg.replace(pooling=p)).eval() for p in ("mean", "last", "attention")
    }
    state = models["mean"].state_dict()
    for m in models.values():
        m.load_state_dict(state, strict=False)  # one patch decoder and head for all three
    with torch.no_grad():
        feats = models["mean"].patch_decoder(batch.patches)
        last = feats[torch.arange(len(lengths)), torch.tensor(lengths) - 1]
        torch.testing.assert_close(
            models["last"](batch.patches, batch.mask), models["last"].classifier(last)
        )
        torch.testing.assert_close(
            models["attention"](batch.patches, batch.mask),
            models["mean"](batch.patches, batch.mask),
        )
        models["attention"].pool_query.normal_()
        for m in models.values():
            together = m(batch.patches, batch.mask)
            for i, n in enumerate(lengths):
                alone = m(batch.patches[i : i + 1, :n], batch.mask[i : i + 1, :n])
                torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=1e-5)
    with pytest.raises(BGPTError, match="pooling"):
        cfg.replace(pooling="max")


def test_reference_export_round_trip(tiny_config):
    model = BGPT(tiny_config).eval()
    state = to_reference_state_dict(model)
    again = from_reference_state_dict(state).eval()
    batch = random_batch(tiny_config)
    with torch.no_grad():
        assert torch.equal(
            model(batch.patches, batch.mask).loss, again(batch.patches, batch.mask).loss
        )


@pytest.mark.parametrize("byte_context", [False, True], ids=["paper", "ctx"])
def test_causality_across_patch_boundary(tiny_config, byte_context):
    tiny_config = tiny_config.replace(byte_context=byte_context)
    model = BGPT(tiny_config).eval()
    s = tiny_config.patch_size
    data = torch.randint(0, 256, (30,)).numpy().astype("uint8")
    base = collate([encode(data, "bin", s)])
    t = 2 * s + 1  # byte t of the data: in the 3rd data patch, past a patch boundary
    changed = data.copy()
    changed[t] = (int(changed[t]) + 1) % 256
    alt = collate([encode(changed, "bin", s)])
    with torch.no_grad():
        lp, lp2 = (
            model.symbol_logprobs(base.patches, base.mask),
            model.symbol_logprobs(alt.patches, alt.mask),
        )
    # stream position of byte t is s + t; logprobs row i is patch i+1
    flat, flat2 = lp.flatten(), lp2.flatten()
    pos = t  # index in the flattened (P-1)*S predictions = stream position - s
    assert torch.equal(
        flat[: pos + 1][:-1], flat2[: pos + 1][:-1]
    )  # every earlier prediction unchanged
    assert not torch.equal(flat[pos], flat2[pos])  # its own probability changes
    assert not torch.equal(flat[pos + 1 :], flat2[pos + 1 :])  # later ones see it


def test_loss_matches_symbol_logprobs(tiny_config):
    model = BGPT(tiny_config).eval()
    batch = random_batch(tiny_config)
    with torch.no_grad():
        loss = model(batch.patches, batch.mask).loss
        lp = model.symbol_logprobs(batch.patches, batch.mask)
    n = batch.mask[:, 1:].sum() * tiny_config.patch_size
    assert abs(-lp.sum() / n - loss).item() < 1e-5


def test_patch_sampling_uses_that_many_patches(tiny_config):
    model = BGPT(tiny_config)
    batch = random_batch(tiny_config)
    out = model(batch.patches, batch.mask, sample_patches=3)
    assert out.nll.shape == (3, tiny_config.patch_size) and out.rows.shape == (3,)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_untrained_loss_near_uniform(tiny_config):
    model = BGPT(tiny_config).eval()
    with torch.no_grad():
        loss = model(*(lambda b: (b.patches, b.mask))(random_batch(tiny_config))).loss.item()
    assert abs(loss - math.log(257)) < 0.3


def test_naive_next_byte_logits_match_teacher_forcing(tiny_config):
    model = BGPT(tiny_config).eval()
    batch = random_batch(tiny_config, lengths=(20,))
    s = tiny_config.patch_size
    with torch.no_grad():
        lp = model.symbol_logprobs(batch.patches, batch.mask)[0]  # (P-1, S)
        for i, t in [(0, 0), (2, 1), (3, 3)]:
            prefix = batch.patches[:, i + 1, :t]
            logits = model.next_byte_logits_naive(batch.patches[:, : i + 1], prefix)
            target = batch.patches[0, i + 1, t]
            assert abs(logits.log_softmax(-1)[0, target] - lp[i, t]) < 1e-5
    assert PAD == 256 and s == 4


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_gradient_checkpointing_same_gradients(tiny_config, dropout):
    """With dropout, the recomputed forward must draw the very masks of the first one."""
    config = tiny_config.replace(dropout=dropout)
    batch = random_batch(config)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = BGPT(config)
        model.set_gradient_checkpointing(ckpt)
        model(batch.patches, batch.mask).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_checkpointed_byte_chunks_same_loss_and_gradients(tiny_config, monkeypatch):
    """Checkpointing runs the byte level in chunks (BYTE_CHUNK): several chunks here."""
    import bgpt.model

    monkeypatch.setattr(bgpt.model, "BYTE_CHUNK", 8)
    batch = random_batch(tiny_config)
    losses, grads = [], []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = BGPT(tiny_config)
        model.set_gradient_checkpointing(ckpt)
        out = model(batch.patches, batch.mask)
        assert out.nll.shape[0] > 2 * 8  # the scored rows span three chunks or more
        out.loss.backward()
        losses.append(out.loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert abs(losses[0] - losses[1]) < 1e-6
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_cpu_dropout_rate_scale_and_gradient():
    from bgpt.kernels import KEEP_LEVELS
    from bgpt.ops import dropout

    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, 0.25, True)
    torch.manual_seed(3)
    again = dropout(x.detach(), 0.25, True)
    assert torch.equal(y.detach(), again)  # reproducible under the seed
    torch.manual_seed(4)
    assert not torch.equal(dropout(x.detach(), 0.25, True), again)  # and varies with it
    kept = y.detach() != 0
    assert 0.6 < kept.float().mean().item() < 0.9
    s = KEEP_LEVELS / (KEEP_LEVELS - round(0.25 * KEEP_LEVELS))
    torch.testing.assert_close(y.detach()[kept], x.detach()[kept] * s)
    y.sum().backward()  # the backward pass recomputes the same mask from the seed
    torch.testing.assert_close(x.grad, kept.float() * s)
    assert dropout(x, 0.25, False) is x  # eval: identity


def test_training_attention_dropout_uses_the_explicit_path():
    """CPU training with attention dropout runs the explicit kernel (the fused one has no
    dropout on CPU); without dropout it equals the fused kernel."""
    from bgpt.model import CausalSelfAttention

    torch.manual_seed(0)
    attn = CausalSelfAttention(32, 2, dropout=0.5).train()
    x = torch.randn(2, 40, 32)
    torch.manual_seed(1)
    a = attn(x)
    torch.manual_seed(1)
    assert torch.equal(attn(x), a)
    attn.dropout = 0.0
    assert not torch.allclose(attn(x), a)
    attn.eval()
    torch.testing.assert_close(attn(x), attn.train()(x))


def test_short_attention_matches_fused_kernel():
    from bgpt.ops import explicit_causal_attention

    q, k, v = (torch.randn(3, 2, 16, 8) for _ in range(3))
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(
        explicit_causal_attention(q, k, v, 0.0, False), fused, atol=1e-6, rtol=1e-5
    )


def test_bf16_autocast_close_to_fp32(tiny_config):
    model = BGPT(tiny_config).eval()
    batch = random_batch(tiny_config)
    with torch.no_grad():
        exact = model(batch.patches, batch.mask).loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model(batch.patches, batch.mask).loss
    assert abs(exact - fast) < 0.02


def test_byte_context_reads_the_previous_patch(tiny_config):
    """With byte_context the byte-level decoder sees the previous patch's bytes themselves: with
    the patch feature held fixed, changing them changes the next patch's predictions; without
    it (the paper's model) they reach the byte level only through the feature."""
    s = tiny_config.patch_size
    feats = torch.randn(1, tiny_config.hidden_size)
    target = torch.randint(0, 256, (1, s))
    prev = torch.randint(0, 256, (1, s))
    other = prev.clone()
    other[0, 1] = (other[0, 1] + 1) % 256
    for on in (False, True):
        torch.manual_seed(0)
        model = BGPT(tiny_config.replace(byte_context=on)).eval()
        with torch.no_grad():
            a = model.byte_decoder(feats, target, prev)
            b = model.byte_decoder(feats, target, other)
        assert torch.equal(a, b) != on
    assert model.byte_decoder.transformer.wpe.weight.shape[0] == 2 * s + 1
    with pytest.raises(ValueError, match="byte_context"):
        model.byte_decoder(feats, target)
    with pytest.raises(CheckpointError, match="byte_context"):
        to_reference_state_dict(model)


def test_sinusoidal_patch_positions_make_4p_a_rotation_of_p():
    """patch_positions="sinusoidal": the features of position 4p at frequency index k are those of
    position p at index k - 4 (the frequencies are pi * 2^(-k/2)), so "the patch a quarter of the
    way" is one linear map; the paper's learned init is unchanged by default."""
    from bgpt.model import sinusoidal_positions_

    wpe = torch.empty(200, 64)
    sinusoidal_positions_(wpe)
    sin = wpe[:, 0::2]
    for p in (1, 7, 33):
        torch.testing.assert_close(sin[4 * p, 4:20], sin[p, 0:16], atol=1e-6, rtol=0)
    model = BGPT(
        BGPTConfig(
            patch_size=4,
            max_patches=8,
            hidden_size=32,
            patch_layers=1,
            byte_layers=1,
            patch_positions="sinusoidal",
        )
    )
    assert float(model.patch_decoder.transformer.wpe.weight.abs().max()) == pytest.approx(0.1)
    with pytest.raises(BGPTError, match="patch_positions"):
        BGPTConfig(patch_positions="rope")
