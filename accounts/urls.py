from django.urls import path
from rest_framework.routers import SimpleRouter

from .apis import (
    ApiTokenViewSet,
    CompanySignupApi,
    EngineerProfileApi,
    EngineerSignupApi,
    MeApi,
    MemberViewSet,
    OrganizationViewSet,
)

router = SimpleRouter()
router.register("tokens", ApiTokenViewSet, basename="token")
router.register("organizations", OrganizationViewSet, basename="organization")
router.register(r"organizations/(?P<organization_pk>\d+)/members", MemberViewSet, basename="member")

urlpatterns = [
    path("auth/signup/company/", CompanySignupApi.as_view(), name="signup-company"),
    path("auth/signup/engineer/", EngineerSignupApi.as_view(), name="signup-engineer"),
    path("me", MeApi.as_view(), name="me"),
    path("engineers/<int:user_id>/", EngineerProfileApi.as_view(), name="engineer-profile"),
    *router.urls,
]
