from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from constitutions.models import Constitution
from guardweb import health
from guardweb.roles import user_roles


@require_GET
def home(request: HttpRequest) -> HttpResponse:

    # Users without a role see the welcome only: the names are not theirs to read.
    constitutions = Constitution.objects.order_by("name") if user_roles(request.user) else []
    return render(
        request,
        "home.html",
        {"constitutions": constitutions, "has_role": bool(user_roles(request.user))},
    )


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks = {
        "postgres": health.check_postgres(),
        "redis": health.check_redis(settings.REDIS_URL),
    }
    # Without a broker there is nobody to ask about workers.
    if checks["redis"]["ok"]:
        checks["celery"] = health.check_celery()
    else:
        checks["celery"] = {"ok": False, "error": "redis is down", "queues": {}}
    ok = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ok" if ok else "down", **checks}, status=200 if ok else 503)
