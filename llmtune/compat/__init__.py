"""Narrow, documented fixes for behaviour of the libraries llmtune builds on."""
