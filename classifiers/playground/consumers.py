"""The playground websocket: /ws/playground/."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from classifiers.playground.session import PlaygroundSession
from guardweb.roles import user_roles


class PlaygroundConsumer(AsyncWebsocketConsumer):
    """Chat with the guard: JSON in, JSON events out (tokens with their scores)."""

    async def connect(self) -> None:
        user = self.scope["user"]
        if not user.is_authenticated or not await database_sync_to_async(user_roles)(user):
            await self.close(code=4403)
            return

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
