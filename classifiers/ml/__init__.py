"""Guardweb's ML core: plain Python + torch + transformers, never Django.

Everything here is importable and testable without Django settings; the Django
apps and Celery tasks are thin glue around these modules.
"""
