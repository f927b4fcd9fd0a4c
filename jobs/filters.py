import django_filters

from .models import Job


class JobFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Job.Status.choices)
    hardware_class = django_filters.CharFilter()
    currency = django_filters.CharFilter(lookup_expr="iexact")
    budget_at_least = django_filters.NumberFilter(
        field_name="budget_max", lookup_expr="gte", help_text="Jobs whose budget reaches at least this (minor units)."
    )
    budget_at_most = django_filters.NumberFilter(
        field_name="budget_min", lookup_expr="lte", help_text="Jobs whose budget starts at or below this (minor units)."
    )

    class Meta:
        model = Job
        fields = ["status", "hardware_class", "currency", "visibility"]
