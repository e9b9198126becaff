"""llmtune: provision, tune and verify Linux hosts that serve LLMs with llama.cpp's llama-server."""

__version__ = "0.1.0"
