from django.apps import AppConfig


class GuardwebConfig(AppConfig):
    name = "guardweb"
    verbose_name = "Guardweb"
