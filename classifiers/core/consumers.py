"""The progress websocket shared by every job kind: /ws/jobs/<kind>/<pk>/."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from classifiers.models import (
    CascadeCalibration,
    Dataset,
    EvaluationRun,
    LabelAudit,
    TrainingRun,
)
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

        if not user_roles(user):
            return None
        model = {
            "dataset": Dataset, "training": TrainingRun, "cascade": CascadeCalibration,
            "audit": LabelAudit, "evaluation": EvaluationRun,
        }.get(kind)  # fmt: skip
        return model.objects.filter(pk=pk).first() if model else None

    @database_sync_to_async
    def _render(self, job: Any) -> str:
        return render_to_string("classifiers/_job_progress.html", {"job": job, "oob": True})
