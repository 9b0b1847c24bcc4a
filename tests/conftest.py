import pytest
import torch

from bgpt.config import BGPTConfig
from bgpt.model import BGPT


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Tiny ops: one thread is fastest and immune to other jobs on the machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_config() -> BGPTConfig:
    """Tiny but complete: 2 heads, patch size 4, both decoders."""
    return BGPTConfig(
        patch_size=4, max_patches=16, hidden_size=128, patch_layers=2, byte_layers=2, dropout=0.0
    )


def random_bgpt(
    config: BGPTConfig, seed: int = 0, std: float = 0.3, matrices_only: bool = False
) -> BGPT:
    """A generative model with N(0, std) weights, in eval mode: GPT-2's initialisation gives
    near-uniform distributions; these are peaked and varied, as a trained model's are.
    `matrices_only` leaves biases, LayerNorms and vectors at their initial values."""
    torch.manual_seed(seed)
    model = BGPT(config.replace(dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 or not matrices_only:
                p.normal_(0, std)
    return model.eval()
