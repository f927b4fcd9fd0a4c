from django.urls import path

from common.routers import IdRouter

from .apis import (
    ApiTokenViewSet,
    CompanySignupApi,
    EngineerProfileApi,
    EngineerSignupApi,
    InviteAcceptApi,
    InviteViewSet,
    MeApi,
    MemberViewSet,
    OrganizationViewSet,
)

router = IdRouter()
router.register("tokens", ApiTokenViewSet, basename="token")
router.register("organizations", OrganizationViewSet, basename="organization")
router.register("organizations/<id:organization_pk>/members", MemberViewSet, basename="member")
router.register("organizations/<id:organization_pk>/invites", InviteViewSet, basename="invite")

urlpatterns = [
    path("auth/signup/company/", CompanySignupApi.as_view(), name="signup-company"),
    path("auth/signup/engineer/", EngineerSignupApi.as_view(), name="signup-engineer"),
    path("me", MeApi.as_view(), name="me"),
    path("invites/accept/", InviteAcceptApi.as_view(), name="invite-accept"),
    path("engineers/<id:user_id>/", EngineerProfileApi.as_view(), name="engineer-profile"),
    *router.urls,
]
