"""SparseBERT reproduction: sparse and learned (DAM) attention masks for BERT (Shi et al., ICML 2021)."""

__version__ = "0.1.0"
