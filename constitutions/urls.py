from __future__ import annotations

from django.urls import path

from constitutions import version_views, views

app_name = "constitutions"
urlpatterns = [
    path("", views.constitution_list, name="list"),
    path("import/", version_views.import_view, name="import"),
    path("<slug:slug>/", views.constitution_detail, name="detail"),
    path("<slug:slug>/header/", views.header_save, name="header"),
    path("<slug:slug>/categories/add/", views.category_add, name="category_add"),
    path("<slug:slug>/categories/validate/", views.category_validate, name="validate"),
    path("<slug:slug>/categories/<int:pk>/", views.category_detail, name="category"),
    path(
        "<slug:slug>/categories/<int:pk>/edit/",
        views.category_edit,
        name="category_edit",
    ),
    path(
        "<slug:slug>/categories/<int:pk>/autosave/",
        views.category_autosave,
        name="category_autosave",
    ),
    path(
        "<slug:slug>/categories/<int:pk>/move/",
        views.category_move,
        name="category_move",
    ),
    path(
        "<slug:slug>/categories/<int:pk>/delete/",
        views.category_delete,
        name="category_delete",
    ),
    path("<slug:slug>/publish/", version_views.publish, name="publish"),
    path("<slug:slug>/history/", version_views.history, name="history"),
    path("<slug:slug>/versions/<int:number>/", version_views.version_detail, name="version"),
    path("<slug:slug>/diff/", version_views.diff, name="diff"),
    path("<slug:slug>/audit/", version_views.audit, name="audit"),
    path("<slug:slug>/export/", version_views.export, name="export"),
]
