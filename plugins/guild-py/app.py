"""The `guild` actor, written in Python and built with componentize-py.

Players join a guild (the Rust `player` actor calls `add-member` here), and
the guild calls its members back through the player proxy (`refresh` asks
each member for its stats, `rally` casts a spell on each). Both directions
are typed by WIT: no bytes are encoded by hand.
"""

import json

from componentize_py_types import Err, Ok

from wit_world import exports
from wit_world.exports import guild as g
from wit_world.imports import host, player as p, types

TABLE = "guild"
MAX_MEMBERS = 50


def _key() -> str:
    return host.self_ref().key


def _load() -> list[dict]:
    # A state error raises, which traps the turn: the caller gets an error
    # and nothing half-done is stored.
    raw = host.state_get(TABLE, _key(), None)
    return json.loads(raw) if raw else []


def _save(members: list[dict]) -> None:
    host.state_put(TABLE, _key(), None, json.dumps(members).encode())


def _to_member(d: dict) -> g.Member:
    return g.Member(
        player=d["player"],
        name=d["name"],
        class_=g.Class[d["class"]],
        level=d["level"],
        title=d["title"],
    )


def _roster(members: list[dict]) -> g.Roster:
    return g.Roster(guild=_key(), members=[_to_member(m) for m in members])


class Lifecycle(exports.Lifecycle):
    def on_activate(self) -> None:
        pass

    def on_deactivate(self) -> None:
        pass

    def on_timer(self, name: str) -> None:
        pass

    def on_reminder(self, name: str) -> None:
        pass

    def on_connect(self, session: int) -> None:
        pass

    def on_message(self, session: int, payload: bytes, reliable: bool) -> None:
        pass

    def on_disconnect(self, session: int, reason: types.DisconnectReason) -> None:
        pass


class Guild(exports.Guild):
    def add_member(self, member: g.Member) -> g.Roster:
        members = _load()
        if any(m["player"] == member.player for m in members):
            raise Err(g.GuildError_Duplicate(member.player))
        if len(members) >= MAX_MEMBERS:
            raise Err(g.GuildError_Full(MAX_MEMBERS))
        members.append(
            {
                "player": member.player,
                "name": member.name,
                "class": member.class_.name,
                "level": member.level,
                "title": member.title,
            }
        )
        _save(members)
        host.log(types.LogLevel.INFO, f"{member.name} joined guild {_key()}")
        return _roster(members)

    def refresh(self) -> g.Roster:
        members = _load()
        for m in members:
            try:
                answer = p.Player(m["player"]).info()
            except Err as e:
                raise Err(g.GuildError_MemberUnreachable(f"{m['player']}: {e.value}"))
            if isinstance(answer, Ok):
                stats = answer.value
                m["name"] = stats.name
                m["class"] = stats.class_.name
                m["level"] = stats.level
                m["title"] = stats.title
        _save(members)
        return _roster(members)

    def rally(self, power: int) -> list:
        spell = p.Hit_Spell(p.Spell(name="rally", power=power))
        lines = []
        for m in _load():
            try:
                answer = p.Player(m["player"]).take_hit(spell)
            except Err as e:
                lines.append(Err(f"{m['player']}: call failed: {e.value}"))
                continue
            if isinstance(answer, Ok):
                lines.append(Ok(f"{answer.value.name}: {answer.value.hp} hp"))
            else:
                lines.append(Err(f"{m['player']}: {answer.value}"))
        return lines
