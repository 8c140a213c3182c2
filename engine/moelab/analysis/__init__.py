"""Weight-space analysis of MoE checkpoints: router norms and similarity, expert similarity,
drift across a run's checkpoints and from the dense parents, and tensor-by-tensor comparison.

Everything streams row chunks straight from the safetensors files (source.py), so memory is
bounded by a chunk budget, not by the model. The JSON written is documented in report.py.
"""

from moelab.analysis.compare import compare_checkpoints
from moelab.analysis.pipeline import AnalyzeOptions, analyze

__all__ = ["AnalyzeOptions", "analyze", "compare_checkpoints"]
