"""OpenAI Images dialect: /v1/images/* and /v1/models (reference §2)."""
