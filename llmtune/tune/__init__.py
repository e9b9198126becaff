"""``llmtune tune``: measure the knobs that matter on a host and keep the fastest configuration."""
