"""Every page of the classifiers app, under one namespace: each domain's views
module declares its `urlpatterns`, listed here explicitly."""

from __future__ import annotations

from classifiers.api import tokens
from classifiers.audit import views as audit_views
from classifiers.core import views as core_views
from classifiers.datasets import traffic_views
from classifiers.datasets import views as dataset_views
from classifiers.evaluation import views as evaluation_views
from classifiers.guard import upstream_views
from classifiers.guard import views as guard_views
from classifiers.playground import views as playground_views
from classifiers.review import dashboard_views, shadow_views
from classifiers.review import views as review_views
from classifiers.training import views as training_views

app_name = "classifiers"
urlpatterns = [
    *core_views.urlpatterns,
    *dataset_views.urlpatterns,
    *traffic_views.urlpatterns,
    *audit_views.urlpatterns,
    *training_views.urlpatterns,
    *evaluation_views.urlpatterns,
    *playground_views.urlpatterns,
    *guard_views.urlpatterns,
    *upstream_views.urlpatterns,
    *tokens.urlpatterns,
    *review_views.urlpatterns,
    *shadow_views.urlpatterns,
    *dashboard_views.urlpatterns,
]
