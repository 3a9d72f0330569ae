"""The fused MViT-v2 attention kernels: equal to torchvision's forward within float32 rounding, torchvision's state
dict, device-side relative positions, bf16 within a stated tolerance on a GPU, and their settings."""

from dataclasses import replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.models.video import MViT
from torchvision.models.video.mvit import MSBlockConfig

from common.errors import InputError
from common.settings import affects_result
from extract import mvit
from extract.config import PROFILES, ExtractConfig
from extract.mvit_attention import FusedMultiscaleAttention
from extract.pipeline import ClipExtractor

TINY, PAPER = PROFILES["cpu-small"].video, PROFILES["paper"].video
FUSED = ("sdpa", "sdpa-mask", "flex")
# float32: a fused kernel sums in another order than torchvision's matmul + add + softmax + matmul.
FP32_TOLERANCE = 1e-5  # max |difference| / max |reference|
# bfloat16 (8-bit mantissa) against the float32 reference, random weights (measured on CPU: <= 1.9% and >= 0.9997).
BF16_TOLERANCE, BF16_MIN_COSINE = 0.05, 0.999

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def _torchvision_forward(model: MViT, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's own `MViT.forward` (its own attention), with the final norm's output captured."""
    captured = {}
    handle = model.norm.register_forward_hook(lambda module, args, output: captured.update(tokens=output))
    try:
        with torch.inference_mode():
            logits = model(video)
    finally:
        handle.remove()
    return captured["tokens"], logits


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, relative: float) -> None:
    worst = (actual.float() - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert worst <= relative * scale, f"max |difference| {worst:.3g} > {relative} x {scale:.3g}"


def _video(frames: int, size: int, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("config", [TINY, pytest.param(PAPER, marks=pytest.mark.slow)], ids=["mvit_tiny", "mvit_v2_s"])
def test_fused_kernels_give_torchvision_tokens_and_logits(config):
    reference, _ = mvit.build_mvit(config, None, random_init=True, seed=3)
    video = _video(16, config.crop_size_px, batch=2 if config is TINY else 1)
    expected_tokens, expected_logits = _torchvision_forward(reference.model, video)
    for kernel in FUSED:
        fused, _ = mvit.build_mvit(config, None, random_init=True, seed=3, attention=kernel)
        assert all(isinstance(block.attn, FusedMultiscaleAttention) for block in fused.model.blocks)
        with torch.inference_mode():
            tokens, logits = fused(video)
        assert tokens.shape == expected_tokens.shape and fused.grid == reference.grid == (8, 7, 7)
        _assert_close(tokens, expected_tokens, FP32_TOLERANCE)
        _assert_close(logits, expected_logits, FP32_TOLERANCE)


def _block(heads, width_in, width_out, stride_q, stride_kv):
    return MSBlockConfig(num_heads=heads, input_channels=width_in, output_channels=width_out, kernel_q=[3, 3, 3],
                         kernel_kv=[3, 3, 3], stride_q=list(stride_q), stride_kv=list(stride_kv))


# Settings the published models do not all use: no residual pooling, the residual over the CLS token too,
# no relative positions, and grids where the keys are finer than the queries (q pooled, k/v not) or coarser
# (k/v pooled harder), pooled in time, and a 10-patch side that stride 3 pools to 4 where torchvision sized the
# parameters for 10 // 3 = 3 (5 rows where 7 are needed: the tables are interpolated).
_VARIANTS = {
    "no-residual-pool": dict(residual_pool=False),
    "residual-with-cls": dict(residual_with_cls_embed=True),
    "no-rel-pos": dict(rel_pos_embed=False),
    "interpolated-tables": dict(spatial_px=40, blocks=[_block(2, 32, 64, (1, 3, 3), (1, 3, 3)),
                                                       _block(2, 64, 64, (1, 1, 1), (1, 2, 2))]),
}


@pytest.mark.parametrize("variant", sorted(_VARIANTS))
def test_fused_kernels_match_on_other_mvit_settings(variant):
    settings = dict(residual_pool=True, residual_with_cls_embed=False, rel_pos_embed=True, spatial_px=64,
                    blocks=[_block(1, 32, 64, (2, 2, 2), (1, 1, 1)), _block(2, 64, 64, (1, 1, 1), (2, 2, 2))])
    settings.update(_VARIANTS[variant])
    spatial_px, blocks = settings.pop("spatial_px"), settings.pop("blocks")

    def build() -> MViT:
        torch.manual_seed(11)
        return MViT(spatial_size=(spatial_px, spatial_px), temporal_size=8, block_setting=blocks,
                    proj_after_attn=True, num_classes=10, **settings).eval()

    video = _video(8, spatial_px, batch=2)
    expected_tokens, expected_logits = _torchvision_forward(build(), video)
    for kernel in FUSED:
        fused = mvit.MViTBackbone(build(), kernel).eval()
        with torch.inference_mode():
            tokens, logits = fused(video)
        _assert_close(tokens, expected_tokens, FP32_TOLERANCE)
        _assert_close(logits, expected_logits, FP32_TOLERANCE)
    first = fused.model.blocks[0].attn
    if variant == "interpolated-tables":
        assert first.rel_pos_h.shape[0] == 5 and first.q_thw == first.k_thw == (4, 4, 4)


def test_state_dict_is_torchvision_s_and_checkpoints_load_into_every_kernel(tmp_path):
    reference, _ = mvit.build_mvit(TINY, None, random_init=True, seed=5)
    fused, _ = mvit.build_mvit(TINY, None, random_init=True, seed=5, attention="sdpa")
    expected = reference.state_dict()
    assert list(fused.state_dict()) == list(expected)  # same keys, same order; no index buffers
    assert all(torch.equal(value, expected[key]) for key, value in fused.state_dict().items())
    assert any(name.endswith("index_t") for name, _ in fused.named_buffers())
    path = tmp_path / "tiny.pth"
    torch.save(fused.model.state_dict(), path)  # written by a fused backbone, read by torchvision's MViT
    plain = mvit._tiny(TINY).eval()
    plain.load_state_dict(torch.load(path, weights_only=True), strict=True)
    video = _video(16, 112)
    expected_tokens, _ = _torchvision_forward(plain, video)
    loaded, provenance = mvit.build_mvit(TINY, path, random_init=False, seed=0, attention="flex")
    with torch.inference_mode():
        _assert_close(loaded(video)[0], expected_tokens, FP32_TOLERANCE)
    assert provenance["sha256"] != "random-init"


class _CPUTensors(TorchDispatchMode):
    """Counts operations that make a tensor on the CPU while everything of the model lives elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outputs = out if isinstance(out, tuple | list) else [out]
        self.made += [str(func) for o in outputs if isinstance(o, torch.Tensor) and o.device.type == "cpu"]
        return out


@pytest.mark.parametrize("kernel", ["torchvision", "sdpa", "sdpa-mask"])  # flex has no meta-device kernel
def test_relative_positions_are_built_once_on_the_device(kernel):
    # On the meta device any tensor made on the CPU during a forward is a host tensor that a CUDA run would copy.
    backbone, _ = mvit.build_mvit(TINY, None, random_init=True, seed=0, attention=kernel)
    backbone = backbone.to("meta")
    with torch.inference_mode(), _CPUTensors() as recorder:
        tokens, _ = backbone(torch.empty(2, 3, 16, 112, 112, device="meta"))
    assert tokens.shape == (2, 393, 384)
    if kernel == "torchvision":
        assert "aten.arange.default" in recorder.made  # `_add_rel_pos` builds its indices per call
    else:
        assert recorder.made == []


def test_fused_attention_refuses_another_grid():
    backbone, _ = mvit.build_mvit(TINY, None, random_init=True, seed=0, attention="sdpa")
    attention = backbone.model.blocks[0].attn
    with pytest.raises(ValueError, match=r"built for a \(8, 28, 28\) token grid, got \(8, 14, 14\)"):
        attention(torch.zeros(1, 1 + 8 * 14 * 14, 48), (8, 14, 14))


def test_settings_are_validated_and_speed_only():
    with pytest.raises(InputError, match="attention must be one of"):
        ExtractConfig(attention="xformers")
    with pytest.raises(InputError, match="compile_mode must be one of"):
        ExtractConfig(compile_mode="fast")
    with pytest.raises(InputError, match="precision must be one of"):
        ExtractConfig(precision="fp16")
    assert PROFILES["paper"].attention == "sdpa" and PROFILES["cpu-small"].attention == "torchvision"
    config = replace(PROFILES["cpu-small"], precision="bf16-pure", attention="flex", compile_mode="max-autotune")
    assert ExtractConfig.from_dict(config.to_dict()) == config
    # a store may be resumed with another kernel or compile mode, not with another precision
    assert not affects_result(ExtractConfig, "attention") and not affects_result(ExtractConfig, "compile_mode")
    assert affects_result(ExtractConfig, "precision")


def test_extractor_runs_fused_and_pure_bf16_on_cpu(numbered_clip):
    clip = numbered_clip("clip.mp4", 40, 15.0, size=(64, 80))
    reference = ClipExtractor(PROFILES["cpu-small"]).extract(clip)
    fused_extractor = ClipExtractor(replace(PROFILES["cpu-small"], attention="sdpa"))
    assert isinstance(fused_extractor.video_backbone.model.blocks[0].attn, FusedMultiscaleAttention)
    fused = fused_extractor.extract(clip)
    _assert_close(torch.from_numpy(fused.video_tokens), torch.from_numpy(reference.video_tokens).float(), 2e-3)
    pure_extractor = ClipExtractor(replace(PROFILES["cpu-small"], precision="bf16-pure"))
    assert next(pure_extractor.video_backbone.parameters()).dtype == torch.bfloat16
    assert next(pure_extractor.audio_backbone.parameters()).dtype == torch.bfloat16
    pure = pure_extractor.extract(clip)
    assert pure.video_tokens.dtype == reference.video_tokens.dtype  # stored as float16 as before
    _assert_close(torch.from_numpy(pure.video_tokens), torch.from_numpy(reference.video_tokens).float(),
                  BF16_TOLERANCE)
    _assert_close(torch.from_numpy(pure.audio_tokens), torch.from_numpy(reference.audio_tokens).float(),
                  BF16_TOLERANCE)
    assert not (pure.video_tokens == reference.video_tokens).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kernel", ["torchvision", *FUSED])
def test_bf16_on_cuda_is_within_the_stated_tolerance_of_the_fp32_reference(kernel):
    device = torch.device("cuda")
    reference, _ = mvit.build_mvit(PAPER, None, random_init=True, seed=3)
    video = _video(16, 224, batch=2)
    expected_tokens, expected_logits = _torchvision_forward(reference.model.double(), video.double())
    backbone, _ = mvit.build_mvit(PAPER, None, random_init=True, seed=3, attention=kernel)
    backbone, on_device = backbone.to(device), video.to(device)
    with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        float32 = backbone(on_device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            autocast = backbone(on_device)
        backbone, on_device = backbone.to(torch.bfloat16), on_device.to(torch.bfloat16)
        # No host sync in a forward (flex is left out: its first call compiles, which may synchronise).
        torch.cuda.set_sync_debug_mode("error" if kernel in ("sdpa", "sdpa-mask") else "default")
        try:
            pure = backbone(on_device)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    _assert_close(float32[0].cpu(), expected_tokens.float(), 1e-4)  # TF32 off: float32 rounding
    for tokens, logits in (autocast, pure):
        tokens, logits = tokens.float().cpu(), logits.float().cpu()
        _assert_close(tokens, expected_tokens.float(), BF16_TOLERANCE)
        _assert_close(logits, expected_logits.float(), BF16_TOLERANCE)
        cosine = torch.nn.functional.cosine_similarity(tokens, expected_tokens.float(), dim=-1)
        assert cosine.min().item() >= BF16_MIN_COSINE
