"""Shared by every domain: the job runner and its progress websocket, the models
loaded once per process, and the overview page with the job progress responses."""
