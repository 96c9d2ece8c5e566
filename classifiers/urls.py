"""Each area's views module declares its own `urlpatterns`; they share one namespace."""

from __future__ import annotations

import importlib

app_name = "classifiers"
urlpatterns: list = []
for area in ("overview", "datasets", "audit", "training", "guard", "tokens", "review", "dashboard"):
    try:
        module = importlib.import_module(f"classifiers.views.{area}")
    except ModuleNotFoundError as exc:
        if exc.name != f"classifiers.views.{area}":
            raise
        continue
    urlpatterns += module.urlpatterns
