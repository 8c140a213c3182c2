"""trust_remote_code support: the self-contained modeling file of `moelab` checkpoints."""
