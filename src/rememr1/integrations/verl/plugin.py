"""What verl's `verl.plugins` entry point imports: registers the ReMemR1 agent loop and trainer.

`import verl` imports every entry point of the group `verl.plugins` (pyproject.toml names
this module), in the driver and in each Ray worker process, and swallows any error it
raises; `tests/integrations` checks in a fresh interpreter that both names are registered
after a bare `import verl`. Importing this module registers

* the agent loop "rememr1" (`agent_loop.ReMemR1AgentLoop`, verl's `register`), and
* the trainer "rememr1" (`trainer.ReMemR1Trainer`, verl's `register_trainer`).

Without the entry point (rememr1 not installed where verl runs), `VERL_USE_EXTERNAL_MODULES=
rememr1.integrations.verl.plugin` does the same, and `agent_loops.yaml` (see
`agent_loop_config_path()`) registers the loop through verl's own config.
"""

from __future__ import annotations

from .agent_loop import AGENT_NAME, ReMemR1AgentLoop
from .trainer import TRAINER_NAME, ReMemR1Trainer

__all__ = ["AGENT_NAME", "TRAINER_NAME", "ReMemR1AgentLoop", "ReMemR1Trainer"]
