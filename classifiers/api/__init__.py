"""The guard's HTTP API: /api/v1/classify, OpenAI-compatible /v1/..., OpenAPI.

Bearer-token authenticated (classifiers.models.ApiToken), exempt from the session
login and CSRF checks the web pages use.
"""
