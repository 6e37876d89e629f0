"""`log`: writes message bodies to the mixer's log, for debugging a scenario while it runs."""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar, Mapping

from fluxmix.gears.base import Gear, Port
from fluxmix.gears.jsonlines import json_default
from fluxmix.message import Message

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class Log(Gear):
    """Logs each body as compact JSON on the gear's logger (so `--log-format json` carries it too)."""

    type = "log"
    description = "Write each message body to the mixer's log."
    inputs = (Port("in", "messages to log", required=True),)
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "level": {
                "enum": list(LEVELS),
                "default": "info",
                "description": "Log level of the lines: debug, info, warning or error.",
            },
            "prefix": {
                "type": "string",
                "default": "",
                "description": "Text put before each body; default: the gear name and a colon.",
            },
            "envelope": {
                "type": "boolean",
                "default": False,
                "description": "Log the message id and origin along with the body.",
            },
        },
    }

    def __init__(self, name: str, config: Mapping[str, Any], ctx: Any) -> None:
        super().__init__(name, config, ctx)
        self.level = LEVELS[self.config.get("level", "info")]
        self.prefix: str = self.config.get("prefix", f"{name}:")
        self.envelope: bool = bool(self.config.get("envelope", False))

    def line(self, message: Message) -> str:
        body = json.dumps(message.body, ensure_ascii=False, separators=(",", ":"), default=json_default)
        text = f"{message.id} {message.origin} {body}" if self.envelope else body
        return f"{self.prefix} {text}" if self.prefix else text

    async def handle(self, port: str, message: Message) -> None:
        if self.ctx.log.isEnabledFor(self.level):
            self.ctx.log.log(self.level, "%s", self.line(message))
