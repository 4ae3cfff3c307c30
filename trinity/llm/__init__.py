"""Talking to language models: request types, provider adapters and the async client."""
