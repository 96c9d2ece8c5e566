from django.urls import path

from classifiers import consumers

websocket_urlpatterns = [
    path("ws/jobs/<str:kind>/<int:pk>/", consumers.JobProgressConsumer.as_asgi()),
    path("ws/playground/", consumers.PlaygroundConsumer.as_asgi()),
    path("ws/dashboard/", consumers.DashboardConsumer.as_asgi()),
]
