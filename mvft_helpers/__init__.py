"""mvft_helpers: the logic behind the MVFT-JI tutorial notebooks (zero-shot composed image
retrieval with MLLM-guided VLM fine-tuning and joint inference)."""
__version__ = "0.1.0"
