from django.urls import path

from dhis_app import views

urlpatterns = [
    path("status/", views.status),
    path("health/", views.health),
    path("sync/<int:config_id>/", views.trigger),
    path("result/<str:task_id>/", views.result),
]
