"""The playground: the chat page, its websocket, and the session that streams a
guarded (and unguarded) reply with live per-token scores."""
