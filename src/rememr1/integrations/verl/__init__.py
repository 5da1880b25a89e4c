"""Training ReMemR1 on an unmodified verl 0.9 (the V1 trainer), one training row per agent step.

    pip install 'rememr1[verl]'
    rememr1 train --engine verl --config hotpotqa-qwen2.5-3b --dry-run   # the verl command
    rememr1 train --engine verl --config hotpotqa-qwen2.5-3b             # runs it

The modules, one concern each (docs/scale-out.md explains the whole):

* `options`    -- the `rememr1:` section of verl's config (agent, rewards, alpha, ...);
* `backend`    -- verl's LLM server client as a rememr1 backend;
* `agent_loop` -- the agent loop "rememr1": one `AgentLoopOutput` per agent step;
* `trainer`    -- the V1 trainer "rememr1": the ReMemR1 advantage, rememr1's update count;
* `plugin`     -- what the `verl.plugins` entry point imports (registers both);
* `launcher`   -- a rememr1 training config as `python -m verl.trainer.main_ppo` overrides.

Importing this package imports no verl (the launcher runs where verl is not installed);
`agent_loop`, `trainer` and `plugin` need it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def agent_loop_config_path() -> Path:
    """The packaged agent-loop list for `actor_rollout_ref.rollout.agent.agent_loop_config_path`."""
    return Path(str(resources.files(__name__) / "agent_loops.yaml"))


__all__ = ["agent_loop_config_path"]
