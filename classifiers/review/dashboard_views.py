"""The dashboard page."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET

from classifiers.models import Decision
from classifiers.review.dashboard import RANGES, dashboard_stats, live_counters
from constitutions.models import Constitution
from guardweb.htmx import htmx_partial
from guardweb.roles import require_role

EARLIEST = date(2000, 1, 1)
LATEST = date(2999, 12, 31)


class DashboardFilter(forms.Form):
    range = forms.ChoiceField(
        choices=[("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days"),
                 ("custom", "Custom")],  # fmt: skip
        required=False,
        initial="7d",
    )
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    constitution = forms.ModelChoiceField(queryset=None, required=False, empty_label="All")

    def __init__(self, *args: Any, **kwargs: Any) -> None:

        super().__init__(*args, **kwargs)
        self.fields["constitution"].queryset = Constitution.objects.order_by("name")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        for day in (since, until):
            # date.max + 1 day overflowed: dates far outside any traffic are refused.
            if day and not EARLIEST <= day <= LATEST:
                raise forms.ValidationError(
                    f"choose dates between {EARLIEST.isoformat()} and {LATEST.isoformat()}"
                )
        if since and until and since > until:
            raise forms.ValidationError("the start date is after the end date")
        if since and until and (until - since).days > 366:
            raise forms.ValidationError("choose a range of at most a year")
        return data

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}
        since: date | None = data.get("since")
        until: date | None = data.get("until")
        if since or until or data.get("range") == "custom":
            tz = timezone.get_current_timezone()
            end = (
                datetime.combine(until + timedelta(days=1), time.min, tz) if until else now
            )
            start = (
                datetime.combine(since, time.min, tz) if since else end - RANGES["7d"]
            )
            return start, end
        return now - RANGES.get(data.get("range") or "7d", RANGES["7d"]), now


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    require_role(request)
    if request.GET.get("live"):
        return render(
            request, "classifiers/dashboard/_live.html", {"live": live_counters()}
        )
    form = DashboardFilter(request.GET or None)
    status = 200
    if form.is_bound and not form.is_valid():
        status = 400
    start, end = form.window(timezone.now())
    constitution = form.cleaned_data.get("constitution") if form.is_bound and form.is_valid() else None
    context = {
        "form": form,
        "stats": dashboard_stats(start, end, constitution),
        "live": live_counters(),
        "decision_choices": Decision.choices,
    }
    template = "classifiers/dashboard/dashboard.html"
    if htmx_partial(request):
        template += "#body"
    return render(request, template, context, status=status)


urlpatterns = [path("dashboard/", dashboard, name="dashboard")]
