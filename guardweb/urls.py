from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path

from classifiers.guard.metrics import metrics_view
from guardweb import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path(
        "accounts/login/",
        login_not_required(auth_views.LoginView.as_view()),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("constitutions/", include("constitutions.urls")),
    path("classifiers/", include("classifiers.urls")),
    path("", include("classifiers.api.urls")),
]

websocket_urlpatterns: list = []
try:  # each app contributes its websocket routes
    from classifiers.routing import websocket_urlpatterns as classifier_ws

    websocket_urlpatterns += classifier_ws
except ImportError:
    pass
