"""API tokens: create (the raw token is shown once), list and revoke your own.

Any user with a role may hold tokens; users without one get 403. Tokens are
stored as SHA-256 hashes only (ApiToken.issue), so a lost token cannot be shown
again: revoke it and create another. Other users' tokens are 404 here.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from classifiers.models import ApiToken, GuardMode
from constitutions.models import Constitution
from guardweb.roles import POLICY_AUTHOR, has_role, require_role


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What the token is for, e.g. “CI smoke test”."
    )
    constitution = forms.ModelChoiceField(
        queryset=Constitution.objects.order_by("name"), required=False,
        empty_label="— none: requests must name one —",
        help_text="Used when a request names no constitution (or model).",
    )  # fmt: skip
    mode = forms.ChoiceField(
        choices=[("", "The constitution's mode"), *GuardMode.choices], required=False,
        help_text="Overrides the constitution's mode for requests with this token "
        "(shadow and off: policy authors only).",
    )  # fmt: skip

    def __init__(self, *args: object, user: object = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.user = user

    def clean_mode(self) -> str:

        mode = self.cleaned_data["mode"]
        if mode in ("shadow", "off") and not has_role(self.user, POLICY_AUTHOR):
            raise forms.ValidationError(
                "Only policy authors may create shadow or off tokens (their replies "
                "are not guarded)."
            )
        return mode


def _own_token(request: HttpRequest, pk: int) -> ApiToken:
    require_role(request)
    return get_object_or_404(ApiToken, pk=pk, user=request.user)


def _page(request: HttpRequest, form: TokenForm, *, raw: str | None = None,
          new: ApiToken | None = None, status: int = 200) -> HttpResponse:  # fmt: skip
    tokens = ApiToken.objects.filter(user=request.user).select_related("constitution")
    return render(
        request, "classifiers/tokens/list.html",
        {"tokens": tokens, "form": form, "raw_token": raw, "new_token": new},
        status=status,
    )  # fmt: skip


@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    require_role(request)
    if request.method == "POST":
        form = TokenForm(request.POST, user=request.user)
        if not form.is_valid():
            return _page(request, form, status=400)
        token, raw = ApiToken.issue(
            user=request.user, name=form.cleaned_data["name"],
            constitution=form.cleaned_data["constitution"], mode=form.cleaned_data["mode"],
        )  # fmt: skip
        # Rendered, not redirected: the raw token exists only in this response.
        response = _page(request, TokenForm(user=request.user), raw=raw, new=token)
        response["Cache-Control"] = "no-store"
        return response
    return _page(request, TokenForm(user=request.user))


@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = _own_token(request, pk)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        messages.success(
            request, f"Revoked “{token.name}”; requests with it now get 401."
        )
    return redirect("classifiers:tokens")


urlpatterns = [
    path("tokens/", token_list, name="tokens"),
    path("tokens/<int:pk>/revoke/", token_revoke, name="token-revoke"),
]
