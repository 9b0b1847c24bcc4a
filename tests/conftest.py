import pytest
import torch

from bgpt.config import BGPTConfig


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_config() -> BGPTConfig:
    """Tiny but complete: 2 heads, patch size 4, both decoders."""
    return BGPTConfig(patch_size=4, max_patches=16, hidden_size=128, patch_layers=2, byte_layers=2, dropout=0.0)
