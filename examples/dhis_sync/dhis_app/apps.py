from django.apps import AppConfig


class DhisAppConfig(AppConfig):
    name = "dhis_app"
