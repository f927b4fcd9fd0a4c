from rest_framework.pagination import PageNumberPagination


class StablePageNumberPagination(PageNumberPagination):
    """Page-number pagination; views order by a unique key last so pages never overlap or skip."""

    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 100
