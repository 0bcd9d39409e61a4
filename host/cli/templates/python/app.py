"""The `__NAME__` actor. Build it with `./build.sh`, then serve it with
`grove run --plugins .` and call it: `grove call __NAME__/1 hello '"Ayla"'`.

componentize-py turns each exported WIT interface into a class to subclass,
named after the interface in CamelCase: `Lifecycle` (Grove's hooks, all
seven required) and `__CAMEL__` (this actor's functions). The host's imports
are in `wit_world.imports.host`.
"""

from wit_world import exports
from wit_world.imports import host, types

# The state table this actor keeps its rows in.
TABLE = "greetings"

# Timer ticks since activation: in memory, gone when it deactivates.
ticks = 0


class Lifecycle(exports.Lifecycle):
    def on_activate(self) -> None:
        # Every second while the actor is active; it does not keep it active.
        host.set_timer("tick", 1000, 1000, False)

    def on_deactivate(self) -> None:
        pass

    def on_timer(self, name: str) -> None:
        global ticks
        ticks += 1

    def on_reminder(self, name: str) -> None:
        pass

    def on_connect(self, session: int) -> None:
        pass

    def on_message(self, session: int, payload: bytes, reliable: bool) -> None:
        pass

    def on_disconnect(self, session: int, reason: types.DisconnectReason) -> None:
        pass


class __CAMEL__(exports.__CAMEL__):
    def hello(self, name: str) -> str:
        key = host.self_ref().key
        # Rows survive deactivation and restarts; a state error raises, which
        # traps the turn, and the caller gets the error.
        raw = host.state_get(TABLE, key, None)
        greeted = (int(raw) if raw else 0) + 1
        host.state_put(TABLE, key, None, str(greeted).encode())
        return f"Hello, {name}! {greeted} greetings from __NAME__/{key}."

    def ticks(self) -> int:
        return ticks
