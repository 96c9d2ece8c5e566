from django.urls import path

from classifiers import views

app_name = "classifiers"
urlpatterns: list = [
    path("", views.overview, name="overview"),
]
