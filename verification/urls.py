from django.urls import path

from .apis import SigningKeyListApi

urlpatterns = [path("keys/", SigningKeyListApi.as_view(), name="verification-keys")]
