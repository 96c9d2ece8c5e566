from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from constitutions.models import Constitution


@require_GET
def constitution_list(request: HttpRequest) -> HttpResponse:
    return render(
        request, "constitutions/list.html", {"constitutions": Constitution.objects.all()}
    )
