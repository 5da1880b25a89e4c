"""The memory agent: methods, one state transition, episodes, the engine, the Agent.

    from rememr1.agent import Agent, AgentConfig, transition
    agent = Agent(method="rememr1", chunk_size=5000)
    agent.answer(document, question).answer

Modules: `methods` (the method table), `config` (AgentConfig), `episode` (state,
`transition`, Episode), `engine` (every episode at its own pace), `core` (Agent).
"""

from .config import AgentConfig
from .core import Agent
from .engine import StepCallback, drive, run_sync
from .episode import NO_COMPAT, AgentState, Episode, Transition, recalled_text, request_seed, transition
from .methods import METHODS, Method, get_method

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentState",
    "Episode",
    "METHODS",
    "Method",
    "NO_COMPAT",
    "StepCallback",
    "Transition",
    "drive",
    "get_method",
    "recalled_text",
    "request_seed",
    "run_sync",
    "transition",
]
