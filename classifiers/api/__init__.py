"""The guard's HTTP API: /api/v1/classify, OpenAI-compatible /v1/..., OpenAPI, and
the pages where users manage their API tokens (tokens).

Bearer-token authenticated (classifiers.models.ApiToken), exempt from the session
login and CSRF checks the web pages use.
"""
