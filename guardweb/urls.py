"""Every page (HTTP) and websocket route of the site, each app's listed explicitly."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path

from classifiers import urls as classifier_urls
from classifiers.api import urls as api_urls
from classifiers.guard.metrics import metrics_view
from classifiers.routing import websocket_urlpatterns as classifier_websockets
from constitutions import urls as constitution_urls
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
    path("constitutions/", include(constitution_urls)),
    path("classifiers/", include(classifier_urls)),
    path("", include(api_urls)),
]

websocket_urlpatterns = [*classifier_websockets]
