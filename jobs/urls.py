from common.routers import IdRouter

from .apis import BidViewSet, ContractViewSet, JobViewSet, SubmissionViewSet

router = IdRouter()
router.register("jobs", JobViewSet, basename="job")
router.register("bids", BidViewSet, basename="bid")
router.register("contracts", ContractViewSet, basename="contract")
router.register("submissions", SubmissionViewSet, basename="submission")
urlpatterns = router.urls
