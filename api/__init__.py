"""The HTTP tier: OpenAI-compatible routes that validate, record, publish and answer."""
