from django.urls import path

from .apis import NotificationPreferencesApi

urlpatterns = [
    path("me/notification-preferences/", NotificationPreferencesApi.as_view(), name="notification-preferences"),
]
