"""MoE Lab engine: upcycle dense Llama-family models into Mixture-of-Experts and train them."""

__version__ = "0.1.0"


def load_model(path, **kwargs):  # noqa: ANN001, ANN201 - re-exported, typed in moelab.io.checkpoint
    """Load any checkpoint MoE Lab reads or writes (HF Llama/Mistral/Qwen2, Mixtral, moelab)."""
    from moelab.io.checkpoint import load_model as _load

    return _load(path, **kwargs)
