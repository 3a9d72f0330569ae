import dataclasses
import inspect

import pytest
import torch

from fusion.config import ABLATIONS, PRESETS, FusionConfig, apply_ablations
from fusion.model import FusionModel, ModelDims, build_model
from text.vocabulary import CLS, MASK, PAD

DIMS = ModelDims(video_tokens=6, video_dim=12, audio_tokens=5, audio_dim=10, num_classes=7, embedding_dim=9,
                 vocab_size=15, max_text_tokens=4)
TINY = FusionConfig(width=16, num_blocks=2, num_heads=2, num_fusion_tokens=3, dropout=0.1)


def _inputs(b=4, v=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(b, v, DIMS.video_tokens, DIMS.video_dim, generator=g)
    audio = torch.randn(b, DIMS.audio_tokens, DIMS.audio_dim, generator=g)
    has_audio = torch.tensor([True, False, True, False])[:b]
    return video, audio, has_audio


def _text(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, DIMS.vocab_size, (b, DIMS.max_text_tokens), generator=g)
    ids[:, 0] = CLS
    ids[0, -1] = PAD
    ids[1, 1] = MASK
    return ids


def _model(config=TINY, seed=0) -> FusionModel:
    torch.manual_seed(seed)
    return build_model(config, DIMS).eval()


CONFIGS = {"tiny": TINY, **{name: apply_ablations(TINY, [name]) for name in ABLATIONS}}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shapes_of_every_forward(name):
    config = CONFIGS[name]
    model = _model(config)
    video, audio, has_audio = _inputs()
    out = model(video[:, 0], audio, has_audio, _text() if config.use_text else None)
    assert out.embedding.shape == (4, DIMS.embedding_dim) and out.task_logits.shape == (4, DIMS.num_classes)
    assert (out.mlm_logits is None) != config.use_text
    if config.use_text:
        assert out.mlm_logits.shape == (4, DIMS.max_text_tokens, DIMS.vocab_size)
    av = model.forward_av(video[:, 0], audio, has_audio)
    assert av.embedding.shape == (4, DIMS.embedding_dim) and av.task_logits.shape == (4, DIMS.num_classes)
    views = model.forward_views(video, audio, has_audio)
    assert views.embedding.shape == (4, DIMS.embedding_dim) and views.task_logits.shape == (4, DIMS.num_classes)
    assert torch.isfinite(views.embedding).all()


def test_presets_build_with_their_sizes():
    default = build_model(PRESETS["default"], DIMS)
    demo = build_model(PRESETS["demo"], DIMS)
    assert default.fusion_tokens.shape == (1, 4, 512) and len(default.av_layers) == 4
    assert demo.fusion_tokens.shape[2] == 128 and len(demo.av_layers) == 2
    assert sum(p.numel() for p in demo.parameters()) < sum(p.numel() for p in default.parameters()) / 10


def test_fusion_tokens_start_near_n_0_002():
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(TINY, width=64, num_heads=4, num_fusion_tokens=64), DIMS)
    assert abs(model.fusion_tokens.std().item() - 0.02) < 0.002 and abs(model.fusion_tokens.mean().item()) < 0.002


@pytest.mark.parametrize("name", ["tiny", "concat", "audio-only"])
def test_missing_audio_is_masked(name):
    model = _model(CONFIGS[name])
    video, audio, has_audio = _inputs()
    junk = audio.clone()
    junk[~has_audio] = torch.randn_like(junk[~has_audio]) * 100  # what the "absent" audio tokens hold
    a = model.forward_av(video[:, 0], audio, has_audio)
    b = model.forward_av(video[:, 0], junk, has_audio)
    assert torch.equal(a.embedding[~has_audio], b.embedding[~has_audio])
    assert torch.equal(a.task_logits[~has_audio], b.task_logits[~has_audio])
    # The same junk on clips that do have audio changes their output: the mask is what protects the others.
    c = model.forward_av(video[:, 0], junk, torch.ones(4, dtype=torch.bool))
    assert not torch.allclose(a.embedding[~has_audio], c.embedding[~has_audio])


def test_single_modality_ablations_ignore_the_other_modality():
    video, audio, has_audio = _inputs()
    audio_only, video_only = _model(CONFIGS["audio-only"]), _model(CONFIGS["video-only"])
    assert torch.equal(audio_only.forward_av(video[:, 0], audio, has_audio).embedding,
                       audio_only.forward_av(video[:, 1] * 5, audio, has_audio).embedding)
    assert torch.equal(video_only.forward_av(video[:, 0], audio, has_audio).embedding,
                       video_only.forward_av(video[:, 0], audio * 5, ~has_audio).embedding)
    assert not torch.equal(video_only.forward_av(video[:, 0], audio, has_audio).embedding,
                           video_only.forward_av(video[:, 1], audio, has_audio).embedding)


def test_no_label_leakage_inference_has_no_text_and_training_outputs_ignore_text():
    for method in (FusionModel.forward_av, FusionModel.forward_views):
        assert list(inspect.signature(method).parameters) == ["self", "video_tokens", "audio_tokens", "has_audio"]
    model = _model()
    video, audio, has_audio = _inputs()
    reference = model.forward_views(video, audio, has_audio)
    outputs = [model(video[:, 0], audio, has_audio, text) for text in (_text(seed=1), _text(seed=2), None)]
    for out in outputs:
        assert torch.equal(out.embedding, outputs[0].embedding) and torch.equal(out.task_logits, outputs[0].task_logits)
        assert torch.equal(out.embedding, model.forward_av(video[:, 0], audio, has_audio).embedding)
    assert not torch.allclose(outputs[0].mlm_logits, outputs[1].mlm_logits)  # the text pass does see the text
    assert torch.equal(model.forward_views(video, audio, has_audio).embedding, reference.embedding)


def test_se_and_task_gradients_never_reach_the_text_stream():
    model = _model().train()
    video, audio, has_audio = _inputs()
    out = model(video[:, 0], audio, has_audio, _text())
    (out.embedding.sum() + out.task_logits.sum()).backward()
    assert model.word_embedding.weight.grad is None
    assert all(p.grad is None for p in model.text_layers.parameters())
    assert model.fusion_tokens.grad is not None
    model.zero_grad(set_to_none=True)
    out = model(video[:, 0], audio, has_audio, _text())
    out.mlm_logits.sum().backward()  # the MLM loss does train the shared AV layers through the fusion tokens
    assert model.word_embedding.weight.grad is not None and model.av_layers[0].mlp[0].weight.grad is not None


def test_view_ensemble_is_the_mean_over_views_and_mean_mode_averages_tokens():
    video, audio, has_audio = _inputs()
    model = _model()
    per_view = torch.stack([model.forward_av(video[:, v], audio, has_audio).embedding for v in range(3)], dim=1)
    assert torch.allclose(model.forward_views(video, audio, has_audio).embedding, per_view.mean(1), atol=1e-5)
    mean_model = _model(dataclasses.replace(TINY, view_mode="mean"))
    assert torch.allclose(mean_model.forward_views(video, audio, has_audio).embedding,
                          mean_model.forward_av(video.mean(1), audio, has_audio).embedding, atol=1e-6)


def test_bad_inputs_raise():
    model = _model()
    video, audio, has_audio = _inputs()
    with pytest.raises(ValueError, match="video_tokens must be"):
        model.forward_av(video[:, 0, :, :5], audio, has_audio)
    with pytest.raises(ValueError, match="B, V, Nv, Dv"):
        model.forward_views(video[:, 0], audio, has_audio)
    with pytest.raises(ValueError, match="no text stream"):
        _model(CONFIGS["no-text"])(video[:, 0], audio, has_audio, _text())
    with pytest.raises(ValueError, match="positions"):
        model(video[:, 0], audio, has_audio, torch.zeros(4, DIMS.max_text_tokens + 1, dtype=torch.int64))


@pytest.mark.parametrize("overrides, message", [
    ({"width": 30, "num_heads": 4}, "divide"),
    ({"fusion_mode": "late"}, "fusion_mode"),
    ({"use_text": False}, "mlm_weights must all be 0"),
    ({"fusion_mode": "concat"}, "concat"),
    ({"se_weights": (0.1, 0.2)}, "se_weights needs 1 value"),
    ({"weight_milestones_epochs": (40, 20)}, "increasing"),
    ({"mlm_mask_probability": 0.0}, "mlm_mask_probability"),
    ({"fusion_order": "interleaved"}, "fusion_order"),
    ({"se_weights": (0.0,)}, "SE head is untrained"),
    ({"zero_shot_embedding": "conse"}, "se_target='class'"),
    ({"zero_shot_embedding": "conse", "se_target": "class", "conse_top_t": 0}, "conse_top_t"),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        FusionConfig(**overrides)


def test_config_round_trip_and_decision_rule():
    config = apply_ablations(FusionConfig(), ["no-se", "normalised"])
    assert FusionConfig.from_dict(config.to_dict()) == config
    assert config.decision_rule == "plain" and FusionConfig().decision_rule == "kinetics"
    with pytest.raises(ValueError, match="unknown ablation"):
        apply_ablations(config, ["no-audio"])


def _naive_word_logits(model, video, audio, has_audio, text):
    """The text pass as the MBT description reads (or eq. 2, sequential): every block recomputes its AV+F layer."""
    k, length = model.config.num_fusion_tokens, text.shape[1]
    x, keep = model._av_sequence(video, audio, has_audio)
    t = model.word_embedding(text) + model.text_position[:, :length]
    text_keep = torch.cat([text != PAD, torch.ones(text.shape[0], k, dtype=torch.bool)], dim=1)
    for av_layer, text_layer in zip(model.av_layers, model.text_layers, strict=True):
        fusion_in = x[:, -k:]
        x = av_layer(x, keep)
        if model.config.fusion_order == "sequential":
            fusion_in = x[:, -k:]  # the fusion tokens after this block's AV+F update
        t_out = text_layer(torch.cat([t, fusion_in], dim=1), text_keep)
        x = torch.cat([x[:, :-k], (x[:, -k:] + t_out[:, length:]) / 2], dim=1)
        t = t_out[:, :length]
    return model.mlm_head(model.text_norm(t))


@pytest.mark.parametrize("order", ["parallel", "sequential"])
@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_shared_first_block_and_skipped_last_block_are_exact(blocks, order):
    model = _model(dataclasses.replace(TINY, num_blocks=blocks, fusion_order=order))
    video, audio, has_audio = _inputs()
    text = _text()
    expected = _naive_word_logits(model, video[:, 0], audio, has_audio, text)
    assert torch.allclose(model(video[:, 0], audio, has_audio, text).mlm_logits, expected, atol=1e-5)


def test_the_two_fusion_orders_differ_only_in_the_text_pass():
    video, audio, has_audio = _inputs()
    text = _text()
    parallel, sequential = _model(), _model(dataclasses.replace(TINY, fusion_order="sequential"))
    a, b = parallel(video[:, 0], audio, has_audio, text), sequential(video[:, 0], audio, has_audio, text)
    assert torch.equal(a.embedding, b.embedding)  # same weights, same AV-only pass
    assert not torch.allclose(a.mlm_logits, b.mlm_logits)
