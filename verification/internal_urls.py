from django.urls import path

from common import converters  # noqa: F401 - registers the converters the routes name

from . import internal_api

urlpatterns = [
    path("runs/<id:run_id>/start/", internal_api.RunStartApi.as_view()),
    path("runs/<id:run_id>/artifacts/<str:name>/", internal_api.RunArtifactApi.as_view()),
    path("runs/<id:run_id>/heartbeat/", internal_api.RunHeartbeatApi.as_view()),
    path("runs/<id:run_id>/result/", internal_api.RunResultApi.as_view()),
    path("runs/<id:run_id>/failure/", internal_api.RunFailureApi.as_view()),
]
