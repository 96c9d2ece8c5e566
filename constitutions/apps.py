from django.apps import AppConfig


class ConstitutionsConfig(AppConfig):
    name = "constitutions"
    default_auto_field = "django.db.models.BigAutoField"
