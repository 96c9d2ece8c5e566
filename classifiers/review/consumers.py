"""Live dashboard counters over a websocket: /ws/dashboard/."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from classifiers.review.dashboard import live_counters
from guardweb.roles import user_roles


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

        return render_to_string(
            "classifiers/dashboard/_live.html", {"live": live_counters(), "oob": True}
        )
