"""Websocket consumers: thin, auth-checked, one group per object."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from guardweb.roles import user_roles


class JobProgressConsumer(AsyncWebsocketConsumer):
    """Live progress of a dataset build or a training run, as HTML fragments."""

    async def connect(self) -> None:
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=4401)
            return
        kind = self.scope["url_route"]["kwargs"]["kind"]
        pk = self.scope["url_route"]["kwargs"]["pk"]
        job = await self._load(user, kind, pk)
        if job is None:
            await self.close(code=4403)
            return
        self.group_name = job.group_name
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()
        # The current state at once: the page may have been rendered a while ago.
        await self.send(text_data=await self._render(job))

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group_name"):
            await self.channel_layer.group_discard(self.group_name, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Clients only listen here; anything they send is ignored."""

    async def job_progress(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["html"])

    @database_sync_to_async
    def _load(self, user: Any, kind: str, pk: int) -> Any:
        from classifiers.models import (
            CascadeCalibration,
            Dataset,
            LabelAudit,
            TrainingRun,
        )

        if not user_roles(user):
            return None
        model = {
            "dataset": Dataset, "training": TrainingRun, "cascade": CascadeCalibration,
            "audit": LabelAudit,
        }.get(kind)  # fmt: skip
        return model.objects.filter(pk=pk).first() if model else None

    @database_sync_to_async
    def _render(self, job: Any) -> str:
        return render_to_string("classifiers/_job_progress.html", {"job": job, "oob": True})


class PlaygroundConsumer(AsyncWebsocketConsumer):
    """Chat with the guard: JSON in, JSON events out (tokens with their scores)."""

    async def connect(self) -> None:
        user = self.scope["user"]
        if not user.is_authenticated or not await database_sync_to_async(user_roles)(user):
            await self.close(code=4403)
            return
        from classifiers.playground import PlaygroundSession

        self.session = PlaygroundSession(user, self.send_json)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "session"):
            self.session.stop(disconnected=True)  # a dropped socket stops its reply

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        import json

        try:
            data = json.loads(text_data or "")
            if not isinstance(data, dict):
                raise ValueError
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            await self.send_json({"type": "error", "message": "send a JSON object"})
            return
        kind = data.get("type")
        if kind == "chat":
            await self.session.chat(data)
        elif kind == "stop":
            self.session.stop()
        elif kind == "resume":
            await self.session.resume(data)
        else:
            await self.send_json({"type": "error", "message": f"unknown message type {kind!r}"})

    async def send_json(self, payload: dict[str, Any]) -> None:
        import json

        await self.send(text_data=json.dumps(payload))


class DashboardConsumer(AsyncWebsocketConsumer):
    """Live dashboard counters: the `_live.html` fragment (oob) on connect and on
    every (throttled) push from recorded turns and review decisions."""

    group_name = "dashboard"

    async def connect(self) -> None:
        user = self.scope["user"]
        if not user.is_authenticated or not await database_sync_to_async(user_roles)(user):
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()
        await self.send(text_data=await self._render())

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group_name, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Clients only listen here; anything they send is ignored."""

    async def dashboard_update(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["html"])

    @database_sync_to_async
    def _render(self) -> str:
        from classifiers.views.dashboard import live_counters

        return render_to_string(
            "classifiers/dashboard/_live.html", {"live": live_counters(), "oob": True}
        )
