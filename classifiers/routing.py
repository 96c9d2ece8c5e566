"""Every websocket route of the classifiers app."""

from __future__ import annotations

from django.urls import path

from classifiers.core.consumers import JobProgressConsumer
from classifiers.playground.consumers import PlaygroundConsumer
from classifiers.review.consumers import DashboardConsumer

websocket_urlpatterns = [
    path("ws/jobs/<str:kind>/<int:pk>/", JobProgressConsumer.as_asgi()),
    path("ws/playground/", PlaygroundConsumer.as_asgi()),
    path("ws/dashboard/", DashboardConsumer.as_asgi()),
]
