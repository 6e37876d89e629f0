"""`set-global`: write the scenario's global state from messages (key and value from expressions).

A counter, a last-seen value or a block list learnt from traffic becomes visible to every gear
reading `globals.get(...)` on its next message, with no reload. The write is checked against the
scenario's `globals:` schema like any operator's write; a refused write fails that message (it is
retried, then dead-lettered to `error`), and the message goes on to `out` only once written.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Mapping

from fluxmix.gears.base import ERROR_PORT, Gear, Port
from fluxmix.gears.expressions import ExpressionEvalError, compile_expression, expression_problem
from fluxmix.gears.transform import EXPRESSION_HELP, _evaluate
from fluxmix.message import Message


class SetGlobal(Gear):
    """Evaluates `key` and `value` on each message and writes the global; passes the message on."""

    type = "set-global"
    description = "Write a global state value from each message (key and value are expressions); pass the message to `out`."
    inputs = (Port("in", "messages whose key/value to write", required=True),)
    outputs = (Port("out", "the messages, once written"), Port(ERROR_PORT, "messages whose write failed"))
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["key", "value"],
        "properties": {
            "key": {"type": "string", "minLength": 1,
                    "description": "Expression giving the global key (a string), e.g. '\"threshold\"' or 'f\"seen-{merchant}\"'. " + EXPRESSION_HELP},
            "value": {"type": "string", "minLength": 1,
                      "description": "Expression giving the JSON value to store, e.g. 'amount' or 'globals.get(\"count\", 0) + 1'."},
        },
    }

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = []
        for field in ("key", "value"):
            reason = expression_problem(config.get(field))
            if reason:
                problems.append((field, reason))
        return problems

    def __init__(self, name: str, config: Mapping[str, Any], ctx: Any) -> None:
        super().__init__(name, config, ctx)
        self.key = compile_expression(self.config["key"])
        self.value = compile_expression(self.config["value"])

    async def handle(self, port: str, message: Message) -> None:
        key = _evaluate("key", self.key, message.body)
        if not isinstance(key, str):
            raise ExpressionEvalError(f"key: {self.key.source!r} gave {type(key).__name__}, not a string")
        value = _evaluate("value", self.value, message.body)
        await asyncio.to_thread(self.ctx.globals.set, key, value, who=f"gear:{self.name}")
        await self.ctx.emit("out", message.body, headers=message.headers)
